"""The proxy stage of `nas search`: train the chosen shapes as short proxies, in rungs, on any number of workers.

The stage has its own Optuna study, `<study>:proxy`, beside the latency stage's: its objectives are the
proxy's held-out bits per byte (minimised) and the latency stage's speed objectives (so a proxy trial's values
mean one thing only). Its life:

1. Plan (once, by the process that ran the latency stage): choose the shapes (`nas.search.selection`) and
   enqueue one WAITING trial per shape, its ArchConfig and predicted figures in the user attrs. A shape
   already in the study is not enqueued again.
2. Work (every worker process, on one machine or many sharing an RDB storage): claim a WAITING trial
   atomically (WAITING -> RUNNING in the storage; two workers never get the same one), train its proxy
   through the rungs (`nas.proxy.train`), record each rung's held-out bits per byte as the trial's
   intermediate value at step = rung, and after each rung ask `nas.proxy.halving.decide` whether it goes on;
   a stopped run ends PRUNED with the rung and the reason, a finished one COMPLETE with its values, a
   diverged or timed-out one FAIL with the reason. While a trial runs, the worker sends heartbeats (RDB
   storages); a worker that dies leaves a trial that goes stale after the grace period, is failed, and is
   queued again as a copy (Optuna's RetryHeartbeatStaleTrialCallback). Journal and in-memory storages have no
   heartbeat in Optuna; there a trial whose worker process (on this machine) no longer exists is treated the
   same way.
3. Done when no trial is WAITING or RUNNING.

`trial.report` is refused by Optuna for multi-objective studies, so the intermediate values are written
through the storage's public `set_trial_intermediate_value`; optuna-dashboard shows them as usual.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np

from nas.core.arch import ArchConfig
from nas.core.errors import NasUserError
from nas.core.limits import MAX_COUNT, MAX_THREADS, check_int, is_finite_number, is_int
from nas.proxy import halving
from nas.proxy.corpus import Corpus, load_corpus
from nas.proxy.scaling import ProxyRule
from nas.proxy.train import ProxyDiverged, ProxyTimeout, ProxyTrainer, TrainSettings
from nas.search.settings import DEFAULT_ETA, DEFAULT_FINAL_SEEDS, DEFAULT_PROXY_SHAPES, DEFAULT_RUNG_TOKENS
from nas.study import schema
from nas.study.read import state_counts
from nas.study.storage import STORAGE_ERRORS

MAX_PARKED = 32  # runs a worker holds between rungs (in memory) while it trains others' first rungs
POLL_S = 2.0  # how often an idle worker looks for work while other workers still run trials


@dataclass(frozen=True)
class ProxyOptions:
    """Everything the proxy stage takes; the defaults are the CLI's."""

    shapes: int = DEFAULT_PROXY_SHAPES
    rung_tokens: tuple[int, ...] = DEFAULT_RUNG_TOKENS
    eta: float = DEFAULT_ETA
    repeats: int = 1  # seeds per shape; a shape's score is their mean
    final_seeds: int = DEFAULT_FINAL_SEEDS  # seeds at the last rung (at least `repeats`): their spread is the noise
    data: str | None = None  # None: the shipped corpus
    rule: ProxyRule = field(default_factory=ProxyRule)
    train: TrainSettings = field(default_factory=TrainSettings)
    threads: int | None = None  # torch threads; None: every core
    deterministic: bool = True

    def __post_init__(self) -> None:
        check_int(self.shapes, "--proxy-shapes", 1, MAX_COUNT)
        tokens = tuple(self.rung_tokens)
        if not tokens or not all(is_int(t) and t > 0 for t in tokens) or list(tokens) != sorted(set(tokens)):
            raise NasUserError(f"--proxy-tokens must be increasing positive token budgets, got {list(tokens)}")
        smallest = 2 * self.train.tokens_per_step
        if tokens[0] < smallest:
            raise NasUserError(f"--proxy-tokens {tokens[0]} is below two training steps ({smallest} tokens at batch "
                               f"{self.train.batch_size} x {self.train.seq_len})")
        if not (is_finite_number(self.eta) and self.eta > 1):
            raise NasUserError(f"--eta must be a number above 1, got {self.eta!r}")
        check_int(self.repeats, "--proxy-repeats", 1, MAX_COUNT)
        check_int(self.final_seeds, "--final-seeds", 1, MAX_COUNT)
        limit = self.train.time_limit_s
        if limit is not None and not (is_finite_number(limit) and limit > 0):
            raise NasUserError(f"--proxy-time-limit must be a positive number of seconds, got {limit!r}")
        if self.threads is not None:
            check_int(self.threads, "--proxy-threads", 1, MAX_THREADS)

    def identity(self, corpus: Corpus) -> dict[str, Any]:
        """What decides the proxy scores: resuming a proxy study with any of it changed is refused."""
        train = {k: v for k, v in self.train.to_dict().items() if k not in ("device", "time_limit_s")}
        identity = {"rule": self.rule.to_dict(), "train": train, "rung_tokens": list(self.rung_tokens),
                    "eta": self.eta, "repeats": self.repeats,
                    "final_seeds": self.final_seeds, "corpus": corpus.name, "corpus_sha256": corpus.sha256}
        return json.loads(json.dumps(identity))  # as stored: tuples become lists, so a resume compares equal


@dataclass
class ProxyOutcome:
    """What one worker did, and where the stage stands."""

    study_name: str
    trained: int = 0  # trials this worker finished (COMPLETE or PRUNED)
    failed: int = 0  # trials this worker failed (divergence, time limit, interruption)
    states: dict[str, int] = field(default_factory=dict)  # the whole proxy study, by state
    done: bool = False  # nothing WAITING or RUNNING any more
    seconds: float = 0.0
    interrupted: bool = False


def proxy_objectives(latency_objectives: Sequence[schema.Objective]) -> tuple[schema.Objective, ...]:
    """Held-out bits per byte (minimised) in place of the latency stage's quality; its other objectives kept."""
    speeds = tuple(o for o in latency_objectives if not o.is_quality)
    return (schema.Objective(schema.QUALITY_PROXY, "minimize"),) + speeds


# ------------------------------------------------------------------------------------------------ planning
def enqueue(study, records: Sequence[schema.TrialRecord], speeds: Sequence[Sequence[float]], rungs: Sequence[int],
            picks: frozenset[str] = frozenset()) -> int:
    """Queue one WAITING trial per record whose arch id the study does not hold yet; returns how many. Shapes
    whose arch id is in `picks` are marked schema.PROXY_PICK: halving never stops them."""
    have = {t.user_attrs.get(schema.ARCH_ID) for t in study.get_trials(deepcopy=False)}
    added = 0
    for record, speed in zip(records, speeds):
        if record.arch.arch_id in have:
            continue  # trained (or queued) at this budget already: not again
        attrs = {**record.to_user_attrs(), schema.PROXY_SPEED: [float(v) for v in speed],
                 schema.PROXY_RUNGS: list(rungs)}
        if record.arch.arch_id in picks:
            attrs[schema.PROXY_PICK] = True
        study.enqueue_trial(params={}, user_attrs=attrs, skip_if_exists=False)
        have.add(record.arch.arch_id)
        added += 1
    return added


# ------------------------------------------------------------------------------------------------ working
class _HeartbeatThread:
    """Sends a RUNNING trial's heartbeat every interval until stopped (RDB storages only)."""

    def __init__(self, storage, trial_id: int):
        from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

        self.enabled = isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage)
        self.storage, self.trial_id = storage, trial_id
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True) if self.enabled else None

    def _run(self) -> None:
        interval = self.storage.get_heartbeat_interval() or 60
        while not self.stop.is_set():
            try:
                self.storage.record_heartbeat(self.trial_id)
            except (*STORAGE_ERRORS, NasUserError):  # the database is gone (for longer than the storage retries)
                pass
            self.stop.wait(interval)

    def __enter__(self):
        if self.thread is not None:
            self.storage.record_heartbeat(self.trial_id)
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=5)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TrialQueue:
    """The proxy study as a queue shared by every worker: claim a WAITING trial atomically, and fail and requeue
    the trials of workers that are gone."""

    def __init__(self, storage, worker: str):
        self.storage, self.worker = storage, worker

    def recover_stale(self, study) -> None:
        """Fail and requeue trials whose worker is gone: by heartbeat on RDB storages, else by process id
        (journal and in-memory storages serve processes on this machine only)."""
        import optuna
        from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
        from optuna.trial import TrialState

        if isinstance(self.storage, BaseHeartbeat) and is_heartbeat_enabled(self.storage):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            return
        host = socket.gethostname()
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = str(trial.user_attrs.get(schema.PROXY_WORKER, ""))
            owner_host, _, pid = owner.rpartition(":")
            if owner_host == host and pid.isdigit() and not _pid_alive(int(pid)):
                trial_id = self._trial_id(study, trial.number)
                if self.storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                    _requeue(study, self.storage.get_trial(trial_id))

    def _trial_id(self, study, number: int) -> int:
        study_id = self.storage.get_study_id_from_name(study.study_name)
        return self.storage.get_trial_id_from_study_id_trial_number(study_id, number)

    def claim(self, study):
        """The next WAITING trial, now RUNNING for this worker, or None when there is none."""
        import optuna
        from optuna.trial import TrialState

        for trial in sorted(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)), key=lambda t: t.number):
            trial_id = self._trial_id(study, trial.number)
            try:
                claimed = self.storage.set_trial_state_values(trial_id, state=TrialState.RUNNING)  # atomic
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker claimed and finished it since the list was read
            if claimed:
                # At once: Optuna never counts a RUNNING trial without any heartbeat as stale, so a worker
                # killed before its first beat would leave the trial RUNNING for good.
                if _HeartbeatThread(self.storage, trial_id).enabled:
                    self.storage.record_heartbeat(trial_id)
                self.storage.set_trial_user_attr(trial_id, schema.PROXY_WORKER, self.worker)
                return self.storage.get_trial(trial_id), trial_id
        return None


class ProxyWorker(TrialQueue):
    """One process's share of the proxy stage (see the module docstring)."""

    def __init__(self, storage, study_name: str, options: ProxyOptions, speed_directions: Sequence[str],
                 log: Callable[[str], None] | None = None, progress: bool = True):
        super().__init__(storage, f"{socket.gethostname()}:{os.getpid()}")
        self.study_name, self.options = study_name, options
        self.speed_directions = list(speed_directions)
        self.log = log or (lambda line: print(line, file=sys.stderr))
        self.progress = progress
        self.corpus: Corpus | None = None
        self.bar = None  # the progress bar while run() runs

    def _study(self):
        import optuna

        return optuna.load_study(study_name=self.study_name, storage=self.storage)

    # ----------------------------------------------------------------------------------------- claiming
    # ----------------------------------------------------------------------------------------- the loop
    def run(self) -> ProxyOutcome:
        """Claim and train trials until none is WAITING or RUNNING (other workers' included).

        Rungs go breadth first within a worker: after a rung, a run whose peers may still report that rung
        (trials still WAITING, or this worker's parked runs at a lower rung) is parked, in memory, and the
        worker trains the next shape's rung instead; parked runs are decided (`halving.decide`) once no trial
        waits, lowest rung first, against every peer that reported the rung by then. With one worker this is
        synchronous successive halving (each decision sees the whole rung); with several, each worker's
        decisions see at least its own share of the rung and whatever the others reported (asynchronous across
        workers, as MO-ASHA)."""
        from optuna.trial import TrialState

        start = time.perf_counter()
        outcome = ProxyOutcome(self.study_name)
        self._configure_torch()
        study = self._study()
        bar = self.bar = self._bar(study)
        parked: list[_Run] = []
        current: _Run | None = None
        try:
            while True:
                self.recover_stale(study)
                claimed = self.claim(study) if len(parked) < MAX_PARKED else None
                decide_first = claimed is None and bool(parked)
                if claimed is not None:
                    current = self._open(*claimed)
                elif parked:
                    parked.sort(key=lambda r: (len(r.history), r.frozen.number))
                    current = parked.pop(0)
                else:
                    states = {t.state for t in study.get_trials(deepcopy=False)}
                    if TrialState.WAITING not in states and TrialState.RUNNING not in states:
                        outcome.done = True
                        break
                    time.sleep(POLL_S)  # others are still training; their trials may still come back
                    continue
                result = self._advance(study, current, parked, decide_first)
                if result is not None:
                    current = _finished(outcome, bar, current, finished=result)
                else:
                    parked.append(current)
                    current = None
        except KeyboardInterrupt:
            outcome.interrupted = True
            for run in ([current] if current is not None else []) + parked:
                self._interrupted(study, run)
        finally:
            for run in parked:
                run.heartbeat.__exit__(None, None, None)
            if bar is not None:
                bar.close()
        outcome.states = state_counts(study.get_trials(deepcopy=False))
        outcome.seconds = time.perf_counter() - start
        return outcome

    def _bar(self, study):
        """Counts rung trainings (shapes x rungs, less what halving stops): rungs go breadth first, so counting
        finished shapes would stand still through the whole first rung."""
        if not self.progress:
            return None
        from optuna.trial import TrialState
        from tqdm import tqdm

        todo = sum(len(t.user_attrs.get(schema.PROXY_RUNGS) or self.options.rung_tokens)
                   for t in study.get_trials(deepcopy=False) if t.state in (TrialState.WAITING, TrialState.RUNNING))
        return tqdm(total=todo, desc="proxy training", unit="rung", file=sys.stderr, dynamic_ncols=True)

    def _configure_torch(self) -> None:
        import torch

        torch.set_num_threads(self.options.threads or os.cpu_count() or 1)
        if self.options.deterministic:
            torch.use_deterministic_algorithms(True)

    def _corpus(self) -> Corpus:
        if self.corpus is None:
            self.corpus = load_corpus(self.options.data)
        return self.corpus

    def _peers(self, study, rung: int, exclude: int) -> tuple[list[float], list[float]]:
        """Losses and speeds of the other trials that finished `rung` (any state)."""
        losses, speeds = [], []
        for t in study.get_trials(deepcopy=False):
            if t.number == exclude or rung not in t.intermediate_values:
                continue
            value = t.intermediate_values[rung]
            speed = t.user_attrs.get(schema.PROXY_SPEED)
            if speed and math.isfinite(value):
                losses.append(float(value))
                speeds.append(self._speed(speed))
        return losses, speeds

    def _speed(self, speeds: Sequence[float]) -> float:
        """The speed halving compares: the first speed objective, oriented so higher is better."""
        return float(speeds[0]) if self.speed_directions[0] == "maximize" else -float(speeds[0])

    def _open(self, frozen, trial_id: int) -> "_Run":
        """A claimed trial, ready to train: its proxies (one per repeat) built, its heartbeat running."""
        heartbeat = _HeartbeatThread(self.storage, trial_id).__enter__()
        run = _Run(frozen, trial_id, ArchConfig.from_dict(frozen.user_attrs[schema.ARCH]),
                   list(frozen.user_attrs[schema.PROXY_SPEED]),
                   list(frozen.user_attrs.get(schema.PROXY_RUNGS) or self.options.rung_tokens), heartbeat)
        return run

    def _trainer(self, run: "_Run", seed_offset: int) -> ProxyTrainer:
        settings = TrainSettings(**{**self.options.train.to_dict(), "seed": self.options.train.seed + seed_offset})
        return ProxyTrainer(run.arch, self._corpus(), self.options.rule, settings)

    def _set(self, run: "_Run", key: str, value) -> None:
        self.storage.set_trial_user_attr(run.trial_id, key, value)

    def _advance(self, study, run: "_Run", parked: Sequence["_Run"], decide_first: bool = False) -> int | None:
        """Train `run`'s rungs until it ends (1: COMPLETE or PRUNED, 0: FAIL or given away) or is to be parked
        (None: peers may still report the rung it just finished). `decide_first`: a parked run, whose latest
        rung is decided before it trains on."""
        import optuna

        try:
            if decide_first and not self._decide(study, run):
                return 1
            while True:
                self._train_rung(run)
                rung = len(run.history) - 1
                if rung == len(run.rungs) - 1:
                    self._tell(study, run, values=[run.history[-1]["val_bpb"], *[float(v) for v in run.speeds]])
                    return 1
                if self._peers_pending(study, rung, parked):
                    return None
                if not self._decide(study, run):
                    return 1
        except (optuna.exceptions.UpdateFinishedTrialError, _GivenAway):
            shape = run.frozen.user_attrs.get(schema.SHAPE)
            self.log(f"trial {run.frozen.number} ({shape}) was failed and queued again "
                     "by another worker while this one trained it (its heartbeats were missed); leaving it to the "
                     "retry")
            return 0
        except (ProxyDiverged, ProxyTimeout) as exc:
            return self._fail(study, run, f"{type(exc).__name__}: {exc}")
        except (MemoryError, RuntimeError) as exc:
            reason = _out_of_memory(exc)
            if reason is None:
                raise
            return self._fail(study, run, reason)

    def _peers_pending(self, study, rung: int, parked: Sequence["_Run"]) -> bool:
        """Whether more runs may still report `rung` to this worker's decisions: trials WAITING in the study, or
        this worker's parked runs below that rung. (Other workers' RUNNING trials are not waited for.)"""
        from optuna.trial import TrialState

        if len(parked) >= MAX_PARKED:
            return False
        if any(len(r.history) - 1 < rung for r in parked):
            return True
        return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    def _train_rung(self, run: "_Run") -> None:
        """Train the next rung of `run` and record it: every repeat's proxy (and, at the last rung, the extra
        final seeds, trained from scratch to that budget) scored, their mean the rung's bits per byte."""
        rung = len(run.history)
        last = rung == len(run.rungs) - 1
        if not run.trainers:
            run.trainers = [self._trainer(run, r) for r in range(self.options.repeats)]
            self._set(run, schema.PROXY_ARCH, run.trainers[0].proxy.to_dict())
        if last:
            run.trainers += [self._trainer(run, r) for r in range(len(run.trainers), self.options.final_seeds)]
        results = [t.train_to(run.rungs[rung], rung) for t in run.trainers]
        bpb = float(np.mean([r.val_bpb for r in results]))  # seeds average, never copy
        self.storage.set_trial_intermediate_value(run.trial_id, rung, bpb)
        if self.bar is not None:
            self.bar.update(1)
        run.history.append({"rung": rung, "tokens": results[0].tokens, "val_bpb": bpb,
                            "val_bpb_each": [r.val_bpb for r in results],
                            "seconds": round(sum(r.seconds for r in results), 3),
                            "curve": [[int(a), round(float(b), 5)] for a, b in results[0].curve]})
        self._set(run, schema.PROXY_HISTORY, run.history)
        self._set(run, schema.QUALITY, -bpb)
        self._set(run, schema.QUALITY_SOURCE, schema.QUALITY_PROXY)  # quality is minus the held-out bits per byte

    def _decide(self, study, run: "_Run") -> bool:
        """Halving after `run`'s latest rung: True when it goes on; otherwise it is told PRUNED (False)."""
        from optuna.trial import TrialState

        rung = len(run.history) - 1
        losses, peer_speeds = self._peers(study, rung, run.frozen.number)
        decision = halving.decide(run.history[-1]["val_bpb"], self._speed(run.speeds), losses, peer_speeds,
                                  self.options.eta)
        if not decision.keep and run.frozen.user_attrs.get(schema.PROXY_PICK):
            decision = replace(decision, keep=True, reason="a pick of the latency stage: halving never stops it "
                                                           f"(it would have: {decision.reason})")
        run.history[-1]["decision"] = asdict(decision)
        self._set(run, schema.PROXY_HISTORY, run.history)
        if decision.keep:
            return True
        self._set(run, schema.PRUNED_AT_RUNG, rung)
        self._set(run, schema.PRUNE_REASON, decision.reason)
        self._tell(study, run, state=TrialState.PRUNED)
        return False

    def _fail(self, study, run: "_Run", reason: str) -> int:
        from optuna.trial import TrialState

        self._set(run, schema.FAIL_REASON, reason)
        self._tell(study, run, state=TrialState.FAIL)
        return 0

    def _interrupted(self, study, run: "_Run") -> None:
        """Ctrl-C or SIGTERM: the run is failed with the reason and queued again for another worker."""
        import optuna

        try:
            self._fail(study, run, "interrupted: the worker was stopped (SIGINT or SIGTERM) during training; "
                                   "queued again for another worker or the next run")
            _requeue(study, self.storage.get_trial(run.trial_id))
        except (optuna.exceptions.UpdateFinishedTrialError, _GivenAway, *STORAGE_ERRORS, NasUserError):
            pass  # another worker failed and requeued it already, or the database is gone

    def _tell(self, study, run: "_Run", **kw) -> None:
        """study.tell, or _GivenAway when the trial was finished by another worker meanwhile."""
        if self.storage.get_trial(run.trial_id).state.is_finished():
            raise _GivenAway
        study.tell(run.frozen.number, skip_if_finished=True, **kw)  # finished in the moment since: Optuna warns


@dataclass
class _Run:
    """A claimed trial in a worker: its proxies between rungs, and what it reported so far."""

    frozen: Any
    trial_id: int
    arch: ArchConfig
    speeds: list
    rungs: list
    heartbeat: Any
    trainers: list = field(default_factory=list)
    history: list = field(default_factory=list)


def _finished(outcome: ProxyOutcome, bar, run: "_Run", finished: int) -> None:
    """A run ended: its heartbeat stops, the counts move on, and the bar drops the rungs it will not train."""
    run.heartbeat.__exit__(None, None, None)
    outcome.trained += finished
    outcome.failed += 1 - finished
    if bar is not None:
        bar.total -= len(run.rungs) - len(run.history)
        bar.set_postfix_str(f"{outcome.trained + outcome.failed} shapes done", refresh=True)
    return None


class _GivenAway(Exception):
    """This worker's trial was finished by another worker (failed as stale and requeued)."""


def _out_of_memory(exc: BaseException) -> str | None:
    """The FAIL reason of a proxy that ran out of memory (Python's MemoryError, torch's CPU allocator or CUDA
    out-of-memory error), or None for any other error (a bug: not hidden)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, MemoryError) or "out of memory" in text.lower() or "can't allocate memory" in text.lower():
        return f"out of memory: {type(exc).__name__}: {text[:300]}"
    return None


def _requeue(study, failed) -> None:
    """Queue a failed trial again as a WAITING copy, the way Optuna's RetryHeartbeatStaleTrialCallback does
    (it records `failed_trial` and `retry_history`), at most twice per shape."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)(study, failed)
