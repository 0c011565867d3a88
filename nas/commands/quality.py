"""`nas quality`: the law that predicts a shape's pretraining loss, the published runs behind it, and its refit."""

from __future__ import annotations

import argparse

from nas.commands._common import add_json_flag, emit

HELP = "show the quality law (predicted pretraining loss from published training runs), or refit it"
DESCRIPTION = """\
Show the quality law nas ranks shapes by, or fit it again from the published runs it ships.

  nas quality                        the law, its data, its leave-one-study-out accuracy and band
  nas quality --json
  nas quality fit                    refit from quality_models/published_runs.{toml,csv}; writes the fit file
  nas quality fit --out my_fit.json --bootstrap 20

The law predicts the loss (nats per token, on the reference study's data and tokenizer) a shape reaches after
D training tokens (--train-tokens of `nas search`, `nas predict`, `nas report`):

  loss = E + B * (D / 1e10)^-beta + A * (N / 1e8)^-alpha + C * layers^-gamma

(the terms of the shipped form; `nas quality` prints them). Every published study has its own offset and token
term (data and tokenizers differ); the size and depth terms are shared. N counts the non-embedding parameters
plus two embedding tables (input and head) at the reference tokenizer's vocabulary, tied or not: a width
credit, the same for a tied and an untied shape. An untied head, a larger vocabulary, kv heads, FFN kind or
ratio and head_dim earn nothing beyond the parameters they add, because no published run here isolates them
("no published evidence"). The form is chosen among candidates by leave-one-study-out order accuracy, never by
in-sample fit; the band (90% of held-out errors of predicted loss differences) is where two predictions tie.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=("show", "fit"), default="show",
                        help="show (default) or fit")
    parser.add_argument("--out", metavar="PATH", help="fit: where to write the fit (default: the shipped "
                                                      "quality_models/quality_fit.json)")
    parser.add_argument("--bootstrap", type=int, default=None, metavar="N",
                        help="fit: bootstrap refits on resampled shapes, for how stable a pick is (default 100)")
    parser.add_argument("--studies", metavar="TOML", help="fit: published_runs.toml to fit instead of the shipped one")
    parser.add_argument("--runs", metavar="CSV", help="fit: published_runs.csv to fit instead of the shipped one")
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from nas.core.errors import NasUserError
    from nas.core.paths import check_can_create
    from nas.quality.model import BOOTSTRAP, fit_path, fit_quality, load_fit, write_fit
    from nas.quality.runs import load_runs

    if args.action == "fit":
        bootstrap = BOOTSTRAP if args.bootstrap is None else args.bootstrap
        if not 0 <= bootstrap <= 10_000:
            raise NasUserError(f"--bootstrap must be an integer from 0 to 10000, got {bootstrap}")
        out = Path(args.out) if args.out else fit_path()
        if out.is_dir():  # refused before a minute of fitting, not after
            raise NasUserError(f"cannot write the quality fit to {out}: it is a folder, not a file")
        check_can_create(out.parent, "the quality fit")
        runs = load_runs(args.studies, args.runs)
        result = fit_quality(runs, bootstrap, log=lambda line: print(line, file=sys.stderr))
        path = write_fit(result, out)
        emit(args, {**result, "path": str(path)}, show_text(result) + f"\nwritten to {path}")
        return 0
    for name in ("out", "studies", "runs", "bootstrap"):
        if getattr(args, name) is not None:
            raise NasUserError(f"--{name} is an option of `nas quality fit`, not of `nas quality show`")
    result = load_fit()
    emit(args, result, show_text(result))
    return 0


def show_text(fit: dict) -> str:
    from nas.core.counts import format_count
    from nas.quality.law import FittedLaw

    law = FittedLaw.from_dict(fit["law"])
    ref = law.groups[fit["reference_group"]]
    lines = [f"quality law: {law.form.name}, fitted to published training runs",
             f"  reference: {fit['reference_group']} (predicted losses are nats/token on its data and tokenizer, "
             f"vocabulary {fit['reference_vocab']:,})",
             "  shared: " + ", ".join(f"{k} {v:.4g}" for k, v in law.params.items()),
             "  reference group: " + ", ".join(f"{k} {v:.4g}" for k, v in ref.items()),
             f"  band: {fit['band_nats']:.3f} nats (90% of held-out errors of predicted loss differences between "
             "neighbouring shapes); differences inside it are ties",
             f"  chosen by: {fit['chosen_by']}", "", "published runs fitted (finished runs only):"]
    for name, s in fit["studies"].items():
        lines.append(f"  {name:<12} {s['shapes']:>3} shapes {s['runs_fitted']:>4} runs  {s['metric'][:90]}")
    r = fit["ranges"]
    lines.append(f"  covering {format_count(r['num_params'][0])}-{format_count(r['num_params'][1])} parameters, "
                 f"{r['num_layers'][0]:.0f}-{r['num_layers'][1]:.0f} layers, {format_count(r['tokens'][0])}-"
                 f"{format_count(r['tokens'][1])} tokens, up to {r['tokens_per_param'][1]:,.0f} tokens per parameter")
    lines += ["", "leave-one-study-out (each study predicted by a law fitted on the others; pairs of runs at equal "
                  "tokens; order accuracy / median |error of the predicted difference| in nats):",
              f"  {'form':<44} {'equal size (total +-10%)':>26} {'non-emb within 1.25x':>22} {'band':>7} "
              f"{'inside':>7}"]
    for e in fit["evaluations"]:
        eq, ne = e["overall"]["equal_size"], e["overall"]["nonemb"]
        mark = "*" if e["form"] == law.form.name else " "
        lines.append(f"{mark} {e['form']:<44} {_pair(eq):>26} {_pair(ne):>22} {e['band_nats']:>7.3f} "
                     f"{_share(e['overall']['neighbours']['within_band']):>7}")
    base = fit["evaluations"][0]["params_baseline"]
    lines.append(f"  {'parameter count (more total parameters = lower loss)':<44} "
                 f"{_pair(base['equal_size']):>26} {_pair(base['nonemb']):>22}")
    lines.append("  (* the chosen form; 'inside': share of a study's held-out differences within the band computed "
                 "without that study)")
    lines += ["", "no published evidence (the law gives these no term of their own):"]
    lines += [f"  {k}: {v}" for k, v in fit["no_evidence"].items()]
    return "\n".join(lines)


def _pair(score: dict) -> str:
    if not score["pairs"]:
        return "no pairs"
    err = "" if score["median_abs_error"] is None else f" / {score['median_abs_error']:.4f}"
    return f"{score['order_accuracy']:.3f}{err} (n={score['pairs']})"


def _share(value) -> str:
    return "-" if value is None else f"{value:.0%}"
