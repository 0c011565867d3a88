"""`nas search`: multi-objective architecture search for one or more targets, saved as an Optuna study."""

from __future__ import annotations

import argparse

from nas.commands._common import add_json_flag, emit
from nas.core.accounting import PRECISIONS
from nas.core.trainers import TRAINERS
from nas.search.settings import (
    DEFAULT_CONTEXT_LEN,
    DEFAULT_ETA,
    DEFAULT_FINAL_SEEDS,
    DEFAULT_PROMPT_LEN,
    DEFAULT_PROXY_SHAPES,
    DEFAULT_RUNG_TOKENS,
    DEFAULT_SEED,
    DEFAULT_SPACE,
    DEFAULT_TRIALS,
    SAMPLERS,
    STAGES,
)
from nas.study.schema import MULTI_TARGET_MODES, QUALITY_CHOICES

HELP = "search a space for shapes that trade model quality against on-device speed"
DESCRIPTION = """\
Search a space of Llama-family shapes for the Pareto front of model quality against device speed, as
Optuna studies (saved in --storage, readable by optuna-dashboard), and print the Pareto tables. In two stages:

1. Latency stage (seconds): every candidate's predicted speed, memory and size, and its predicted pretraining
   loss after --train-tokens tokens (default 1T), from a law fitted to published training runs (`nas quality`
   shows it, with its leave-one-study-out error and band); NSGA-II plus, for spaces up to 2M configs, the
   exact front. The recommendation is made on this front: predicted losses within the law's band are ties,
   won by the faster shape. --quality params ranks by the non-embedding parameter count instead (blind to
   shape at equal size), as nas did before the law.
2. Proxy stage (minutes; --no-proxy skips it): the check of the law on your own text. --proxy-shapes shapes
   (the recommended ones first, then shapes on and near the front, spread along the speed axis and differing
   in depth, width, attention grouping and FFN) are trained as scaled-down proxies (same depth and grouping,
   width ~128, byte tokens, muP + CompleteP so one learning rate is fair to all) on real text (the shipped
   Shakespeare corpus, or --data), in rungs of growing token budget (--proxy-tokens); after each rung,
   multi-objective successive halving stops a shape only when others beat it on both held-out loss and speed
   and it is not in the best 1/--eta. Printed: proxy bits per byte beside predicted loss, their Kendall tau,
   the seed noise, and a flag on each pair the proxy orders against the law beyond twice the noise. The proxy
   moves a pick by one rule only: a shape the law ties with the pick (within the band) whose proxy scores
   better by more than twice the seed noise takes its place; a shape that fails to train is never picked.

Objectives (--objectives, comma-separated, default quality,decode_tps):
  quality      predicted pretraining loss after --train-tokens tokens (nats/token), minimised (--quality
               params: non-embedding parameter count, maximised); in the proxy stage, held-out bits per byte
               of the trained proxy, minimised
  decode_tps   decode tokens/s with --context-len tokens in the KV cache (maximised)
  prefill_tps  prefill tokens/s for a --prompt-len prompt (maximised)
  ttft         time to first token in ms for a --prompt-len prompt (minimised)
  memory       weights + KV cache + working memory in MiB (minimised)
Figures come from each target's latency model; analytic ones are labelled "analytic, uncalibrated". Where
the Pareto set's predictions are extrapolated (lengths beyond a shape's max_seq_len, or lengths and sizes
outside what a fitted predictor was measured on) a warning line says so per target (--json: "warnings";
the report shows them on top).

Several targets (--target A --target B): every speed objective is either counted per target
(--multi-target each: quality, decode@A, decode@B; a shape must not be dominated on any device) or as the
worst case over the targets (--multi-target worst: the lowest tokens/s, the highest TTFT and memory; one
front of shapes that are good on the slowest device). Default: each for up to two targets (3 objectives,
which NSGA-II handles well), worst for three or more (more objectives make almost every shape
non-dominated). Constraints always hold on every target.

Constraints (Optuna's: value > 0 is violated; infeasible trials are kept with their reasons):
  --max-memory-mb (default: each target's memory budget), --min-decode-tps, --max-ttft-ms,
  --params LOW:HIGH (total parameters). PhoneLM's principle, choosing the shape before pretraining:
  fix the budget, e.g. --params 450M:550M, and the front is the fastest shapes of that size.
A constraint no config of the space can meet is refused before searching, naming the closest config.

Exactness: a space of up to 2M configs is enumerated and predicted in full first; the exact front is
recorded in the study, configs of it the sampler missed are added as trials marked "exact", and the
summary says how much of the exact front's hypervolume the sampler itself reached (--no-exact: skip).
Budget: --trials counts configs evaluated. A shape already evaluated (same arch id) is never evaluated
again: its trial copies the values (duplicate_of). A combination the space rejects fails its trial with
the reason. Neither counts toward --trials; both stay in the study for the sampler to learn from.

Resuming: the same --storage and --study continue the study up to --trials evaluated configs in all;
a study created with another space, target, precision, lengths, objectives or constraints is refused, and
so is one searched under another latency model of a target (the study records each model's fingerprint:
calibrating a target, or a new graph builder, changes it; start a new --study then).
Ctrl-C (or SIGTERM) stops: finished trials are kept, a proxy run in progress is marked failed with the
reason, what was found is printed (and reported), exit 130. Same --seed, same trials and Pareto sets.

Many workers: start the same command (same --storage and --study) in any number of processes, on one
machine (a journal file --storage runs/nas.log, or SQLite) or many (--storage postgresql://...). The first
runs the latency stage and chooses the shapes; all of them then claim shapes to train one at a time. A
worker that dies is noticed by its missing heartbeats and its shape is trained again by another.
--stage latency runs only the first part, --stage proxy only joins as a worker.

Faults: a database lost mid-search (a server restart, dropped connections) is retried for up to 120 s per
call; a shape whose proxy diverges, passes --proxy-time-limit or runs out of memory fails its trial with
the reason and the search goes on. Exit codes: 0 done; 2 a bad input (one line, nothing written); 130
interrupted; 1 the search finished and is saved but its report could not be written (read-only or full
folder: one line on stderr; `nas report` writes it later).
"""

MAX_GRACE_S = 7 * 24 * 3600


def _tokens_arg(text: str) -> tuple[int, ...]:
    """argparse type for "24576,73728" or "24K,72K"."""
    from nas.core.limits import MAX_COUNT, is_finite_number

    out = []
    for part in text.split(","):
        part = part.strip().upper()
        scale = 1000 if part.endswith("K") else 1_000_000 if part.endswith("M") else 1
        try:
            value = float(part.rstrip("KM")) * scale
        except ValueError:
            value = None
        if value is None or not is_finite_number(value) or abs(value) > MAX_COUNT:
            raise argparse.ArgumentTypeError(f"expected comma-separated token budgets such as 24K,72K (at most "
                                             f"{MAX_COUNT:,} each), got {text!r}")
        out.append(int(value))
    return tuple(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_latency_arguments(parser)
    _add_output_arguments(parser)
    _add_proxy_arguments(parser.add_argument_group("proxy stage"))
    add_json_flag(parser)


def _add_latency_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", action="append", required=True, metavar="NAME",
                        help="device to search for (repeat for several); see `nas targets`")
    parser.add_argument("--space", default=DEFAULT_SPACE,
                        help=f"search space preset or TOML file (default {DEFAULT_SPACE}); see `nas spaces`")
    parser.add_argument("--trials", type=int, default=DEFAULT_TRIALS,
                        help="configs to evaluate in the study in all, resumed runs included; proposals the space "
                             f"rejects and duplicates are recorded but not counted (default {DEFAULT_TRIALS})")
    parser.add_argument("--prompt-len", type=int, default=DEFAULT_PROMPT_LEN,
                        help=f"prompt tokens for prefill / TTFT (default {DEFAULT_PROMPT_LEN})")
    parser.add_argument("--context-len", type=int, default=DEFAULT_CONTEXT_LEN,
                        help=f"tokens in the KV cache for decode and memory (default {DEFAULT_CONTEXT_LEN})")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="deployment precision on every target (default: each target's own)")
    parser.add_argument("--objectives", metavar="LIST",
                        help="comma-separated: quality, decode_tps, prefill_tps, ttft, memory "
                             "(default quality,decode_tps)")
    parser.add_argument("--multi-target", choices=MULTI_TARGET_MODES,
                        help="speed objectives per target or worst case over targets (see above)")
    parser.add_argument("--max-memory-mb", type=float, metavar="MB",
                        help="memory limit on every target in MiB (default: each target's memory budget)")
    parser.add_argument("--min-decode-tps", type=float, metavar="TPS", help="minimum decode tokens/s on every target")
    parser.add_argument("--max-ttft-ms", type=float, metavar="MS", help="maximum time to first token on every target")
    parser.add_argument("--params", metavar="LOW:HIGH", help="total parameter range, e.g. 100M:600M or 450M:550M")
    parser.add_argument("--train-tokens", metavar="D",
                        help="pretraining tokens the loss is predicted at, e.g. 1T, 300B or 2e11 (default 1T, "
                             "MobileLLM's budget)")
    parser.add_argument("--quality", choices=QUALITY_CHOICES, default="law",
                        help="what the latency stage ranks quality by: the predicted loss (law, default) or the "
                             "non-embedding parameter count (params, for comparison)")
    parser.add_argument("--sampler", default="nsga2", metavar="NAME",
                        help=f"Optuna sampler: {', '.join(SAMPLERS)} (default nsga2)")
    parser.add_argument("--population", type=int, help="NSGA-II population (default: trials/15, 10 to 50)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"sampler seed (default {DEFAULT_SEED})")
    parser.add_argument("--storage", help="Optuna storage URL (default sqlite:///runs/nas.db), a journal file "
                                          "ending in .log, or :memory:")
    parser.add_argument("--study", help="study name (default <targets>-<space>); the same name resumes")
    parser.add_argument("--trainer", choices=TRAINERS,
                        help="only shapes this trainer can build (nas export's formats; says how many it removes)")
    parser.add_argument("--no-exact", dest="exact", action="store_false",
                        help="do not enumerate the space for the exact front")


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-report", dest="report", action="store_false", help="do not write the report")
    parser.add_argument("--report-dir", help="report folder (default runs/reports/<study>)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.add_argument("--show", type=int, default=20, metavar="N",
                        help="Pareto rows printed, spread along the front (default 20; 0: all; --json has all)")


def _add_proxy_arguments(proxy) -> None:
    proxy.add_argument("--no-proxy", dest="proxy", action="store_false",
                       help="latency stage only: no check of the law on your text (seconds instead of minutes)")
    proxy.add_argument("--proxy-shapes", type=int, default=DEFAULT_PROXY_SHAPES, metavar="N",
                       help=f"shapes to train (default {DEFAULT_PROXY_SHAPES})")
    proxy.add_argument("--proxy-tokens", type=_tokens_arg, default=DEFAULT_RUNG_TOKENS, metavar="B0,B1,...",
                       help="token budget of each rung (default "
                            f"{','.join(str(t) for t in DEFAULT_RUNG_TOKENS)})")
    proxy.add_argument("--eta", type=float, default=DEFAULT_ETA,
                       help="successive halving keeps about 1/eta of the dominated shapes per rung "
                            f"(default {DEFAULT_ETA:g})")
    proxy.add_argument("--proxy-repeats", type=int, default=1, metavar="N",
                       help="seeds per shape; the shape's score is their mean (default 1)")
    proxy.add_argument("--final-seeds", type=int, default=DEFAULT_FINAL_SEEDS, metavar="N",
                       help="seeds the shapes at the last rung are trained with; their spread is the seed noise, "
                            f"below which the picks count quality differences as ties (default {DEFAULT_FINAL_SEEDS})")
    proxy.add_argument("--data", metavar="PATH",
                       help="training text: a file, a folder of text files or JSONL with a \"text\" field "
                            "(default: the shipped Shakespeare corpus)")
    proxy.add_argument("--device", default="cpu", help="torch device for proxy training: cpu or cuda (default cpu)")
    proxy.add_argument("--proxy-threads", type=int, metavar="N", help="torch threads (default: every core)")
    proxy.add_argument("--proxy-time-limit", type=float, metavar="S",
                       help="seconds one shape may train, all rungs together; past it the shape fails (default: none)")
    proxy.add_argument("--stage", default="all", choices=STAGES,
                       help="all (default), latency only, or proxy only (join as a worker)")
    proxy.add_argument("--heartbeat-interval", type=int, default=10, metavar="S",
                       help="seconds between a worker's heartbeats on an RDB storage (default 10)")
    proxy.add_argument("--grace-period", type=int, default=60, metavar="S",
                       help="seconds without a heartbeat after which a worker's shape is retried by another "
                            "(default 60)")


def _proxy_options(args: argparse.Namespace):
    if not args.proxy:
        return None
    from nas.proxy.train import TrainSettings
    from nas.search import ProxyOptions

    train = TrainSettings(device=args.device, time_limit_s=args.proxy_time_limit)
    return ProxyOptions(shapes=args.proxy_shapes, rung_tokens=tuple(args.proxy_tokens), eta=args.eta,
                        repeats=args.proxy_repeats, final_seeds=args.final_seeds, data=args.data, train=train,
                        threads=args.proxy_threads)


def _settings(args: argparse.Namespace):
    """The latency stage's settings from the flags (checked as they are built)."""
    from nas.core.errors import NasUserError
    from nas.quality.model import parse_train_tokens
    from nas.search import SearchSettings

    if args.quality == "params" and args.train_tokens is not None:
        raise NasUserError("--train-tokens sets the budget the loss is predicted at; with --quality params there is "
                           "no predicted loss (drop one of them)")
    return SearchSettings(
        targets=tuple(args.target), space=args.space, trials=args.trials, prompt_len=args.prompt_len,
        context_len=args.context_len, precision=args.precision,
        objectives=args.objectives.split(",") if args.objectives else None,
        multi_target=args.multi_target, max_memory_mb=args.max_memory_mb, min_decode_tps=args.min_decode_tps,
        max_ttft_ms=args.max_ttft_ms, params=args.params, sampler=args.sampler, population=args.population,
        seed=args.seed, storage=args.storage, study=args.study, exact=args.exact, trainer=args.trainer,
        quality=args.quality,
        train_tokens=None if args.train_tokens is None else parse_train_tokens(args.train_tokens),
    )


def _heartbeat(args: argparse.Namespace):
    from nas.core.errors import NasUserError
    from nas.study.storage import Heartbeat

    if not 1 <= args.heartbeat_interval < args.grace_period:
        raise NasUserError(f"--heartbeat-interval ({args.heartbeat_interval}) must be at least 1 and below "
                           f"--grace-period ({args.grace_period})")
    if args.grace_period > MAX_GRACE_S:  # a sleep past this is an OverflowError in the heartbeat thread
        raise NasUserError(f"--grace-period must be at most {MAX_GRACE_S:,} seconds (a week), got {args.grace_period}")
    return Heartbeat(args.heartbeat_interval, args.grace_period)


def run(args: argparse.Namespace) -> int:
    from nas.search import Search

    settings = _settings(args)
    proxy = _proxy_options(args)
    if proxy is not None:
        from nas.proxy.corpus import load_corpus

        load_corpus(proxy.data)  # unreadable or empty --data is refused before anything is searched
    search = Search(settings, proxy=proxy, stage=args.stage, heartbeat=_heartbeat(args))
    search.validate()  # refusals that need no storage, before anything is written
    if args.report and args.report_dir:
        from nas.core.paths import check_can_create

        check_can_create(args.report_dir, "the report")  # refused before searching, not after; created later
    result = search.run(progress=args.progress)
    report_path, report_note, report_error = _write_report(result, args.report_dir) if args.report else (None,) * 3
    data = {**result_to_json(result), "report": str(report_path) if report_path else None,
            "recommendation": result.recommendation}
    lines = result_text(result, args.show)
    if report_path or report_note:
        lines.append(f"report: {report_path or report_note}")
    emit(args, data, "\n".join(lines))
    if report_error:  # the search is done and saved; only its report is missing: say so, and exit 1
        import sys

        from nas.core.paths import default_storage

        storage = "" if args.storage in (None, default_storage()) else f" --storage {args.storage}"
        out = f" --out {args.report_dir}" if args.report_dir else ""
        print(f"nas search: error: {report_error}; the study is saved: write the report later with "
              f"`nas report --study {result.study_name}{storage}{out}`", file=sys.stderr)
    return 130 if result.interrupted else 1 if report_error else 0


def result_text(result, show: int) -> list[str]:
    """What a search prints: the summary, the Pareto table (`show` rows), the proxy stage, the recommendation."""
    from nas.search import format_table, pick_rows

    bands, targets = result.meta.latency_errors, list(result.meta.targets)
    shown = pick_rows(result.pareto, show)
    lines = [summary_text(result), "", format_table(shown, targets, bands)]
    if len(shown) < len(result.pareto):
        lines.append(f"({len(shown)} of {len(result.pareto)} Pareto shapes shown, spread along the front; "
                     "--show 0 for all, --json or the report for everything)")
    if result.proxy is not None:
        lines += ["", proxy_text(result.proxy)]
        if result.proxy.pareto:
            lines += ["", format_table(result.proxy.pareto, targets, bands)]
    sources = ", ".join(f"{t} {result.meta.precision[t]}: {s}" for t, s in result.meta.latency_sources.items())
    lines += ["", f"quality = {_quality_label(result)}; speeds and memory are predicted ({sources})",
              f"study {result.study_name!r} saved in {result.storage}"]
    if result.recommendation:
        lines += recommendation_text(result.recommendation, result.storage)
    return lines


def recommendation_text(rec: dict, storage: str) -> list[str]:
    """The recommendation as lines: the knee and why, what it trades, the other picks, the best shape at fixed
    speeds, how stable the knee is, where published models sit, the proxy check, the export command."""
    from nas.core.counts import format_count
    from nas.study.storage import MEMORY_STORAGES

    knee = rec["picks"]["knee"]
    loss = f", predicted loss {knee['predicted_loss']:.3f}" if "predicted_loss" in knee else ""
    lines = ["", f"recommended for {rec['target']}: {knee['shape']} (trial {knee['trial']} of study "
                 f"{knee.get('study', rec['study'])}, arch id {knee['arch_id']}{loss}), {knee['why']}; "
                 f"{knee['decode_text']}"]
    if rec.get("trade"):
        lines.append(f"  it trades: {rec['trade']}")
    for name in ("fastest", "best-quality"):
        pick = rec["picks"][name]
        loss = f", predicted loss {pick['predicted_loss']:.3f}" if "predicted_loss" in pick else ""
        lines.append(f"  {name}: {pick['shape']} (trial {pick['trial']}{loss}), {pick['decode_text']}"
                     + (f"; {pick['why']}" if pick.get("moved_from") else ""))
    if rec.get("fixed_speeds"):
        lines.append(f"  best at a fixed decode speed on {rec['target']} (losses within {rec['band_nats']:.3f} "
                     "nats tie, the faster wins):")
        for f in rec["fixed_speeds"]:
            lines.append(f"    >= {f['at_least_tokens_per_s']:g} tok/s: {f['shape']} ({format_count(f['num_params'])}, "
                         f"loss {f['predicted_loss']:.3f}, {f['decode_tokens_per_s']:.1f} tok/s)")
    lines += _advice_lines(rec) + _law_check_lines(rec.get("law_check"))
    if knee["export"] is None or storage in MEMORY_STORAGES:
        lines.append(f"  export it: not from this study: it was in memory (--storage {storage}) and is gone; search "
                     "again with a --storage to keep it")
    else:
        lines.append(f"  export it: {knee['export']}")
    return lines


def _advice_lines(rec: dict) -> list[str]:
    """How stable the knee is under refits of the law, and the fastest shape at each published model's loss."""
    from nas.core.counts import format_count

    lines = []
    stability = rec.get("stability") or {}
    if stability.get("fits"):
        d = stability["depths"]
        moved = rec["picks"]["knee"].get("moved_from")
        which = f"the law's knee ({moved})" if moved else "the knee"
        lines.append(f"  stability: in {stability['fits']} refits of the law on resampled published shapes {which} "
                     f"is the same shape in {stability['same_shape']:.0%}; the refits' knees have "
                     f"{d['p10']}-{d['p90']} layers (10-90%, median {d['median']})")
    for lm in rec.get("landmarks") or ():
        match = lm["fastest_match"]
        if match is None:
            lines.append(f"  at the predicted loss of {lm['name']} ({lm['predicted_loss']:.3f}): no feasible shape "
                         "reaches it")
        else:
            lines.append(f"  at the predicted loss of {lm['name']} ({lm['predicted_loss']:.3f}, "
                         f"{lm['decode_tokens_per_s']:.1f} tok/s): the fastest shape is {match['shape']} "
                         f"({format_count(match['num_params'])}, {match['decode_tokens_per_s']:.1f} tok/s, "
                         f"{match['speedup']:.2f}x)")
    return lines


def _law_check_lines(check: dict | None) -> list[str]:
    """The proxy check of the law on the user's text: rank agreement, seed noise, each shape, the flags."""
    lines = []
    if check:
        tau = "-" if check["kendall_tau"] is None else f"{check['kendall_tau']:+.2f}"
        noise = "-" if check["seed_noise_bpb"] is None else f"{check['seed_noise_bpb']:.3f}"
        lines.append(f"  proxy check on your text: {check['trained']} shapes trained to the last rung; Kendall tau "
                     f"of proxy bits/byte vs predicted loss {tau}; seed noise {noise} bits/byte; "
                     f"{len(check['flags'])} flag(s)")
        for shape in check["shapes"]:
            bpb = "-" if shape["proxy_bpb"] is None else f"{shape['proxy_bpb']:.3f}"
            state = {"COMPLETE": "", "PRUNED": " (stopped early)", "FAIL": " (failed)"}.get(shape["state"], "")
            lines.append(f"    {shape['shape']:<24} predicted loss {shape['predicted_loss']:.3f}  proxy {bpb} "
                         f"bits/byte{state}")
        lines += [f"    flag: {f}" for f in check["flags"][:8]]
        if len(check["flags"]) > 8:
            lines.append(f"    ... {len(check['flags']) - 8} more (--json)")
        if check["flags"]:
            lines.append("    (a proxy trained on a few hundred thousand tokens measures how fast a scaled-down shape "
                         "learns, which favours small, shallow shapes; the law predicts the loss after the "
                         "pretraining budget. Flags say where the two disagree on your text; they move no pick: "
                         "README, Quality law)")
    return lines


def _quality_label(result) -> str:
    quality = result.meta.quality or {}
    if quality.get("source") == "predicted_loss":
        return quality["description"]
    sources = {r["quality_source"] for r in result.pareto}
    if sources <= {"non_embedding_params"}:
        return ("non-embedding parameters (blind to shape at equal size"
                + ("; the proxy stage's held-out bits per byte is a quality that sees shape)" if result.proxy
                   else "; --quality law predicts the loss of each shape)"))
    return ", ".join(sorted(sources))


def _write_report(result, report_dir):
    """(index.html path, None, None), (None, why not, None), or (None, why not, the error) when the report
    could not be written (a read-only or full folder)."""
    from pathlib import Path

    from nas.core.errors import NasUserError
    from nas.core.paths import default_report_dir
    from nas.study.storage import MEMORY_STORAGES

    if result.storage in MEMORY_STORAGES:
        return None, "not written (an in-memory study cannot be reread; pass a --storage)", None
    if not result.pareto:
        return None, "not written (no feasible trial)", None
    from nas.report import build_report

    out = Path(report_dir) if report_dir else default_report_dir(result.study_name)
    try:
        return build_report(result.storage, result.study_name, out), None, None
    except NasUserError as exc:
        return None, f"not written ({exc})", str(exc)


def summary_text(result) -> str:
    s = result.states
    head = (f"{'interrupted after' if result.interrupted else 'evaluated'} {result.trials_new} new configs "
            f"({result.trials_total} in the study; {sum(s.values())} Optuna trials: {s.get('COMPLETE', 0)} complete, "
            f"{s.get('FAIL', 0)} failed) in {result.seconds:.1f} s")
    lines = [head] + list(result.notes) + [f"warning: {w}" for w in result.warnings]
    exact = result.exact
    if exact is not None:
        from nas.study.schema import FOUND_BY_EXACT

        found = sum(1 for r in result.pareto if r["found_by"] != FOUND_BY_EXACT)
        lines.append(f"exact front (all {exact.space_size} configs predicted, {exact.feasible} feasible): "
                     f"{len(exact.arch_ids)} shapes; the sampler found {found}"
                     + (f", {result.exact_added} added from the enumeration" if result.exact_added else "")
                     + (f"; sampler hypervolume {result.hypervolume_ratio:.3f} of exact"
                        if result.hypervolume_ratio is not None else ""))
    depths = sorted(r["arch"]["num_layers"] for r in result.pareto)
    lines.append(f"Pareto set: {len(result.pareto)} shapes "
                 f"({', '.join(o.label + ' ' + o.direction[:3] for o in result.meta.objectives)})"
                 + (f", {depths[0]}-{depths[-1]} layers (median {depths[len(depths) // 2]})" if depths else ""))
    return "\n".join(lines)


def proxy_text(summary) -> str:
    outcome = summary.outcome
    states = outcome.states if outcome else {}
    lines = [f"proxy stage ({summary.study_name}): {summary.chosen} shapes chosen from {summary.candidates:,} "
             f"candidates; {states.get('COMPLETE', 0)} trained to the last rung, {states.get('PRUNED', 0)} stopped "
             f"early by successive halving, {states.get('FAIL', 0)} failed"
             + (f", {states.get('WAITING', 0) + states.get('RUNNING', 0)} still queued or running"
                if outcome and not outcome.done else "")
             + (f"; this worker trained {outcome.trained} in {outcome.seconds:.0f} s" if outcome else "")]
    for row in summary.pruned:
        lines.append(f"  stopped at rung {row['rung']}: {row['shape']} ({row['val_bpb']:.3f} bits/byte): "
                     f"{row['reason']}")
    for row in summary.failed:
        lines.append(f"  failed: {row['shape']} (trial {row['trial']}): {row['reason']}")
    if summary.noise is not None:
        lines.append(f"seed noise: {summary.noise:.3f} bits/byte (median |seed 0 - seed 1| of the shapes at the last "
                     "rung); the picks treat smaller differences as ties")
    lines.append(f"Proxy Pareto set: {len(summary.pareto)} shapes (held-out bits per byte vs "
                 f"{', '.join(o.label for o in summary.objectives[1:])})")
    return "\n".join(lines)


def result_to_json(result) -> dict:
    exact = result.exact
    return {
        "study": result.study_name,
        "storage": result.storage,
        "targets": list(result.meta.targets),
        "space": result.meta.space,
        "precision": result.meta.precision,
        "prompt_len": result.meta.prompt_len,
        "context_len": result.meta.context_len,
        "objectives": [{"label": o.label, "metric": o.metric, "direction": o.direction, "target": o.target}
                       for o in result.meta.objectives],
        "constraints": result.meta.constraints,
        "latency_sources": result.meta.latency_sources,
        "latency_errors": result.meta.latency_errors,
        "latency_models": result.meta.latency_models,
        "quality": result.meta.quality,
        "warnings": list(result.warnings),
        "trials_total": result.trials_total,
        "trials_new": result.trials_new,
        "states": result.states,
        "interrupted": result.interrupted,
        "seconds": round(result.seconds, 3),
        "exact_front": None if exact is None else {**exact.to_user_attrs(), "added_as_trials": result.exact_added},
        "hypervolume_ratio": result.hypervolume_ratio,
        "pareto": result.pareto,
        "proxy": None if result.proxy is None else {
            "study": result.proxy.study_name, "chosen": result.proxy.chosen, "candidates": result.proxy.candidates,
            "states": result.proxy.outcome.states if result.proxy.outcome else None,
            "done": result.proxy.outcome.done if result.proxy.outcome else False,
            "pareto": result.proxy.pareto, "pruned": result.proxy.pruned, "failed": result.proxy.failed,
            "seed_noise_bpb": result.proxy.noise},
    }
