"""`nas predict`: latency, throughput and memory of one architecture on one or more targets."""

from __future__ import annotations

import argparse
from typing import Any

from nas.commands._common import add_arch_arguments, add_json_flag, add_train_tokens_flag, arch_from_args, emit
from nas.core.accounting import PRECISIONS, activation_precision, kv_bytes_per_element
from nas.core.counts import format_count

HELP = "predict prefill/decode latency and memory of one architecture on targets"
DESCRIPTION = """\
Predict time to first token (prefill of a prompt of --prompt-len tokens), one decode step with
--context-len tokens in the KV cache, tokens/s of each, and the memory footprint (weights at the
precision + KV cache at the deployed graph's type + working memory) of one architecture, on each --target.

It also prints the loss the architecture is predicted to reach after --train-tokens pretraining tokens (the
quality law fitted to published training runs, `nas quality`), with its band (--json: "quality").

Every latency says where it comes from: "measured" (a predictor fitted on this machine's ONNX Runtime
measurements), "calibrated" (fitted on measurements imported from the device) or "analytic, uncalibrated"
(a roofline from the device's spec sheet, or from this host's probes). A warning says when a prediction is
extrapolated: lengths beyond the architecture's max_seq_len (a decode step after C cached tokens needs C + 1
positions), or, for a fitted predictor, prompt/context lengths or a parameter count outside what it was
measured on (also in --json, "warnings" per target).

Examples:
  nas predict --target pixel8 --hidden-size 576 --layers 30 --heads 9 --kv-heads 3 --ffn 1536 --vocab-size 49152
  nas predict --target pixel8 --target host-cpu config.json --prompt-len 256 --json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", action="append", required=True, metavar="NAME",
                        help="target device (repeat for several); `nas targets` lists them")
    parser.add_argument("--prompt-len", type=int, default=512, help="prompt tokens for prefill (default 512)")
    parser.add_argument("--context-len", type=int, default=2048,
                        help="tokens in the KV cache for one decode step (default 2048)")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="weight precision (default: each target's default)")
    parser.add_argument("--provider", help="ONNX Runtime execution provider (default: each target's first)")
    add_train_tokens_flag(parser)
    add_arch_arguments(parser)
    add_json_flag(parser)


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def predict_one(arch, target_name: str, prompt_len: int, context_len: int, precision: str | None,
                provider: str | None) -> dict[str, Any]:
    """Everything `nas predict` reports for one target (also used by tests)."""
    from nas.core.arch import ArchBatch
    from nas.latency.registry import load_latency_model
    from nas.targets import load_target

    target = load_target(target_name)
    model = load_latency_model(target, precision, provider)
    out = model.predict(ArchBatch.from_configs([arch]), prompt_len, context_len)
    prefill_ms = float(out["prefill_ms"][0])
    decode_ms = float(out["decode_ms"][0])
    weights = arch.weight_bytes(model.precision)
    kv = arch.kv_cache_bytes(context_len, kv_bytes_per_element(model.precision))  # the deployed graph's type
    total = arch.memory_bytes(model.precision, prompt_len, context_len)
    budget = target.memory_budget_bytes
    note = model.note
    warnings = model.extrapolation(arch, prompt_len, context_len)
    return {
        "target": target.name,
        "display_name": target.display_name,
        "precision": model.precision,
        "provider": model.provider,
        "latency_source": model.source,
        "note": note,
        "warnings": warnings,
        "prefill_ms": prefill_ms,
        "ttft_ms": prefill_ms,
        "prefill_tokens_per_s": prompt_len * 1000.0 / prefill_ms,
        "decode_ms": decode_ms,
        "decode_tokens_per_s": 1000.0 / decode_ms,
        "memory_bytes": {"total": total, "weights": weights, "kv_cache": kv, "working": total - weights - kv},
        "memory_budget_bytes": budget,
        "fits_memory_budget": None if budget is None else bool(total <= budget),
        "model": {k: v for k, v in model.describe().items() if k not in ("target", "precision", "provider",
                                                                         "latency_source", "note")},
    }


def _text(arch, prompt_len: int, context_len: int, results: list[dict[str, Any]], notes: list[str],
          quality_lines: list[str]) -> str:
    lines = [f"{arch.short_tag}  (arch {arch.arch_id}, {format_count(arch.num_params)} params)  "
             f"prompt {prompt_len} tokens, context {context_len} tokens", *quality_lines]
    for r in results:
        mem = r["memory_bytes"]
        lines.append("")
        lines.append(f"{r['target']}  ({r['display_name']}; {r['precision']}, {r['provider']})  "
                     f"latency: {r['latency_source']}")
        lines.append(f"  prefill  {r['prefill_ms']:10.2f} ms         {r['prefill_tokens_per_s']:10.1f} tokens/s")
        lines.append(f"  decode   {r['decode_ms']:10.2f} ms/token   {r['decode_tokens_per_s']:10.1f} tokens/s")
        budget = ""
        if r["memory_budget_bytes"]:
            verdict = "fits" if r["fits_memory_budget"] else "EXCEEDS"
            budget = f"  ({verdict} the {_mib(r['memory_budget_bytes'])} budget)"
        lines.append(f"  memory   {_mib(mem['total'])}{budget}")
        lines.append(f"           = weights {_mib(mem['weights'])} ({r['precision']}) + KV cache "
                     f"{_mib(mem['kv_cache'])} ({activation_precision(r['precision'])}, {context_len} tokens) + "
                     f"working {_mib(mem['working'])}")
        if r["note"]:
            lines.append(f"  note: {r['note']}")
        for warning in r["warnings"]:
            lines.append(f"  warning: {warning}")
    for note in notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from nas.core.limits import MAX_TOKENS, check_int

    for name in ("prompt_len", "context_len"):
        check_int(getattr(args, name), f"--{name.replace('_', '-')}", 1, MAX_TOKENS)
    from nas.quality.model import load_quality_model

    quality = load_quality_model(args.train_tokens)
    arch = arch_from_args(args)
    targets = list(dict.fromkeys(args.target))
    results = [predict_one(arch, t, args.prompt_len, args.context_len, args.precision, args.provider)
               for t in targets]
    notes: list[str] = []  # per-target warnings (lengths beyond max_seq_len, outside a fitted range) are in each
    data = {"arch": arch.to_dict(), "arch_id": arch.arch_id, "num_params": arch.num_params,
            "prompt_len": args.prompt_len, "context_len": args.context_len, "notes": notes,
            "quality": quality.prediction(arch), "targets": {r["target"]: r for r in results}}
    emit(args, data, _text(arch, args.prompt_len, args.context_len, results, notes, quality.prediction_text(arch)))
    return 0
