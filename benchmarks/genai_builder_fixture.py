"""Record what onnxruntime-genai's model builder makes for tiny Llama/Qwen2 configs (run in a venv with
onnxruntime-genai, transformers, tokenizers and torch; not the project's own venv).

    python benchmarks/genai_builder_fixture.py [--out tests/fixtures/genai_builder.json] [--keep DIR]

For each config and precision it saves a random-weight Hugging Face checkpoint plus a word-level tokenizer
made locally with `tokenizers`, runs
`python -m onnxruntime_genai.models.builder -i HF_DIR -o OUT -p PRECISION -e cpu`, and records the graph's
op-type histogram (with domains), initializer bytes, inputs and outputs (names, dtypes, shapes), the
attributes of the first GroupQueryAttention / MatMulNBits / GatherBlockQuantized node, and how far the logits
of nas's direct graph built from the same weights are from the builder graph's (largest absolute difference
over the largest absolute logit, prefill of 8 tokens and a decode step at context 8).
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIGS = {
    "llama-gqa-untied": dict(model_type="llama", vocab_size=256, hidden_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
                             tie_word_embeddings=False, max_position_embeddings=128, rms_norm_eps=1e-5,
                             rope_theta=10000.0),
    "llama-mqa-tied": dict(model_type="llama", vocab_size=256, hidden_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=1, intermediate_size=128,
                           tie_word_embeddings=True, max_position_embeddings=128, rms_norm_eps=1e-5,
                           rope_theta=10000.0),
    "qwen2-gqa-tied": dict(model_type="qwen2", vocab_size=256, hidden_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
                           tie_word_embeddings=True, max_position_embeddings=128, rms_norm_eps=1e-6,
                           rope_theta=1000000.0),
}
PRECISIONS = ("fp32", "fp16", "int8", "int4")


def save_checkpoint(name: str, cfg: dict, folder: Path) -> None:
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    cfg = dict(cfg)
    model_type = cfg.pop("model_type")
    config_cls = transformers.LlamaConfig if model_type == "llama" else transformers.Qwen2Config
    model_cls = transformers.LlamaForCausalLM if model_type == "llama" else transformers.Qwen2ForCausalLM
    config = config_cls(**cfg, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    model = model_cls(config)
    with torch.no_grad():  # transformers initialises biases to 0, and the builder leaves zero biases out
        for pname, p in model.named_parameters():
            if pname.endswith(".bias"):
                p.normal_(0, 0.02)
    model.save_pretrained(folder)
    vocab = {f"t{i}": i for i in range(cfg["vocab_size"])}
    vocab.update({"<unk>": 3})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="t1",
                                                eos_token="t2", pad_token="t0")
    fast.save_pretrained(folder)


def _shape(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def describe(onnx_path: Path) -> dict:
    import onnx
    from onnx import helper

    model = onnx.load(str(onnx_path))
    g = model.graph
    hist = collections.Counter((n.domain or "ai.onnx") + "::" + n.op_type for n in g.node)
    init_bytes = collections.Counter()
    for t in model.graph.initializer:
        dtype = helper.tensor_dtype_to_np_dtype(t.data_type)
        n = 1
        for d in t.dims:
            n *= d
        init_bytes[str(dtype)] += n * dtype.itemsize
    attrs = {}
    for n in g.node:
        if n.op_type in ("GroupQueryAttention", "MatMulNBits", "GatherBlockQuantized") and n.op_type not in attrs:
            attrs[n.op_type] = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            attrs[n.op_type] = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs[n.op_type].items()}
    def io(vs):
        return [{"name": v.name, "dtype": int(v.type.tensor_type.elem_type), "shape": _shape(v)} for v in vs]

    return {"ops": dict(sorted(hist.items())), "initializer_bytes": dict(sorted(init_bytes.items())),
            "initializer_bytes_total": sum(init_bytes.values()), "n_initializers": len(g.initializer),
            "inputs": io(g.input), "outputs": io(g.output), "attributes": attrs,
            "opsets": {o.domain or "ai.onnx": o.version for o in model.opset_import}}


def compare_outputs(hf_dir: Path, onnx_path: Path, cfg: dict, precision: str) -> dict:
    """Logits of the builder's graph and of nas's direct graph (nas.latency.graphs, built from the same
    checkpoint's weights) on the same prefill (8 tokens) and decode step (context 8): the largest absolute
    difference over the largest absolute logit. Needs nas importable (this script puts the repo on sys.path)."""
    import numpy as np
    import onnxruntime as ort
    import torch
    import transformers

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from nas.core.arch import ArchConfig
    from nas.latency import graphs

    arch = ArchConfig.from_hf_config(cfg)
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32)
    weights = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    weights.setdefault("lm_head.weight", weights["model.embed_tokens.weight"])
    direct = graphs.build_graph(arch, precision=precision, weights=weights)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sessions = [ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"]),
                ort.InferenceSession(direct.SerializeToString(), opts, providers=["CPUExecutionProvider"])]
    out = {}
    for phase in graphs.PHASES:
        feeds = graphs.graph_feeds(arch, phase, prompt_len=8, context_len=8, precision=precision)
        feeds = {k: (v.astype(np.float16) if precision == "fp16" and v.dtype == np.float32 else v)
                 for k, v in feeds.items()}
        names = {i.name for i in sessions[0].get_inputs()}
        if "position_ids" in names:  # the builder's CPU fp16 graph (MultiHeadAttention) takes positions
            start = 0 if phase == "prefill" else 8
            feeds["position_ids"] = np.arange(start, start + feeds["input_ids"].shape[1], dtype=np.int64)[None]
            if phase == "decode":  # and a past of exactly the cached tokens
                feeds = {k: (v[:, :, :8] if k.startswith("past_key_values") else v) for k, v in feeds.items()}
            else:
                feeds = {k: (v[:, :, :0] if k.startswith("past_key_values") else v) for k, v in feeds.items()}
        ref = sessions[0].run(["logits"], feeds)[0].astype(np.float32)
        ours_feeds = {k: v for k, v in feeds.items() if k != "position_ids"}
        if "position_ids" in names:
            ours_feeds = graphs.graph_feeds(arch, phase, prompt_len=8, context_len=8, precision=precision)
            ours_feeds["input_ids"] = feeds["input_ids"]
            for k, v in feeds.items():
                if k.startswith("past_key_values") and phase == "decode":
                    ours_feeds[k][:, :, :8] = v
        got = sessions[1].run(["logits"], ours_feeds)[0].astype(np.float32)
        out[phase] = float(np.abs(got - ref).max() / np.abs(ref).max())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="tests/fixtures/genai_builder.json")
    parser.add_argument("--keep", default=None, help="keep checkpoints and builder outputs in this folder")
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS))
    parser.add_argument("--precisions", nargs="*", default=list(PRECISIONS))
    args = parser.parse_args()
    import onnxruntime
    import onnxruntime_genai
    import transformers

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="genai_fixture_"))
    record = {"builder": f"onnxruntime-genai {onnxruntime_genai.__version__}",
              "onnxruntime": onnxruntime.__version__, "transformers": transformers.__version__,
              "command": "python -m onnxruntime_genai.models.builder -i HF_DIR -o OUT -p PRECISION -e cpu",
              "regenerate": "python benchmarks/genai_builder_fixture.py (in a venv with onnxruntime-genai)",
              "configs": {}, "models": {}}
    for name in args.configs:
        hf = root / name / "hf"
        if not (hf / "config.json").exists():
            save_checkpoint(name, CONFIGS[name], hf)
        record["configs"][name] = CONFIGS[name]
        for precision in args.precisions:
            out = root / name / precision
            cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(out),
                   "-p", precision, "-e", "cpu", "-c", str(root / name / "cache")]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            key = f"{name}/{precision}"
            if proc.returncode != 0 or not (out / "model.onnx").exists():
                record["models"][key] = {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
                print(key, "FAILED", record["models"][key]["error"], flush=True)
                continue
            record["models"][key] = describe(out / "model.onnx")
            try:
                diff = compare_outputs(hf, out / "model.onnx", CONFIGS[name], precision)
            except Exception as exc:  # noqa: BLE001 -- recorded: e.g. a graph ORT's CPU EP cannot run
                diff = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
            record["models"][key]["direct_vs_builder_logits_rel_max_diff"] = diff
            print(key, record["models"][key]["initializer_bytes_total"], record["models"][key]["ops"], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
