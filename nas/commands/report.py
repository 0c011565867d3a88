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

Default folder: runs/reports/<study>.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, help="study name (as given to or printed by `nas search`)")
    parser.add_argument("--storage", help="Optuna storage URL or journal file (default: sqlite:///runs/nas.db)")
    parser.add_argument("--out", help="report folder (default: runs/reports/<study>)")
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nas.core.paths import default_report_dir, default_storage
    from nas.report import build_report

    out = Path(args.out) if args.out else default_report_dir(args.study)
    index = build_report(args.storage or default_storage(), args.study, out)
    files = sorted(str(p) for p in index.parent.iterdir() if p.is_file() and not p.name.startswith("."))
    emit(args, {"study": args.study, "index": str(index), "files": files}, f"report written: {index}")
    return 0
