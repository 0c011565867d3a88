"""`nas calibrate`: fit a target's latency predictor from measurements, evaluate it on held-out configs, save it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nas.commands._common import add_json_flag, emit
from nas.core.accounting import PRECISIONS
from nas.core.errors import NasUserError
from nas.latency.measure import DEFAULT_CONTEXT_LENS, DEFAULT_PROMPT_LENS, PROTOCOL_DEFAULTS

HELP = "fit a target's latency predictor from ONNX Runtime measurements (this host, or imported)"
DESCRIPTION = """\
Fit the latency predictor of a target and publish its accuracy on architectures it was not fitted on.

On host-cpu (no --measurements): sample --n-configs architectures from --space, measure each with ONNX
Runtime (prefill at every --prompt-lens, one decode step at every --context-lens; rows already in the
target's measurements file are reused), hold out --holdout whole architectures, fit on the rest.
With --measurements FILE...: use those rows instead (e.g. from the profiling bundle run on a phone); the
target then reports "calibrated" latencies.

Rows measured on graphs of another graph-builder version (or, on this host, with another onnxruntime or
onnxruntime-genai) are not fitted on: the count and reason are printed; a file with no other rows is refused.
The saved predictor records the graph-builder, feature-formula, onnxruntime(-genai) versions, provider and
threads, and is refused on use when the graph builder or feature formulas have changed since.

Printed per phase: MAPE, share within +-5% and +-10%, Kendall tau and n of the fitted predictor on the
held-out configs, beside a FLOPs-only and a params-only linear model fitted on the same rows and the
analytic roofline, and the run-to-run spread of the measurements (the floor no predictor can beat).
The predictor is saved only when every check passed; a failed run leaves the previous one in place.

Examples:
  nas calibrate --target host-cpu
  nas calibrate --target pixel8 --measurements pixel8.jsonl
"""


# Defaults of `nas calibrate --target host-cpu`: the measuring commands' protocol and lengths
# (nas.latency.measure.Protocol, nas.latency.profiling) at the search's own lengths, on 48 configs (a third held
# out, the rest fitted); `--dry-run` prints the time estimate of any plan (README "host-cpu" gives one machine's).
MIN_FIT_CONFIGS = 2  # architectures a predictor needs to be fitted on at all

HOST_DEFAULTS = {
    "n_configs": 48,
    "prompt_lens": DEFAULT_PROMPT_LENS,
    "context_lens": DEFAULT_CONTEXT_LENS,
    "warmup": PROTOCOL_DEFAULTS.warmup,
    "runs": PROTOCOL_DEFAULTS.runs,
    "sessions": PROTOCOL_DEFAULTS.sessions,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    D = HOST_DEFAULTS
    parser.add_argument("--target", required=True, help="target to calibrate (host-cpu measures here)")
    parser.add_argument("--space", help="search space to sample configs from (default: hostcal when it exists, "
                                        "else tiny)")
    parser.add_argument("--n-configs", type=int, default=D["n_configs"],
                        help=f"architectures to measure (default {D['n_configs']})")
    parser.add_argument("--holdout", type=int,
                        help="architectures held out for evaluation (default 30, or a third when there are "
                             "fewer than 50)")
    parser.add_argument("--prompt-lens", type=int, nargs="+", default=list(D["prompt_lens"]), metavar="P",
                        help=f"prefill prompt lengths (default {' '.join(map(str, D['prompt_lens']))})")
    parser.add_argument("--context-lens", type=int, nargs="+", default=list(D["context_lens"]), metavar="C",
                        help=f"decode context lengths (default {' '.join(map(str, D['context_lens']))})")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="weight precision (default: the target's)")
    parser.add_argument("--provider", help="ONNX Runtime execution provider (default: the target's first)")
    parser.add_argument("--threads", type=int,
                        help="intra-op threads (default: the target's; with others, evaluate without saving)")
    parser.add_argument("--warmup", type=int, default=D["warmup"],
                        help=f"untimed runs first, in every session (default {D['warmup']})")
    parser.add_argument("--runs", type=int, default=D["runs"],
                        help=f"timed runs per session (default {D['runs']})")
    parser.add_argument("--sessions", type=int, default=D["sessions"],
                        help="fresh ONNX Runtime sessions per graph; the median of the session medians is kept "
                             f"(default {D['sessions']})")
    parser.add_argument("--measurements", nargs="+", metavar="FILE",
                        help="measurement JSONL file(s) to fit on instead of measuring here")
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling configs and the held-out split")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and time estimate, measure nothing")
    add_json_flag(parser)


def _default_space() -> str:
    from nas.spaces import load_space

    try:
        load_space("hostcal")
        return "hostcal"
    except NasUserError:
        return "tiny"


def _log(args, message: str) -> None:
    # Progress and plans go to stderr so --json output stays clean.
    print(message, file=sys.stderr if args.json else sys.stdout, flush=True)


def _measure_here(args, target, precision: str, provider: str, threads: int) -> tuple[list[dict], dict[str, Any]]:
    from nas.core.paths import measurements_path
    from nas.latency import calibrate
    from nas.latency.measure import Protocol
    from nas.latency.probes import host_probes
    from nas.latency.profiling import ProfileSettings, profile_configs
    from nas.spaces import load_space

    if args.n_configs < 2:
        raise NasUserError(f"--n-configs must be at least 2, got {args.n_configs}")
    if args.holdout is not None and args.holdout > args.n_configs - MIN_FIT_CONFIGS:
        raise NasUserError(f"--holdout {args.holdout} leaves fewer than {MIN_FIT_CONFIGS} of --n-configs "
                           f"{args.n_configs} to fit on; hold out fewer or measure more configs")
    for flag, value, low in (("--warmup", args.warmup, 0), ("--runs", args.runs, 1), ("--sessions", args.sessions, 1)):
        if value < low:
            raise NasUserError(f"{flag} must be at least {low}, got {value}")
    space_name = args.space or _default_space()
    space = load_space(space_name)
    configs = space.sample(args.n_configs, seed=args.seed)
    settings = ProfileSettings(precision=precision, provider=provider, prompt_lens=tuple(args.prompt_lens),
                               context_lens=tuple(args.context_lens),
                               protocol=Protocol(threads=threads, warmup=args.warmup, runs=args.runs,
                                                 sessions=args.sessions), seed=args.seed)
    probes = host_probes(threads, quick=True)
    estimate = calibrate.estimate_seconds(target, configs, precision=precision, prompt_lens=settings.prompt_lens,
                                    context_lens=settings.context_lens, warmup=args.warmup, runs=args.runs,
                                    sessions=args.sessions, probes=probes)
    out_path = measurements_path(target.name)
    plan = {"space": space_name, "n_configs": len(configs), "prompt_lens": list(settings.prompt_lens),
            "context_lens": list(settings.context_lens), "protocol": settings.protocol.to_dict(),
            "measurements_file": str(out_path), "estimate_s": estimate}
    _log(args, f"measuring {len(configs)} configs from space {space_name!r} on {target.name} ({provider}, "
               f"{precision}, {threads} threads): {estimate['measurements']} measurements, {args.sessions} "
               f"session(s) x (warmup {args.warmup} + {args.runs} runs) each; estimated "
               f"{estimate['total_s'] / 60:.1f} min ({estimate['build_s'] / 60:.1f} building graphs, "
               f"{estimate['session_s'] / 60:.1f} creating further sessions, {estimate['measure_s'] / 60:.1f} timing; "
               f"rows already in {out_path} are reused)")
    if args.dry_run:
        return [], plan
    rows = profile_configs(target, configs, settings, out_path, progress=not args.json and sys.stderr.isatty())
    plan.update(measured_now=rows.measured, reused=rows.skipped, failed=rows.failed, out_of_range=rows.out_of_range,
                reused_other_protocol=rows.other_protocol, not_reused_stale=rows.stale)
    if rows.stale:
        _log(args, f"{rows.stale} row(s) in {out_path} are of other graphs or another runtime and were not reused "
                   f"({'; '.join(f'{n}: {why}' for why, n in rows.stale_reasons.items())})")
    if rows.other_protocol:
        _log(args, f"{rows.other_protocol} reused row(s) were measured with another protocol (e.g. one session); "
                   f"move {out_path} away to measure everything with this one")
    if rows.failed:
        _log(args, f"{rows.failed} measurement(s) failed (recorded in {out_path}); fitting on the rest")
    return list(rows), plan


def run(args: argparse.Namespace) -> int:
    from nas.core.paths import predictor_path
    from nas.latency import calibrate
    from nas.latency.profiling import read_measurements
    from nas.latency.registry import host_threads, latency_source, resolve_deployment

    target, precision, provider = resolve_deployment(args.target, args.precision, args.provider)
    threads = args.threads if args.threads is not None else host_threads(target)
    from nas.core.limits import MAX_THREADS, check_int

    check_int(threads, "--threads", 1, MAX_THREADS)
    if args.holdout is not None and args.holdout < 1:
        raise NasUserError(f"--holdout must be at least 1, got {args.holdout}")

    ort_version = cpu = None
    if target.measured_here:
        from nas.latency import measure

        ort_version, cpu = measure.ort_version(), measure.cpu_model()
    plan: dict[str, Any] = {}
    if args.measurements:
        rows = []
        for path in args.measurements:
            rows.extend(read_measurements(path, target=target.name, require_ok=False))
        source = ", ".join(args.measurements)
    elif target.measured_here:
        rows, plan = _measure_here(args, target, precision, provider, threads)
        if args.dry_run:
            emit(args, {"plan": plan}, "dry run: nothing measured")
            return 0
        source = plan["measurements_file"]
    else:
        raise NasUserError(f"target {target.name} cannot be measured on this machine; run the profiling bundle "
                           f"on the device (`nas bundle --target {target.name} --out DIR`) and pass the "
                           "measurements it writes with --measurements")

    rows = calibrate.select_rows(rows, target=target.name, precision=precision, provider=provider, threads=threads,
                           ort_version=ort_version, cpu_model=cpu, source=source)
    predictor = calibrate.calibrate_rows(target, rows, precision=precision, provider=provider, holdout=args.holdout,
                                   seed=args.seed)
    summary = calibrate.summary(predictor)
    summary["measurement_source"] = source
    summary["skipped_rows"] = rows.skipped
    if plan:
        summary["plan"] = plan
    text = calibrate.format_summary(summary)
    if rows.skipped:
        text = rows.skipped_text() + "\n" + text
    if threads == host_threads(target):
        path = predictor_path(target.name, provider, precision)
        predictor.save(path)
        summary.update(saved=True, predictor_path=str(path),
                       latency_source=latency_source(target, precision, provider))
        text += (f"\nsaved {path}\n{target.name} latency ({precision}, {provider}, {threads} threads) is now "
                 f"{summary['latency_source']!r}")
    else:
        # A predictor is for the threads its target runs with; one for other threads would be refused on use.
        summary.update(saved=False, predictor_path=None, latency_source=latency_source(target, precision, provider))
        text += (f"\nnot saved: {target.name} runs {host_threads(target)} threads, these measurements used "
                 f"{threads} (evaluation only)")
    emit(args, summary, text)
    return 0
