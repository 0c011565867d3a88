"""`nas profile`: measure a sample of a search space with ONNX Runtime on this machine."""

from __future__ import annotations

import argparse

from nas.commands._common import add_json_flag, emit
from nas.core.accounting import PRECISIONS
from nas.core.errors import NasUserError
from nas.latency.measure import DEFAULT_CONTEXT_LENS, DEFAULT_PROMPT_LENS, PROTOCOL_DEFAULTS

HELP = "measure prefill/decode latency of sampled configs with ONNX Runtime on this machine"
DESCRIPTION = """Measure prefill (time to first token at prompt length P) and decode (one token with C tokens in the
KV cache) latency of a space-filling sample of a search space, with ONNX Runtime on this machine, and append
one JSON row per measurement to the target's measurements file (read by `nas calibrate`).

Re-running skips what is already measured (rows of another graph-builder version, onnxruntime or
onnxruntime-genai are measured again, never reused); a config that fails is recorded with its reason and the run goes
on. Only targets measured here (host-cpu) can be profiled; for a device, use `nas bundle`.

Protocol: each graph is timed in SESSIONS freshly created ONNX Runtime sessions, each doing WARMUP untimed
runs then RUNS timed runs at every length; the latency is the median of the per-session medians (one session
alone can sit in a slow state), spread and samples are kept. Rows already measured are reused
whatever protocol measured them; write to a new --out to re-measure with another protocol.

Examples:
  nas profile --target host-cpu --space hostcal --n-configs 20
  nas profile --target host-cpu --precision int8 --prompt-lens 64,256 --context-lens 256,1024 --json
"""

# The measuring commands' defaults (one set, in nas.latency): protocol and lengths.
DEFAULT_WARMUP = PROTOCOL_DEFAULTS.warmup
DEFAULT_RUNS = PROTOCOL_DEFAULTS.runs
DEFAULT_SESSIONS = PROTOCOL_DEFAULTS.sessions
# Space used when none is given, first that exists: the host-calibration space sized for a small CPU.
DEFAULT_SPACES = ("hostcal", "tiny")


def lengths_arg(text: str) -> tuple[int, ...]:
    """argparse type for "64,128,512": token lengths from 1 to MAX_TOKENS."""
    from nas.core.limits import MAX_TOKENS

    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        values = ()
    if not values or any(not 1 <= v <= MAX_TOKENS for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated token lengths from 1 to {MAX_TOKENS:,}, "
                                         f"got {text!r}")
    return values


def add_sampling_arguments(parser: argparse.ArgumentParser, n_configs: int) -> None:
    """Flags `nas profile` and `nas bundle` share: what to sample and at which lengths."""
    parser.add_argument("--target", required=True, help="target name (see `nas targets`)")
    parser.add_argument("--space", help=f"search space to sample (default: the first of {', '.join(DEFAULT_SPACES)})")
    parser.add_argument("--n-configs", type=int, default=n_configs, metavar="N",
                        help=f"configs to sample, space-filling (default {n_configs})")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="weight precision of the graphs (default: the target's)")
    parser.add_argument("--prompt-lens", type=lengths_arg, default=DEFAULT_PROMPT_LENS, metavar="P,P,...",
                        help=f"prefill prompt lengths (default {','.join(map(str, DEFAULT_PROMPT_LENS))})")
    parser.add_argument("--context-lens", type=lengths_arg, default=DEFAULT_CONTEXT_LENS, metavar="C,C,...",
                        help="decode KV-cache lengths (default "
                             f"{','.join(map(str, DEFAULT_CONTEXT_LENS))})")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP,
                        help=f"untimed runs before timing, in every session (default {DEFAULT_WARMUP})")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS,
                        help=f"timed runs per session (default {DEFAULT_RUNS})")
    parser.add_argument("--sessions", type=int, default=DEFAULT_SESSIONS,
                        help="fresh ONNX Runtime sessions per graph; the latency is the median of their medians "
                             f"(default {DEFAULT_SESSIONS})")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: the target's)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_sampling_arguments(parser, n_configs=20)
    parser.add_argument("--provider", metavar="EP",
                        help="ONNX Runtime execution provider, exact name (default: the target's first)")
    parser.add_argument("--provider-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an option for the execution provider (repeatable)")
    parser.add_argument("--out", help="measurements JSONL to append to (default: NAS_HOME/measurements/TARGET.jsonl)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_json_flag(parser)


def parse_provider_options(items: list[str]) -> dict[str, str]:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise NasUserError(f"--provider-option expects KEY=VALUE, got {item!r}")
        options[key.strip()] = value
    return options


def sample_configs(args: argparse.Namespace) -> tuple[str, list]:
    """The space's name and its space-filling sample of --n-configs configs."""
    from nas.spaces import load_space

    if args.n_configs is None or args.n_configs < 1:
        raise NasUserError(f"--n-configs must be at least 1, got {args.n_configs}")
    name = args.space
    if name is None:
        for candidate in DEFAULT_SPACES:
            try:
                space = load_space(candidate)
                break
            except NasUserError:
                continue
        else:
            raise NasUserError(f"none of the default spaces {', '.join(DEFAULT_SPACES)} exists; pass --space")
    else:
        space = load_space(name)
    return space.name, list(space.sample(args.n_configs, seed=args.seed))


def make_protocol(args: argparse.Namespace, target):
    from nas.core.limits import MAX_THREADS
    from nas.latency.measure import Protocol

    threads = args.threads if args.threads is not None else target.threads
    for flag, value, low in (("--threads", threads, 1), ("--warmup", args.warmup, 0), ("--runs", args.runs, 1),
                             ("--sessions", args.sessions, 1)):
        if value < low:
            raise NasUserError(f"{flag} must be at least {low}, got {value}")
    if threads > MAX_THREADS:
        raise NasUserError(f"--threads must be at most {MAX_THREADS:,}, got {threads}")
    return Protocol(threads=threads, warmup=args.warmup, runs=args.runs, sessions=args.sessions)


def _all_failed_message(failures: list[dict], precision: str, provider: str, out) -> tuple[str, int]:
    """One line for a run where every measurement failed, and its exit code."""
    errors = [r["error"] for r in failures]
    first = errors[0]
    stages = {e.split(":", 1)[0] for e in errors}
    if stages <= {"session", "run"}:
        return (f"precision {precision} could not run on {provider} for any config "
                f"(this onnxruntime build: {first}); failed rows are in {out}"), 2
    if stages == {"memory"}:
        return f"every config is too large for this machine's memory ({first}); sample a smaller space", 2
    return f"every config failed ({first}); failed rows are in {out}", 1


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from nas.core.paths import measurements_path
    from nas.latency.measure import check_provider
    from nas.latency.profiling import ProfileSettings, profile_configs
    from nas.latency.registry import resolve_deployment
    from nas.targets import load_target

    target = load_target(args.target)
    if not target.measured_here:
        raise NasUserError(f"target {target.name!r} is not this machine and cannot be profiled here; make a "
                           f"profiling bundle with `nas bundle --target {target.name} --out DIR` and run it there")
    target, precision, provider = resolve_deployment(target, args.precision, args.provider)
    check_provider(provider)
    settings = ProfileSettings(precision=precision, provider=provider,
                               provider_options=parse_provider_options(args.provider_option),
                               prompt_lens=args.prompt_lens, context_lens=args.context_lens,
                               protocol=make_protocol(args, target), seed=args.seed)
    space_name, configs = sample_configs(args)
    out = Path(args.out) if args.out else measurements_path(target.name)
    rows = profile_configs(target, configs, settings, out, progress=not (args.quiet or args.json))

    summary = {
        "target": target.name, "space": space_name, "configs": len(configs), "precision": settings.precision,
        "provider": provider, "threads": settings.protocol.threads, "prompt_lens": list(settings.prompt_lens),
        "context_lens": list(settings.context_lens), "measured": rows.measured, "skipped": rows.skipped,
        "failed": rows.failed, "out_of_range": rows.out_of_range, "ok_rows": sum(r["status"] == "ok" for r in rows),
        "protocol": settings.protocol.to_dict(), "skipped_other_protocol": rows.other_protocol,
        "not_reused_stale": rows.stale, "stale_reasons": rows.stale_reasons,
        "out": str(out),
        "failures": [{"arch_id": r["arch_id"], "phase": r["phase"],
                      "length": r["prompt_len"] if r["phase"] == "prefill" else r["context_len"],
                      "error": r["error"]} for r in rows.new_failures],
    }
    if rows.failed and not rows.measured and not rows.skipped and not summary["ok_rows"]:
        message, code = _all_failed_message(rows.new_failures, settings.precision, provider, out)
        if args.json:
            emit(args, {**summary, "error": message}, "")
        print(f"nas profile: error: {message}", file=sys.stderr)
        return code
    lines = [f"{target.name}: {len(configs)} configs from space {space_name}, {settings.precision} on {provider}, "
             f"{settings.protocol.threads} threads",
             f"measured now: {rows.measured}, already measured (skipped): {rows.skipped}, failed: {rows.failed}"
             + (f", beyond max_seq_len (not measured): {rows.out_of_range}" if rows.out_of_range else "")]
    if rows.other_protocol:
        lines.append(f"  {rows.other_protocol} of the skipped rows were measured with another protocol (e.g. fewer "
                     "sessions); write to a new --out to measure them again with this one")
    if rows.stale:
        lines.append(f"  {rows.stale} row(s) in the file were not reused, they are of other graphs or another runtime "
                     f"({'; '.join(f'{n}: {why}' for why, n in rows.stale_reasons.items())}); measured again")
    for failure in summary["failures"][:5]:
        lines.append(f"  failed {failure['arch_id']} {failure['phase']} {failure['length']}: {failure['error']}")
    if len(summary["failures"]) > 5:
        lines.append(f"  ... and {len(summary['failures']) - 5} more failures (see the file)")
    lines.append(f"rows in {out}")
    emit(args, summary, "\n".join(lines))
    return 0
