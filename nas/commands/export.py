"""`nas export`: one architecture from a study, as a trainer's config."""

from __future__ import annotations

import argparse

from nas.commands._common import add_json_flag, emit

HELP = "export a study's architecture to Hugging Face, LitGPT, nanoGPT or nas JSON"
DESCRIPTION = """Export one architecture of a study as a config a trainer reads.

Choose it by trial number, by arch id (a unique prefix is enough), or let nas pick from the Pareto set
(--pick): fastest = highest decode tokens/s on the study's first target; best-quality = highest quality;
knee = the best trade between the two (see `nas report`); predicted losses within the quality law's band are
ties, won by the faster shape. nas says which trial it picked. --pick chooses on the study's front of
predicted loss (what `nas search` recommends from; a pick the proxy check moved is exported by the --trial
and --study `nas search` printed); a study searched with --quality params and a proxy stage picks on its
proxy-trained front (study <study>:proxy). --trial and --arch-id look in the study named.

Formats (file written into --out):
  hf       config.json      LlamaConfig, or Qwen2Config when the shape has qkv bias
  litgpt   model_config.yaml  LitGPT Config fields (litgpt.Config.from_file)
  nanogpt  train_nas.py     nanoGPT config/train_*.py style; shapes nanoGPT cannot build are refused
  json     arch.json        the ArchConfig itself, for `nas inspect` and `nas predict`
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, help="study name")
    parser.add_argument("--storage", help="Optuna storage URL or journal file (default: sqlite:///runs/nas.db)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--trial", type=int, help="trial number")
    which.add_argument("--arch-id", help="architecture id (or a unique prefix)")
    which.add_argument("--pick", choices=["fastest", "best-quality", "knee"],
                       help="pick from the Pareto set instead of naming a trial")
    parser.add_argument("--format", required=True, choices=["hf", "litgpt", "nanogpt", "json"], dest="fmt")
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--name", help="model name written into the LitGPT config (default: nas-<arch id>)")
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    from nas.core.counts import format_count
    from nas.core.errors import NasUserError
    from nas.core.paths import default_storage
    from nas.export import choose_trial, export_arch
    from nas.study.read import load_study, proxy_stage_of, read_study

    if args.trial is None and args.arch_id is None and args.pick is None:
        raise NasUserError("say which shape to export: --trial N, --arch-id ID, or "
                           "--pick fastest|best-quality|knee (nas does not pick unless asked)")
    storage = args.storage or default_storage()
    trials = read_study(load_study(storage, args.study))
    ranked_by_law = (trials.meta.quality or {}).get("source") == "predicted_loss"
    if args.pick is not None and not ranked_by_law:  # ranked by parameter count: the proxy front recommends
        proxy = proxy_stage_of(storage, args.study)
        proxy = None if proxy is None else read_study(proxy)
        if proxy is not None and proxy.points:
            trials = proxy
    point, how = choose_trial(trials, trial=args.trial, arch_id=args.arch_id, pick=args.pick)
    if trials.name != args.study:
        how += f" (proxy-trained front, study {trials.name})"
    result = export_arch(point.record.arch, args.fmt, args.out, name=args.name)
    notes = list(result.notes)
    if not point.feasible:
        reasons = "; ".join(point.record.violations) or "Optuna constraint violated"
        notes.insert(0, f"this shape breaks the study's constraints: {reasons}")
    data = {"study": trials.name, "trial": point.number, "chosen_by": how, "arch_id": point.arch_id,
            "shape": point.shape, "num_params": point.record.arch.num_params, "format": args.fmt,
            "path": str(result.path), "feasible": point.feasible, "notes": notes,
            "arch": point.record.arch.to_dict()}
    text = [f"exported {how}: {point.shape} ({format_count(point.record.arch.num_params)} parameters, "
            f"arch id {point.arch_id})"]
    text += [f"note: {note}" for note in notes]
    text.append(f"wrote {result.path}")
    emit(args, data, "\n".join(text))
    return 0
