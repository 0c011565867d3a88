"""`nas inspect`: one architecture's full accounting (parameters, FLOPs, weight and memory bytes)."""

from __future__ import annotations

import argparse

from nas.commands._common import add_arch_arguments, add_json_flag, add_train_tokens_flag, arch_from_args, emit

HELP = "print an architecture's parameters, FLOPs, weight bytes, KV cache and memory footprint"
DESCRIPTION = """Print the full accounting of one architecture, given by flags, a nas JSON file or an HF config.json.

  nas inspect --hidden-size 576 --layers 30 --heads 9 --kv-heads 3 --ffn 1536
  nas inspect config.json --prompt-len 256 --context-len 1024 --json
  nas inspect config.json --layers 12          (a file with fields overridden by flags)

It also prints the loss the architecture is predicted to reach after --train-tokens pretraining tokens
(the quality law, `nas quality`), with its band.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_arch_arguments(parser)
    parser.add_argument("--prompt-len", type=int, default=512, help="prompt tokens for prefill figures (default 512)")
    parser.add_argument("--context-len", type=int, default=2048,
                        help="tokens in the KV cache for decode figures (default 2048)")
    add_train_tokens_flag(parser)
    add_json_flag(parser)


def _mib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _gflops(n: int) -> str:
    return f"{n / 1e9:,.2f} GFLOPs"


def run(args: argparse.Namespace) -> int:
    from nas.core.counts import format_count
    from nas.core.limits import MAX_TOKENS, check_int

    for flag, value in (("--prompt-len", args.prompt_len), ("--context-len", args.context_len)):
        check_int(value, flag, 1, MAX_TOKENS)
    from nas.quality.model import load_quality_model

    quality = load_quality_model(args.train_tokens)
    arch = arch_from_args(args)
    acc = arch.accounting(args.prompt_len, args.context_len)
    data = {"config": arch.to_dict(), **acc, "quality": quality.prediction(arch)}
    attn = {"mha": "MHA (multi-head)", "mqa": "MQA (one kv head)",
            "gqa": f"GQA ({arch.num_heads // arch.num_kv_heads} query heads per kv head)"}[arch.attention_type]
    lines = [
        f"arch {arch.arch_id}  {arch.short_tag}",
        f"  shape:        hidden {arch.hidden_size}, {arch.num_layers} layers, {arch.num_heads} heads x "
        f"{arch.head_dim}, {arch.num_kv_heads} kv heads, FFN {arch.intermediate_size} ({arch.ffn_kind})",
        f"  attention:    {attn}",
        f"  vocab:        {arch.vocab_size:,}, embeddings {'tied' if arch.tie_embeddings else 'untied'}"
        f"{', qkv bias' if arch.qkv_bias else ''}, max_seq_len {arch.max_seq_len}",
        f"  parameters:   {format_count(acc['num_params'])} ({acc['num_params']:,}); "
        f"non-embedding {format_count(acc['num_non_embedding_params'])} ({acc['num_non_embedding_params']:,})",
        f"  prefill:      {_gflops(acc['prefill_flops'])} for a {args.prompt_len}-token prompt",
        f"  decode:       {_gflops(acc['decode_flops'])} per token with {args.context_len} tokens cached",
        f"  KV cache:     {_mib(acc['kv_cache_bytes']['fp16'])} in fp16 graphs, {_mib(acc['kv_cache_bytes']['fp32'])} "
        f"in fp32/int8/int4 graphs ({args.context_len} tokens)",
        "  weights / memory footprint (weights + KV cache + working memory):",
    ]
    for precision, weight in acc["weight_bytes"].items():
        lines.append(f"    {precision:<5} {_mib(weight):>11}  /  {_mib(acc['memory_bytes'][precision]):>11}")
    lines += quality.prediction_text(arch)
    emit(args, data, "\n".join(lines))
    return 0
