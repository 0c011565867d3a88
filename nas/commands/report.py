"""`nas report`: plots, tables and a self-contained index.html for a study."""

from __future__ import annotations

import argparse

from nas.commands._common import add_json_flag, emit

HELP = "write a study's Pareto report: plots, tables, index.html"
DESCRIPTION = """Write a report folder for a study written by `nas search`:

  pareto_decode.{png,svg}   quality vs decode tokens/s, one panel per target, picks marked
  pareto_prefill.{png,svg}  quality vs prefill tokens/s
  hypervolume.{png,svg}     search progress per target
  parity_<target>.*         predicted vs measured latency, for measured or calibrated targets
  pareto.csv, pareto.md     the Pareto set: shape, parameters, memory, prefill/decode figures, quality
  index.html                all of it in one file, no network needed, readable on a phone

Quality is the loss each shape is predicted to reach after the study's --train-tokens (the quality law,
`nas quality`); --train-tokens here reports the same study at another budget. Published models (MobileLLM,
SmolLM, PhoneLM, Qwen2.5, Llama 3.2) are drawn on every front at the speed and predicted loss nas predicts for
them. On the proxy fronts (quality = a proxy's held-out bits per byte) they are dashed lines at
their speed unless trained: --landmark-quality trains each one's proxy exactly as the study's shapes were trained
(same scaling rule, budget, seeds and corpus; minutes on a laptop CPU, stored in the study so it is done once)
and draws it at its proxy quality.

Default folder: runs/reports/<study>.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, help="study name (as given to or printed by `nas search`)")
    parser.add_argument("--storage", help="Optuna storage URL or journal file (default: sqlite:///runs/nas.db)")
    parser.add_argument("--out", help="report folder (default: runs/reports/<study>)")
    parser.add_argument("--landmark-quality", action="store_true",
                        help="train the published models' proxies under the study's proxy settings and place them "
                             "at their proxy quality (stored in the study: once per study)")
    parser.add_argument("--data", metavar="PATH",
                        help="with --landmark-quality: the text the study's proxies were trained on, when it was "
                             "not the shipped corpus")
    parser.add_argument("--train-tokens", metavar="D",
                        help="report the predicted losses at this pretraining budget (1T, 300B, 2e11) instead of "
                             "the study's --train-tokens")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nas.core.paths import default_report_dir, default_storage
    from nas.quality.model import parse_train_tokens
    from nas.report import build_report, prepare_dir
    from nas.study.read import landmark_scores, proxy_stage_of
    from nas.study.schema import check_study_name

    train_tokens = None if args.train_tokens is None else parse_train_tokens(args.train_tokens)
    check_study_name(args.study, proxy_ok=True)  # before it names a folder: the report stays in runs/reports
    out = Path(args.out) if args.out else default_report_dir(args.study)
    storage = args.storage or default_storage()
    if args.landmark_quality:
        prepare_dir(out)  # an unwritable folder is refused before minutes of training
        _train_landmarks(storage, args.study, args.data, args.progress and not args.json)
    index = build_report(storage, args.study, out, train_tokens=train_tokens)
    files = sorted(str(p) for p in index.parent.iterdir() if p.is_file() and not p.name.startswith("."))
    proxy = proxy_stage_of(storage, args.study)
    scores = {} if proxy is None else landmark_scores(proxy)
    lines = [f"report written: {index}"]
    if scores:
        lines.append("published models' proxies (trained as the study's shapes were; held-out bits per byte): "
                     + ", ".join(f"{name} {row['val_bpb']:.3f}" if "val_bpb" in row else f"{name} failed"
                                 for name, row in scores.items()))
    emit(args, {"study": args.study, "index": str(index), "files": files, "landmark_proxy": scores},
         "\n".join(lines))
    return 0


def _train_landmarks(storage: str, study_name: str, data: str | None, progress: bool) -> None:
    """--landmark-quality: the published models trained as proxies under the study's proxy settings, stored on
    its proxy stage (`nas.proxy.landmarks`), at the lengths the search placed them at."""
    from nas.core.errors import NasUserError
    from nas.core.landmarks import landmark_configs
    from nas.proxy.landmarks import train_landmarks
    from nas.study.read import load_study, proxy_stage_of, read_study

    meta = read_study(load_study(storage, study_name)).meta
    proxy = proxy_stage_of(storage, study_name)
    if proxy is None:
        raise NasUserError(f"--landmark-quality: study {study_name!r} has no proxy stage (it was searched with "
                           "--no-proxy), so there is no proxy quality to place the landmarks at")
    train_landmarks(proxy, landmark_configs(meta.prompt_len, meta.context_len), data, progress=progress)
