"""Short proxy training: a scaled proxy of a candidate trained on bytes, scored by held-out bits per byte.

`ProxyTrainer(arch, ...)` builds the proxy (`nas.proxy.scaling.proxy_arch`) as the reference model
(`nas.model`) under the rule's parametrisation, and `train_to(tokens)` trains it up to a token budget and
scores it. Budgets grow rung by rung, and the schedule is warm-up, stable, cool-down (WSD): the stable phase
continues from rung to rung, and each rung's score comes from a short branch that cools the learning rate down
linearly to zero over the last `cooldown` share of that rung's budget and evaluates, after which training
goes on from the state before the cool-down. So a rung's score is what a run of exactly that budget with its
own cool-down would give, and no run is compared half-way through a decay.

AdamW (betas 0.9 / 0.95), global gradient-norm clipping, fp32. Deterministic on the CPU for a given seed and
thread count (`torch.use_deterministic_algorithms`; the caller sets the threads); `device="cuda"` runs the same
code on a GPU. A loss that turns NaN or infinite fails the run with `ProxyDiverged`, and so does a run whose
held-out loss after a rung is no better than before any training or than the uniform guess over bytes (it
learned nothing: a learning rate so large that the model collapses to the uniform guess, 8 bits/byte, does this
without ever producing a NaN); a run past its time limit fails with `ProxyTimeout`.
"""

from __future__ import annotations

import copy
import math
import re
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from nas.core.arch import ArchConfig
from nas.core.errors import NasUserError
from nas.core.limits import shown
from nas.model import build_model
from nas.proxy.corpus import Corpus
from nas.proxy.scaling import Parametrisation, ProxyRule, proxy_arch

LN2 = math.log(2.0)
COLLAPSE_MARGIN_BPB = 0.05  # a rung must beat both the untrained model and the uniform guess by this much
DIVERGED_LOSS = 20.0  # nats: far above the 5.5 of a uniform guess over 256 bytes, so only a blow-up gets here


class ProxyDiverged(RuntimeError):
    """The training loss became NaN, infinite or absurdly large."""


class ProxyTimeout(RuntimeError):
    """Training went past its time limit."""


@dataclass(frozen=True)
class TrainSettings:
    """One learning rate and schedule for every proxy (the parametrisation makes that fair)."""

    lr: float = 2.0 ** -9
    batch_size: int = 8
    seq_len: int = 128
    warmup_tokens: int = 4_096
    cooldown: float = 0.2  # share of each rung's budget over which the learning rate decays to zero
    weight_decay: float = 0.0
    eps: float = 1e-8
    betas: tuple[float, float] = (0.9, 0.95)
    clip: float = 1.0
    eval_windows: int = 64  # held-out windows of seq_len bytes, fixed for every proxy
    curve_every: int = 8  # training-loss points per rung in the recorded curve
    seed: int = 0
    device: str = "cpu"
    time_limit_s: float | None = None  # per candidate, all rungs together

    def __post_init__(self) -> None:
        checks = (("lr", self.lr > 0 and math.isfinite(self.lr)), ("batch_size", self.batch_size >= 1),
                  ("seq_len", self.seq_len >= 8), ("cooldown", 0.0 < self.cooldown < 1.0),
                  ("eval_windows", self.eval_windows >= 1), ("warmup_tokens", self.warmup_tokens >= 0))
        for name, ok in checks:
            if not ok:
                raise NasUserError(f"proxy training: {name}={getattr(self, name)!r} is out of range")
        check_device(self.device)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RungResult:
    """A proxy's score at one budget."""

    tokens: int  # trained on, cool-down included
    val_bpb: float  # held-out bits per byte after the cool-down
    train_bpb: float  # the last training loss (bits per byte)
    seconds: float  # wall time of this rung (stable part, cool-down and evaluation)
    curve: list[tuple[int, float]] = field(default_factory=list)  # (tokens, training bits per byte)


def check_device(device: str) -> None:
    """Refuse a --device this machine does not have, when the settings are made: before a search writes its
    study and queues its shapes, not when the first shape is trained."""
    if not isinstance(device, str) or (device not in ("cpu", "cuda") and not re.fullmatch(r"cuda:\d{1,3}", device)):
        raise NasUserError(f"--device {shown(device)} is not cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise NasUserError(f"--device {device}: no CUDA device is available to torch here")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise NasUserError(f"--device {device}: torch sees {torch.cuda.device_count()} CUDA device(s), "
                               f"numbered from 0")


class ProxyTrainer:
    """Trains one candidate's proxy through growing budgets (see the module docstring)."""

    def __init__(self, arch: ArchConfig, corpus: Corpus, rule: ProxyRule = ProxyRule(),
                 settings: TrainSettings = TrainSettings()):
        self.arch, self.corpus, self.rule, self.settings = arch, corpus, rule, settings
        self.proxy = proxy_arch(arch, rule, settings.seq_len)
        self.param = Parametrisation.of(self.proxy, rule)
        s = settings
        if s.device.startswith("cuda") and not torch.cuda.is_available():
            raise NasUserError("--device cuda: no CUDA device is available to torch here")
        torch.manual_seed(s.seed)
        self.model = build_model(self.proxy, seed=s.seed, scales=self.param.scales,
                                 hidden_std=self.param.hidden_init_std, device=s.device)
        self.optimizer = torch.optim.AdamW(self.param.param_groups(self.model, s.lr, s.weight_decay, s.eps),
                                           lr=s.lr, betas=s.betas, foreach=True)
        self.train_bytes = torch.from_numpy(corpus.train.astype(np.int64))
        self.val_windows = self._val_windows()
        self.stable_tokens = 0  # tokens of the stable phase so far (excludes cool-down branches)
        self.stable_step = 0
        self.train_seconds = 0.0  # time spent in train_to so far (a run parked between rungs does not count)
        self._rung_started = time.perf_counter()
        self._generator = torch.Generator().manual_seed(10_000 + s.seed)
        self.untrained_bpb: float | None = None  # held-out score before the first step (the collapse check)

    # ----------------------------------------------------------------------------------------- data
    def _val_windows(self) -> torch.Tensor:
        s, val = self.settings, self.corpus.val
        span = len(val) - s.seq_len - 1
        step = span // s.eval_windows if span > 0 else 0
        if step < s.seq_len + 1:
            raise NasUserError(f"the corpus's held-out split ({len(val):,} bytes) is too small for "
                               f"{s.eval_windows} windows of {s.seq_len} bytes; use more text")
        starts = np.arange(s.eval_windows) * step
        windows = val[starts[:, None] + np.arange(s.seq_len + 1)[None, :]]
        return torch.from_numpy(windows.astype(np.int64)).to(s.device)

    def _batch(self, generator: torch.Generator) -> torch.Tensor:
        s = self.settings
        starts = torch.randint(0, len(self.train_bytes) - s.seq_len - 1, (s.batch_size,), generator=generator)
        return self.train_bytes[starts[:, None] + torch.arange(s.seq_len + 1)[None, :]].to(s.device)

    # ----------------------------------------------------------------------------------------- training
    def _step(self, lr_factor: float, generator: torch.Generator) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_factor
        batch = self._batch(generator)
        logits, _ = self.model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.clip)
        self.optimizer.step()
        value = float(loss.detach())
        if not math.isfinite(value) or value > DIVERGED_LOSS:
            raise ProxyDiverged(f"training loss became {value:.4g} nats at {self.stable_tokens:,} tokens")
        spent = self.train_seconds + time.perf_counter() - self._rung_started
        if self.settings.time_limit_s and spent > self.settings.time_limit_s:
            raise ProxyTimeout(f"proxy training passed its time limit of {self.settings.time_limit_s:g} s")
        return value

    def _warmup_factor(self) -> float:
        warmup_steps = self.settings.warmup_tokens // self.settings.tokens_per_step
        return min(1.0, (self.stable_step + 1) / warmup_steps) if warmup_steps else 1.0

    @torch.no_grad()
    def evaluate(self, batch_size: int = 32) -> float:
        """Mean next-byte cross-entropy over the fixed held-out windows, in bits per byte."""
        self.model.eval()
        total, count = 0.0, 0
        for i in range(0, self.val_windows.shape[0], batch_size):
            w = self.val_windows[i:i + batch_size]
            logits, _ = self.model(w[:, :-1])
            total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1),
                                           reduction="sum"))
            count += w[:, 1:].numel()
        self.model.train()
        return total / count / LN2

    def train_to(self, tokens: int, rung: int = 0) -> RungResult:
        """Continue the stable phase, then cool down and score at a budget of `tokens` (see the docstring)."""
        start = self._rung_started = time.perf_counter()
        try:
            return self._train_to(tokens, rung, start)
        finally:
            self.train_seconds += time.perf_counter() - start

    def _train_to(self, tokens: int, rung: int, start: float) -> RungResult:
        s = self.settings
        total_steps = max(2, tokens // s.tokens_per_step)
        cooldown_steps = max(1, int(round(s.cooldown * total_steps)))
        stable_target = total_steps - cooldown_steps
        if stable_target < self.stable_step:
            raise ValueError(f"rung budget {tokens:,} tokens is below what was already trained")
        curve, loss = [], float("nan")
        record = max(1, total_steps // s.curve_every)
        if self.untrained_bpb is None:
            self.untrained_bpb = self.evaluate()
        while self.stable_step < stable_target:
            loss = self._step(self._warmup_factor(), self._generator)
            self.stable_step += 1
            self.stable_tokens += s.tokens_per_step
            if self.stable_step % record == 0:
                curve.append((self.stable_step * s.tokens_per_step, loss / LN2))
        saved = (copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.optimizer.state_dict()))
        branch = torch.Generator().manual_seed(20_000 + 1_000 * s.seed + rung)
        for i in range(cooldown_steps):
            loss = self._step((cooldown_steps - i) / (cooldown_steps + 1), branch)
            step = stable_target + i + 1
            if step % record == 0:
                curve.append((step * s.tokens_per_step, loss / LN2))
        val_bpb = self.evaluate()
        uniform = math.log2(self.proxy.vocab_size)  # bits per token of the uniform guess
        if not math.isfinite(val_bpb) or val_bpb >= min(self.untrained_bpb, uniform) - COLLAPSE_MARGIN_BPB:
            raise ProxyDiverged(f"held-out loss {val_bpb:.3f} bits/byte after {total_steps * s.tokens_per_step:,} "
                                f"tokens is no better than before training ({self.untrained_bpb:.3f}) or the "
                                f"uniform guess ({uniform:.1f}): the run learned nothing (collapsed)")
        self.model.load_state_dict(saved[0])
        self.optimizer.load_state_dict(saved[1])
        return RungResult(tokens=total_steps * s.tokens_per_step, val_bpb=val_bpb, train_bpb=loss / LN2,
                          seconds=time.perf_counter() - start, curve=curve)
