"""Profiling: measure ArchConfigs with ONNX Runtime and keep every measurement as one JSONL row.

Row schema (version 1), one JSON object per line; `nas calibrate` and the on-device runner rely on it:

    schema            1
    target            target name ("host-cpu", "pixel8", ...)
    arch, arch_id     ArchConfig.to_dict() and its id (checked against each other on read)
    phase             "prefill" (time to first token for a prompt of prompt_len tokens) or
                      "decode" (one token with context_len tokens already in the KV cache)
    prompt_len        int for prefill, null for decode
    context_len       int for decode, null for prefill
    precision         "fp32" | "fp16" | "int8" | "int4" (of the weights in the graph)
    provider          the ORT execution provider asked for (exact ORT name)
    providers_used    session.get_providers(): what the session really held, fallback included
    provider_options  the options passed to that provider (strings)
    threads           intra-op threads
    protocol          Protocol.to_dict(): warmup, runs, sessions, ... (rows written before `sessions`
                      existed lack it: they were measured in one session)
    session_options   the ORT SessionOptions that were set
    latency_ms        {"median", "mean", "min", "max", "p10", "p90", "iqr", "cv", "session_medians"}:
                      "median" is the median over sessions of each session's median; the spread keys are
                      over all timed runs of all sessions (ms; cv is a ratio); "session_medians" lists each
                      session's median (ms; absent in rows written before it existed, which are
                      single-session rows). null when status is "failed"
    samples_ms        every timed run, in ms, in order, session after session ([] when failed)
    env               measure.environment() of the machine that measured, plus `graph_builder` (the version
                      of the graphs timed, nas.latency.provenance) and `ort_genai_version` (when
                      onnxruntime-genai is installed). Rows of another graph builder or runtime are not
                      reused: `nas profile` measures them again, `nas calibrate` skips them
    status            "ok" | "failed"
    error             null, or "<stage>: <ExceptionType>: <message>" with stage build | session | run | memory
    build_s           seconds to build the graph and create its first session (null if that never finished)
    timestamp         ISO-8601, UTC

One graph is built per config (the deployed graph serves both phases); then `protocol.sessions` times a
fresh session is created from it and every (phase, length) is timed in it, so the sessions of one length are
spread out in time (see measure.py for
why several sessions). Decode graphs are fed a past KV cache of length C filled with random values of the
right shape and dtype (from `graphs.graph_feeds`): the latency of dense attention and matmuls does not
depend on the values, only on the shapes, so no prompt has to be prefilled first. Rows are appended and
flushed as soon as a graph's sessions are done, so a profiling run that is killed loses only the config in
progress; re-running skips every key that already has an "ok" row and retries keys whose rows failed.

The measurement key (KEY_FIELDS) deliberately leaves the protocol's warmup, runs and sessions out: a row
measured with another count of runs or sessions is a measurement of the same quantity (with more or less
noise), and putting them in the key would keep two rows per (config, length) that a fit would then count
twice. Each row records its protocol, and `profile_configs` counts the reused rows whose protocol differs
from the one asked for (`ProfileRows.other_protocol`), so a mix is reported, not silent; to re-measure with a
new protocol, write to a new file.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from nas.core.accounting import PHASES, PRECISIONS
from nas.core.arch import ArchConfig
from nas.core.errors import NasUserError, one_line
from nas.core.limits import MAX_THREADS, MAX_TOKENS, is_int, shown
from nas.core.paths import ensure_folder
from nas.core.userfiles import parse_json, read_user_text
from nas.latency import graphs, measure
from nas.latency.measure import DEFAULT_CONTEXT_LENS, DEFAULT_PROMPT_LENS, STAT_KEYS, Protocol
from nas.latency.provenance import GENAI_VERSION, row_provenance, stale_reason

SCHEMA = 1
STATUSES = ("ok", "failed")
KEY_FIELDS = ("arch_id", "phase", "prompt_len", "context_len", "precision", "provider", "threads")

# Creating a session holds the ONNX proto, its serialised bytes, ORT's copy of the weights and its prepacked
# matmul weights at once: about four fp32 copies of the weights at peak (a margin for the quantisers too).
_PEAK_WEIGHT_COPIES = 4


@dataclass(frozen=True)
class ProfileSettings:
    """What to measure for each config: one precision on one provider at each prompt and context length."""

    precision: str
    provider: str
    provider_options: dict = field(default_factory=dict)
    prompt_lens: tuple[int, ...] = DEFAULT_PROMPT_LENS
    context_lens: tuple[int, ...] = DEFAULT_CONTEXT_LENS
    protocol: Protocol = field(default_factory=lambda: Protocol(threads=1))
    seed: int = 0

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise NasUserError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        for name in ("prompt_lens", "context_lens"):
            values = tuple(getattr(self, name))
            bad = [v for v in values if not is_int(v) or not 0 < v <= MAX_TOKENS]
            if bad:
                raise NasUserError(f"{name.replace('_', '-')} must be integers from 1 to {MAX_TOKENS:,}, got "
                                   f"{shown(bad[0])}")
            object.__setattr__(self, name, tuple(sorted(set(values))))
        if not self.prompt_lens and not self.context_lens:
            raise NasUserError("nothing to measure: give at least one prompt length or context length")

    def lengths(self, phase: str) -> tuple[int, ...]:
        return self.prompt_lens if phase == "prefill" else self.context_lens


def measurement_key(row_or_parts: Mapping[str, Any] | Iterable[Any]) -> tuple:
    """(arch_id, phase, prompt_len, context_len, precision, provider, threads) of a row, or of those parts."""
    if isinstance(row_or_parts, Mapping):
        return tuple(row_or_parts.get(name) for name in KEY_FIELDS)
    parts = tuple(row_or_parts)
    if len(parts) != len(KEY_FIELDS):
        raise ValueError(f"a measurement key has {len(KEY_FIELDS)} parts ({', '.join(KEY_FIELDS)}), got {parts!r}")
    return parts


def _key_for(arch_id: str, phase: str, length: int, settings: ProfileSettings) -> tuple:
    return measurement_key((arch_id, phase, length if phase == "prefill" else None,
                            length if phase == "decode" else None, settings.precision, settings.provider,
                            settings.protocol.threads))


def fits_context(arch, phase: str, length: int) -> bool:
    """A prompt of P tokens needs P <= max_seq_len; a decode step after C cached tokens needs C + 1."""
    return length <= arch.max_seq_len if phase == "prefill" else length + 1 <= arch.max_seq_len


class ProfileRows(list):
    """The rows `profile_configs` returns (one per key: the ok row, else the newest failed one),
    with counts of what this call did: `measured` (new ok rows), `failed` (new failed rows),
    `skipped` (keys already measured), `out_of_range` (lengths beyond a config's max_seq_len),
    `other_protocol` (skipped keys whose row was measured with another protocol, e.g. fewer sessions),
    `stale` (rows already in the file from another graph builder or runtime, not reused; `stale_reasons`)."""

    measured: int = 0
    failed: int = 0
    skipped: int = 0
    out_of_range: int = 0
    other_protocol: int = 0  # of the skipped: rows measured with a protocol other than the one asked for
    stale: int = 0  # rows in the file of another graph builder or runtime: not reused (measured again)

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.stale_reasons: dict[str, int] = {}  # why rows were not reused -> how many

    @property
    def new_failures(self) -> list[dict]:
        return getattr(self, "_new_failures", [])


def _error_text(stage: str, exc: BaseException) -> str:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{stage}: {type(exc).__name__}: {message[:1000]}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def make_row(*, target: str, arch, phase: str, length: int, settings: ProfileSettings, env: Mapping[str, Any],
             providers_used: list[str], stats: Mapping[str, Any] | None = None, error: str | None = None,
             build_s: float | None = None) -> dict[str, Any]:
    """One measurement row in the schema above (status follows from `error`)."""
    protocol = settings.protocol
    latency = None
    if stats is not None:
        latency = {k: float(stats[k]) for k in STAT_KEYS}
        if "session_medians" in stats:
            medians = [float(v) for v in stats["session_medians"]]
        elif protocol.sessions == 1:
            medians = [latency["median"]]
        else:
            raise ValueError(f"stats of a {protocol.sessions}-session protocol need 'session_medians'")
        latency["session_medians"] = medians
    return {
        "schema": SCHEMA,
        "target": target,
        "arch": arch.to_dict(),
        "arch_id": arch.arch_id,
        "phase": phase,
        "prompt_len": length if phase == "prefill" else None,
        "context_len": length if phase == "decode" else None,
        "precision": settings.precision,
        "provider": settings.provider,
        "providers_used": list(providers_used),
        "provider_options": {str(k): str(v) for k, v in settings.provider_options.items()},
        "threads": protocol.threads,
        "protocol": protocol.to_dict(),
        "session_options": protocol.session_options_dict(),
        "latency_ms": latency,
        "samples_ms": [] if stats is None else [float(v) for v in stats["samples"]],
        "env": dict(env),
        "status": "failed" if error is not None else "ok",
        "error": error,
        "build_s": None if build_s is None else round(float(build_s), 4),
        "timestamp": _now(),
    }


def match_feed_dtypes(session_inputs, feeds: Mapping[str, Any]) -> dict[str, Any]:
    """Cast feeds to the element types the graph declares (e.g. an fp16 graph's KV cache)."""
    import numpy as np

    by_type = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
               "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}
    out = dict(feeds)
    for inp in session_inputs:
        want = by_type.get(inp.type)
        if inp.name in out and want is not None and out[inp.name].dtype != want:
            out[inp.name] = out[inp.name].astype(want)
    return out


def _available_memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _memory_shortfall(arch, settings: ProfileSettings) -> str | None:
    """A reason not to try a config that would exhaust this machine's memory (and be killed, not fail).
    The past KV caches of every context length are held at once (they are fed to every session)."""
    available = _available_memory_bytes()
    if available is None:
        return None
    longest = max(settings.context_lens + settings.prompt_lens)
    kv_feeds = sum(arch.kv_cache_bytes(c, 4) for c in settings.context_lens)
    need = (_PEAK_WEIGHT_COPIES * arch.weight_bytes("fp32") + kv_feeds + arch.kv_cache_bytes(longest, 4))
    if need > available:
        return (f"memory: needs about {need / 2**30:.1f} GiB to build and run, "
                f"{available / 2**30:.1f} GiB available")
    return None


# The first bytes of every row as `nas profile` and the runners write it (json.dumps, "schema" first): how an
# unfinished last line is told to be a row cut off by a kill, and not someone else's text.
ROW_PREFIX = f'{{"schema": {SCHEMA}, '


def _existing_rows(out_path: Path, target: str) -> tuple[list[dict], bool]:
    """(rows already in `out_path` for `target`, whether its last row lacks its newline), the file checked
    before anything is written to it.

    nas appends only to a measurements file: every complete line a valid row. An unfinished last line that
    begins as nas writes a row (ROW_PREFIX) is a write cut off by a kill: it is dropped. Anything else (notes,
    a binary file, another tool's JSONL, a folder, a device) is refused in one line, the file untouched."""
    if not out_path.exists():
        return [], False
    text = _measurement_text(out_path, "measurements file (--out)")
    complete, _, tail = text.rpartition("\n") if "\n" in text else ("", "", text)
    try:
        rows = _parse_rows(complete, out_path, _only_target=target, require_ok=False)
        whole = _tail_row(tail, out_path, len(complete.splitlines()) + 1)
    except NasUserError as exc:
        raise NasUserError(f"--out {out_path} is not a measurements file nas can append to ({exc}); it was left "
                           "untouched: pass a new file or one `nas profile` wrote") from None
    if whole is not None:  # a whole row without its newline: the next write supplies it
        return rows + ([whole] if whole["target"] == target else []), True
    if tail:
        cut = len(text.encode("utf-8")) - len(tail.encode("utf-8"))
        print(one_line(f"warning: {out_path}: dropping an unfinished last line, a row cut off "
                       f"({len(tail.encode('utf-8'))} bytes) left by an interrupted run"), file=sys.stderr)
        try:
            with out_path.open("r+b") as fh:
                fh.truncate(cut)
        except OSError as exc:
            raise NasUserError(f"cannot write measurements to {out_path}: {exc.strerror or exc}") from None
    return rows, False


def _tail_row(tail: str, path: Path, lineno: int) -> dict | None:
    """The last line of a measurements file when it has no newline: None when empty or a row cut off (see
    ROW_PREFIX), the row when it is whole and valid; anything else is a NasUserError."""
    if not tail.strip():
        if tail:
            raise NasUserError(f"{path}:{lineno}: the last line holds only spaces")
        return None
    if tail.startswith(ROW_PREFIX):
        try:
            json.loads(tail)
        except ValueError:
            return None  # cut off: dropped by the caller
    return _parse_rows(tail, path, require_ok=False, first_line=lineno)[0]


class _RowWriter:
    """Appends measurement rows to a file, each whole or not at all: a write that fails part-way (a full disk,
    a file-size limit, the file system gone read-only) is cut back to the last whole row, and the run ends with
    one line; the rows before it stay. `newline_first`: the file's last row lacks its newline."""

    def __init__(self, path: Path, newline_first: bool):
        self.path, self.pending = path, b"\n" if newline_first else b""
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as exc:
            raise NasUserError(f"cannot write measurements to {path}: {exc.strerror or exc}") from None

    def write(self, row: dict) -> None:
        line = self.pending + (json.dumps(row, sort_keys=False) + "\n").encode("utf-8")
        start = os.lseek(self.fd, 0, os.SEEK_END)
        view = memoryview(line)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            os.ftruncate(self.fd, start)  # no torn row: the file ends with its last whole row, as before
            raise NasUserError(f"cannot write measurements to {self.path}: {exc.strerror or exc}; the rows "
                               "measured before are kept, run the same command again to go on") from None
        self.pending = b""

    def close(self) -> None:
        os.close(self.fd)


def profile_configs(target, configs, settings: ProfileSettings, out_path, progress: bool = True) -> ProfileRows:
    """Measure every config at every length of `settings` on this machine, appending rows to `out_path`.

    One graph is built per config at `settings.precision` (its lengths are symbolic and it serves both
    phases); then `settings.protocol.sessions` times a fresh session is created from it and run at each
    (phase, length) (see `_profile_config`). Keys already measured ("ok") in `out_path` are skipped, whatever
    protocol measured them (`other_protocol` counts those measured with another one). A config that fails
    to build, to load or to run gets "failed" rows naming the stage and error, and profiling goes on with the
    next. Lengths beyond a config's max_seq_len are not measured.
    Returns a `ProfileRows` list: for each key of these configs the ok row (old or new), else the newest
    failed row, with counts of what was measured, failed and skipped now.
    """
    out_path = Path(out_path)
    ensure_folder(out_path.parent, "the folder for measurements")
    target_name = target if isinstance(target, str) else target.name
    env = {**measure.environment()}
    # Which graph structure was timed and on which runtime: rows of another graph builder or onnxruntime
    # (-genai) describe other graphs or kernels, so they are measured again rather than reused.
    env.update(row_provenance(env["ort_version"]))
    result = ProfileRows()
    existing, newline_first = _existing_rows(out_path, target_name)
    latest = _reusable(existing, env, result)
    result._new_failures = []
    wanted: list[tuple] = []
    bar = _progress_bar(len(configs), f"profile {target_name}", progress)
    out = _RowWriter(out_path, newline_first)
    try:
        def append(row: dict) -> None:
            out.write(row)
            latest[measurement_key(row)] = row
            if row["status"] == "ok":
                result.measured += 1
            else:
                result.failed += 1
                result._new_failures.append(row)

        for arch in configs:
            to_measure = _to_measure(arch, settings, latest, wanted, result)
            if to_measure:
                _profile_config(arch, to_measure, settings, target_name, env, append)
            bar.update(1)
            bar.set_postfix(measured=result.measured, failed=result.failed, skipped=result.skipped, refresh=False)
    finally:
        out.close()
        bar.close()
    result.extend(latest[key] for key in wanted if key in latest)
    return result


def _reusable(existing: list[dict], env: dict, result: ProfileRows) -> dict[tuple, dict]:
    """The rows of `existing` that may be reused, by measurement key (an ok row wins over a failed one); rows of
    another graph builder or runtime are counted in `result` as stale, with their reasons."""
    latest: dict[tuple, dict] = {}
    for row in existing:
        reason = stale_reason(row, env["ort_version"], env.get(GENAI_VERSION))
        if reason is not None:
            result.stale += 1
            result.stale_reasons[reason] = result.stale_reasons.get(reason, 0) + 1
            continue
        key = measurement_key(row)
        if key not in latest or latest[key]["status"] != "ok":
            latest[key] = row
    return latest


def _to_measure(arch, settings: ProfileSettings, latest: dict, wanted: list, result: ProfileRows):
    """Phase -> the lengths of `arch` still to measure; each key goes to `wanted`, the ones already measured and
    the ones beyond its max_seq_len are counted in `result`."""
    to_measure: dict[str, list[int]] = {}
    for phase in PHASES:
        lengths = []
        for length in settings.lengths(phase):
            if not fits_context(arch, phase, length):
                result.out_of_range += 1
                continue
            key = _key_for(arch.arch_id, phase, length, settings)
            wanted.append(key)
            if latest.get(key, {}).get("status") == "ok":
                result.skipped += 1
                if not _same_protocol(latest[key].get("protocol"), settings.protocol):
                    result.other_protocol += 1
            else:
                lengths.append(length)
        if lengths:
            to_measure[phase] = lengths
    return to_measure


def _same_protocol(recorded, protocol: Protocol) -> bool:
    """Whether a row's recorded protocol is `protocol` (a missing field counts as its default)."""
    try:
        return Protocol.from_dict(recorded or {}) == protocol
    except (NasUserError, TypeError):
        return False


def _profile_config(arch, wanted, settings, target_name, env, append):
    """Measure one config at `wanted` (phase -> lengths): build its graph once (one graph serves both phases),
    then for each of `protocol.sessions` rounds create a fresh session and time every (phase, length) in it;
    each row combines all rounds (`measure.combine_sessions`). A (phase, length) that fails in any round gets a
    failed row (its other rounds are dropped: an ok row always has every session of its protocol). Rows are
    appended after the last round."""
    import tempfile

    protocol = settings.protocol
    keys = [(phase, length) for phase, lengths in wanted.items() for length in lengths]

    def fail(stage_error: str, providers_used=(), build_s=None, only=None):
        for phase, length in (keys if only is None else [only]):
            append(make_row(target=target_name, arch=arch, phase=phase, length=length, settings=settings, env=env,
                            providers_used=list(providers_used), error=stage_error, build_s=build_s))

    shortfall = _memory_shortfall(arch, settings)
    if shortfall:
        fail(shortfall)
        return
    with tempfile.TemporaryDirectory(prefix="nas_graph_") as tmp:  # only used past protobuf's 2 GiB limit
        start = time.perf_counter()
        try:
            model = graphs.build_graph(arch, precision=settings.precision, seed=settings.seed)
            source = measure.reusable_model(model, tmp)  # serialised once, for every session
        except Exception as exc:  # noqa: BLE001 -- a failed candidate is recorded, the run goes on
            fail(_error_text("build", exc))
            return
        del model
        build_s = None  # graph build + first session: what one config's measurements cost before timing
        providers_used: list[str] = []
        feeds: dict[tuple[str, int], Any] = {}
        errors: dict[tuple[str, int], str] = {}
        samples: dict[tuple[str, int], list[list[float]]] = {key: [] for key in keys}
        session = None
        for _ in range(protocol.sessions):
            session = None  # release the previous session before creating the next
            try:
                session = measure.make_session(source, settings.provider, settings.provider_options, protocol)
            except NasUserError:
                raise
            except Exception as exc:  # noqa: BLE001
                error = _error_text("session", exc)
                if build_s is None:
                    fail(error, build_s=time.perf_counter() - start)
                    return
                errors.update({key: error for key in keys if key not in errors})
                break
            if build_s is None:
                build_s = time.perf_counter() - start
                providers_used = session.get_providers()
                feeds = _feeds(arch, keys, session.get_inputs(), settings, errors)  # built once, for every session
            _time_keys(session, keys, feeds, protocol, errors, samples)
        del session, source
    feeds.clear()
    for phase, length in keys:
        if (phase, length) in errors:
            fail(errors[phase, length], providers_used, build_s, only=(phase, length))
        else:
            append(make_row(target=target_name, arch=arch, phase=phase, length=length, settings=settings, env=env,
                            providers_used=providers_used, stats=measure.combine_sessions(samples[phase, length]),
                            build_s=build_s))


def _feeds(arch, keys, inputs, settings: ProfileSettings, errors: dict) -> dict[tuple[str, int], Any]:
    """The inputs of each (phase, length), in the session's dtypes; one that cannot be made goes to `errors`."""
    feeds: dict[tuple[str, int], Any] = {}
    for phase, length in keys:
        try:
            feeds[phase, length] = match_feed_dtypes(inputs, graphs.graph_feeds(
                arch, phase, prompt_len=length if phase == "prefill" else None,
                context_len=length if phase == "decode" else None, seed=settings.seed, precision=settings.precision))
        except Exception as exc:  # noqa: BLE001 -- a failed candidate is recorded, the run goes on
            errors[phase, length] = _error_text("run", exc)
    return feeds


def _time_keys(session, keys, feeds: dict, protocol: Protocol, errors: dict, samples: dict) -> None:
    """One session's round: every (phase, length) not failed yet timed, its samples kept, a failure recorded."""
    for key in keys:
        if key in errors:
            continue
        try:
            stats = measure.time_session(session, feeds[key], protocol)
        except Exception as exc:  # noqa: BLE001 -- a failed candidate is recorded, the run goes on
            errors[key] = _error_text("run", exc)
            feeds.pop(key, None)
            continue
        samples[key].append(stats["samples"])


def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="config", file=sys.stderr, disable=not enabled, dynamic_ncols=True)


# ----- reading and validating -----

def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_TYPES = {
    "schema": (is_int, "an integer"),
    "target": (lambda v: isinstance(v, str) and v != "", "a target name"),
    "arch": (lambda v: isinstance(v, dict), "an ArchConfig object"),
    "arch_id": (lambda v: isinstance(v, str) and v != "", "an arch id"),
    "phase": (lambda v: v in PHASES, f"one of {', '.join(PHASES)}"),
    "prompt_len": (lambda v: v is None or (is_int(v) and 0 < v <= MAX_TOKENS), f"an integer from 1 to {MAX_TOKENS} "
                                                                                "or null"),
    "context_len": (lambda v: v is None or (is_int(v) and 0 < v <= MAX_TOKENS), f"an integer from 1 to {MAX_TOKENS} "
                                                                                  "or null"),
    "precision": (lambda v: isinstance(v, str) and v != "", "a precision name"),
    "provider": (lambda v: isinstance(v, str) and v != "", "an execution provider name"),
    "providers_used": (lambda v: isinstance(v, list) and all(isinstance(p, str) for p in v), "a list of names"),
    "provider_options": (lambda v: isinstance(v, dict), "an object"),
    "threads": (lambda v: is_int(v) and 0 < v <= MAX_THREADS, f"an integer from 1 to {MAX_THREADS}"),
    "protocol": (lambda v: isinstance(v, dict), "an object"),
    "session_options": (lambda v: isinstance(v, dict), "an object"),
    "latency_ms": (lambda v: v is None or isinstance(v, dict), "an object or null"),
    "samples_ms": (lambda v: isinstance(v, list) and all(_is_num(x) for x in v), "a list of numbers"),
    "env": (lambda v: isinstance(v, dict), "an object"),
    "status": (lambda v: v in STATUSES, f"one of {', '.join(STATUSES)}"),
    "error": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "build_s": (lambda v: v is None or _is_num(v), "a number or null"),
    "timestamp": (lambda v: isinstance(v, str) and v != "", "an ISO-8601 time"),
}
ROW_FIELDS = tuple(_TYPES)


def validate_row(row: Any) -> str | None:
    """Why `row` is not a valid measurement row (naming the field), or None if it is."""
    if not isinstance(row, dict):
        return f"expected a JSON object, got {type(row).__name__}"
    for name, (check, what) in _TYPES.items():
        if name not in row:
            return f"missing field {name!r}"
        if not check(row[name]):
            return f"field {name!r} must be {what}, got {shown(row[name])}"
    if row["schema"] != SCHEMA:
        return f"field 'schema' is {row['schema']}, this nas reads schema {SCHEMA}"
    length_field, other = ("prompt_len", "context_len") if row["phase"] == "prefill" else ("context_len", "prompt_len")
    if row[length_field] is None:
        return f"field {length_field!r} is required for a {row['phase']} row"
    if row[other] is not None:
        return f"field {other!r} must be null for a {row['phase']} row"
    if row["status"] == "ok":
        lat = row["latency_ms"]
        if lat is None:
            return "field 'latency_ms' is required when status is 'ok'"
        for k in STAT_KEYS:
            if k not in lat or not _is_num(lat[k]) or lat[k] < 0:
                return f"field 'latency_ms.{k}' must be a non-negative number, got {lat.get(k)!r}"
        if lat["median"] <= 0:
            return f"field 'latency_ms.median' must be positive, got {lat['median']!r}"
        medians = lat.get("session_medians")  # absent in rows written before it existed (one session)
        if medians is not None and (not isinstance(medians, list) or not medians
                                    or not all(_is_num(v) and v > 0 for v in medians)):
            return ("field 'latency_ms.session_medians' must be a non-empty list of positive numbers, "
                    f"got {medians!r:.80}")
        if not row["samples_ms"]:
            return "field 'samples_ms' is empty for an 'ok' row"
    elif not row["error"]:
        return "field 'error' must say why a 'failed' row failed"
    try:
        arch = ArchConfig.from_dict(row["arch"])
    except (NasUserError, TypeError) as exc:
        return f"field 'arch': {exc}"
    if arch.arch_id != row["arch_id"]:
        return f"field 'arch_id' is {row['arch_id']!r} but the arch hashes to {arch.arch_id!r}"
    return None


def read_measurements(path, target: str | None = None, require_ok: bool = True,
                      ort_version: str | None = None, *, _only_target: str | None = None) -> list[dict]:
    """Read and validate a measurements JSONL file.

    Every row is checked (fields, types, arch id); a bad one raises NasUserError naming the file, line and
    field. With `target`, a row for another target is an error; with `ort_version`, so is a row measured
    under another onnxruntime version. With `require_ok` (default) only "ok" rows are returned ("failed"
    rows are still validated); otherwise all rows, in file order.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise NasUserError(f"no measurements file at {path}")
    return _parse_rows(_measurement_text(path, "measurements"), path, target, require_ok, ort_version,
                       _only_target=_only_target)


def _measurement_text(path: Path, what: str) -> str:
    """A measurements file's text: a regular file of UTF-8 of bounded size."""
    return read_user_text(path, what, " (a measurements file is JSONL)")


def _parse_rows(text: str, path: Path, target: str | None = None, require_ok: bool = True,
                ort_version: str | None = None, *, _only_target: str | None = None, first_line: int = 1) -> list[dict]:
    """The validated rows of measurements `text` from `path` (see `read_measurements`)."""
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=first_line):
        if not line.strip():
            continue
        row = parse_json(line, str(path), line=lineno)
        problem = validate_row(row)
        if problem:
            raise NasUserError(f"{path}:{lineno}: {problem}")
        if _only_target is not None and row["target"] != _only_target:
            continue
        if target is not None and row["target"] != target:
            raise NasUserError(f"{path}:{lineno}: field 'target' is {row['target']!r}, expected {target!r}")
        if ort_version is not None and row["env"].get("ort_version") != ort_version:
            raise NasUserError(f"{path}:{lineno}: field 'env.ort_version' is {row['env'].get('ort_version')!r}, "
                               f"expected {ort_version!r} (measure again with this onnxruntime)")
        if require_ok and row["status"] != "ok":
            continue
        rows.append(row)
    return rows
