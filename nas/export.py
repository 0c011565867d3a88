"""Export an ArchConfig to what trainers read: Hugging Face, LitGPT, nanoGPT, or nas's own JSON.

Every writer either produces a config the trainer builds into exactly this shape, or refuses with one line
naming what the trainer cannot express. Nothing is ever exported approximately without saying so.

- `hf`: `config.json` for LlamaConfig (Qwen2Config when the shape has qkv bias). transformers builds a model
  with exactly `ArchConfig.num_params` parameters. Plain-GELU FFNs have no Llama/Qwen2 form and are refused.
- `litgpt`: `model_config.yaml` in LitGPT's `Config` field names, loadable with
  `litgpt.Config.from_file(path)` (or as `model_config:` in a `litgpt pretrain --config` file).
  Mapping: n_layer=num_layers, n_embd=hidden_size, n_head=num_heads, n_query_groups=num_kv_heads,
  head_size=head_dim, intermediate_size, block_size=max_seq_len, vocab_size = padded_vocab_size = vocab_size
  (so LitGPT does not pad the vocabulary to a multiple of 512), rope_base=rope_theta, rotary_percentage=1.0,
  parallel_residual=false, bias=false, attn_bias=qkv_bias (bias on the fused qkv projection only),
  lm_head_bias=false, norm_class_name=RMSNorm, norm_eps=rms_norm_eps, and the FFN: swiglu -> LLaMAMLP,
  geglu -> GemmaMLP with gelu_approximate=tanh, gelu -> GptNeoxMLP (gelu_approximate=none).
  LitGPT has no gated-ReLU MLP, so reglu is refused. LitGPT's GPT has no weight-tying option: it always
  builds a separate lm_head. A tied shape is still exported (the blocks are identical) with a comment and a
  note giving the one line that re-ties the weights; without it the model has vocab_size * n_embd more
  parameters. The `name` never contains "Gemma" (LitGPT would then add a unit offset to RMSNorm).
- `nanogpt`: a `config/train_*.py`-style file (`n_layer = 12` lines) for nanoGPT's `train.py`. nanoGPT's model
  is MHA, a plain GELU MLP of width 4 * n_embd, tied embeddings, head size n_embd / n_head, LayerNorm and
  learned absolute positions. A shape needing anything else (GQA/MQA, a gated FFN, another FFN width,
  untied head, other head size, qkv bias) is refused by name. A shape that fits is exported with `bias = False`
  and a header saying what still differs: LayerNorm instead of RMSNorm (same parameter count without bias),
  learned positions instead of RoPE (+ block_size * n_embd parameters), and that train.py takes vocab_size
  from the dataset's meta.pkl (else 50304).
- `json`: the ArchConfig itself (`ArchConfig.from_json`), read by `nas inspect` and `nas predict`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.core.arch import ArchConfig
from nas.core.errors import NasUserError
from nas.core.paths import ensure_folder, write_atomic
from nas.core.trainers import unsupported
from nas.study.pareto import PICKS
from nas.study.read import PICK_TITLES, compute_picks, study_pareto_set

FORMATS = ("hf", "litgpt", "nanogpt", "json")
FILENAMES = {"hf": "config.json", "litgpt": "model_config.yaml", "nanogpt": "train_nas.py", "json": "arch.json"}

_LITGPT_MLP = {"swiglu": "LLaMAMLP", "geglu": "GemmaMLP", "gelu": "GptNeoxMLP"}
_LITGPT_GELU = {"swiglu": "none", "geglu": "tanh", "gelu": "none"}


@dataclass(frozen=True)
class Exported:
    path: Path
    notes: tuple[str, ...] = ()  # what the user must know (printed by `nas export`)


# ----------------------------------------------------------------------------------------------- LitGPT
def litgpt_config(arch: ArchConfig, name: str | None = None) -> dict[str, Any]:
    """LitGPT `Config` fields for `arch`, in LitGPT's names; refuses what LitGPT cannot build."""
    problems = unsupported(arch, "litgpt")
    if problems:
        raise NasUserError(f"LitGPT cannot express {', '.join(problems)}; exportable kinds: {', '.join(_LITGPT_MLP)}")
    name = name or f"nas-{arch.arch_id}"
    if "gemma" in name.lower() or "olmo" in name.lower():
        raise NasUserError(f"LitGPT model name {name!r} must not contain 'Gemma' or 'OLMo' (LitGPT changes the "
                           "norm layers for those names)")
    rope = int(arch.rope_theta) if float(arch.rope_theta).is_integer() else arch.rope_theta
    return {
        "name": name,
        "block_size": arch.max_seq_len,
        "vocab_size": arch.vocab_size,
        "padded_vocab_size": arch.vocab_size,
        "n_layer": arch.num_layers,
        "n_embd": arch.hidden_size,
        "n_head": arch.num_heads,
        "n_query_groups": arch.num_kv_heads,
        "head_size": arch.head_dim,
        "intermediate_size": arch.intermediate_size,
        "mlp_class_name": _LITGPT_MLP[arch.ffn_kind],
        "gelu_approximate": _LITGPT_GELU[arch.ffn_kind],
        "norm_class_name": "RMSNorm",
        "norm_eps": arch.rms_norm_eps,
        "rotary_percentage": 1.0,
        "rope_base": rope,
        "parallel_residual": False,
        "bias": False,
        "attn_bias": arch.qkv_bias,
        "lm_head_bias": False,
    }


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, (bool, int)):
        return json.dumps(value)  # true / false and plain digits, the same in JSON and YAML
    if isinstance(value, float):
        # YAML 1.1 loaders (PyYAML, which LitGPT uses) read "1e-05" as a string: give the mantissa a dot.
        mantissa, e, exponent = repr(value).partition("e")
        if e and "." not in mantissa:
            mantissa += ".0"
        return mantissa + e + exponent
    return json.dumps(str(value))  # a double-quoted JSON string is a valid YAML scalar


def to_yaml(mapping: dict[str, Any], header: str = "") -> str:
    """Flat key: scalar YAML (all LitGPT needs here), written by hand to avoid a PyYAML dependency."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    lines += [f"{key}: {_yaml_scalar(value)}" for key, value in mapping.items()]
    return "\n".join(lines) + "\n"


def _litgpt_text(arch: ArchConfig, name: str | None) -> tuple[str, tuple[str, ...]]:
    fields = litgpt_config(arch, name)
    header = [f"LitGPT model config exported by nas from ArchConfig {arch.arch_id} ({arch.short_tag}).",
              "Load: litgpt.Config.from_file('model_config.yaml'), or put these keys under `model_config:`",
              "in a `litgpt pretrain --config` file."]
    notes: tuple[str, ...] = ()
    if arch.tie_embeddings:
        extra = arch.vocab_size * arch.hidden_size
        header += ["",
                   "This shape ties the LM head to the token embedding, but LitGPT's GPT always builds a separate",
                   f"lm_head (+{extra:,} parameters). To keep it tied, after building the model run:",
                   "    model.lm_head.weight = model.transformer.wte.weight",
                   f"Tied, the model has {arch.num_params:,} parameters; untied, {arch.num_params + extra:,}."]
        notes = (f"LitGPT has no weight-tying option: re-tie with `model.lm_head.weight = "
                 f"model.transformer.wte.weight` after building, or the model has {extra:,} more parameters",)
    else:
        header += ["", f"The model has {arch.num_params:,} parameters."]
    return to_yaml(fields, "\n".join(header)), notes


# ----------------------------------------------------------------------------------------------- nanoGPT
def nanogpt_config(arch: ArchConfig) -> dict[str, Any]:
    problems = unsupported(arch, "nanogpt")
    if problems:
        instead = {"gelu": "litgpt", "reglu": "hf"}.get(arch.ffn_kind, "hf or litgpt")
        raise NasUserError(f"nanoGPT cannot express {', '.join(problems)}; export with --format {instead} instead")
    return {"n_layer": arch.num_layers, "n_head": arch.num_heads, "n_embd": arch.hidden_size,
            "block_size": arch.max_seq_len, "bias": False, "dropout": 0.0}


def _nanogpt_text(arch: ArchConfig) -> tuple[str, tuple[str, ...]]:
    fields = nanogpt_config(arch)
    wpe = arch.max_seq_len * arch.hidden_size
    header = [
        f"nanoGPT config exported by nas from ArchConfig {arch.arch_id} ({arch.short_tag}).",
        "Use: python train.py config/train_nas.py  (nanoGPT's configurator overrides train.py's globals)",
        "",
        "nanoGPT builds the same layer shapes, but not the same model:",
        "- LayerNorm instead of RMSNorm (with bias = False, the same parameter count);",
        f"- learned absolute positions instead of RoPE: +{wpe:,} parameters (block_size * n_embd);",
        f"- train.py takes vocab_size from the dataset's meta.pkl, else 50304; this shape assumes {arch.vocab_size}.",
        f"nas counts {arch.num_params:,} parameters for this shape (RoPE, vocab {arch.vocab_size}).",
    ]
    lines = [f"# {h}" if h else "#" for h in header] + [""]
    lines += [f"{k} = {v!r}" for k, v in fields.items()]
    lines.append(f"# vocab_size = {arch.vocab_size}  # not a train.py setting: comes from data/<dataset>/meta.pkl")
    notes = ("nanoGPT uses LayerNorm and learned positions instead of RMSNorm and RoPE "
             f"(+{wpe:,} position parameters); see the file header",)
    return "\n".join(lines) + "\n", notes


# ----------------------------------------------------------------------------------------------- writing
def render(arch: ArchConfig, fmt: str, name: str | None = None) -> tuple[str, tuple[str, ...]]:
    """(file text, notes) for `arch` in `fmt`; raises NasUserError for what the format cannot express."""
    if fmt == "hf":
        return json.dumps(arch.to_hf_config(), indent=2) + "\n", ()
    if fmt == "litgpt":
        return _litgpt_text(arch, name)
    if fmt == "nanogpt":
        return _nanogpt_text(arch)
    if fmt == "json":
        return arch.to_json(indent=2) + "\n", ()
    raise NasUserError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}")


def export_arch(arch: ArchConfig, fmt: str, out_dir: Path, name: str | None = None) -> Exported:
    """Write `arch` in `fmt` into `out_dir` (created); refuses before writing anything."""
    text, notes = render(arch, fmt, name)
    out_dir = Path(out_dir)
    path = out_dir / FILENAMES[fmt]
    ensure_folder(out_dir, "the export folder")
    write_atomic(path, text)  # a full disk leaves no half config behind (nor a config half replaced)
    return Exported(path, notes)


# ----------------------------------------------------------------------------------------------- choosing
def choose_trial(trials, trial: int | None = None, arch_id: str | None = None, pick: str | None = None):
    """The `TrialPoint` the user asked for, and a sentence saying how it was chosen.

    `trials` is `nas.study.read.StudyTrials`. Exactly one of trial, arch_id, pick must be given.
    """

    given = [x is not None for x in (trial, arch_id, pick)]
    if sum(given) != 1:
        raise NasUserError("say which shape to export: --trial N, --arch-id ID, or --pick fastest|best-quality|knee")
    if trial is not None:
        if trial not in trials.points:
            raise NasUserError(_why_not_complete(trials, trial))
        return trials.points[trial], f"trial {trial}"
    if arch_id is not None:
        matches = sorted(n for n, p in trials.points.items() if p.arch_id.startswith(arch_id.lower()))
        ids = {trials.points[n].arch_id for n in matches}
        if not matches:
            raise NasUserError(f"no complete trial of study {trials.name!r} has arch id {arch_id!r}")
        if len(ids) > 1:
            raise NasUserError(f"arch id prefix {arch_id!r} is ambiguous: {', '.join(sorted(ids)[:5])}")
        return trials.points[matches[0]], f"trial {matches[0]} (arch id {trials.points[matches[0]].arch_id})"
    if pick not in PICKS:
        raise NasUserError(f"--pick {pick!r} is not one of {', '.join(PICKS)}")
    picks = compute_picks(trials, study_pareto_set(trials))
    if pick not in picks:
        raise NasUserError(f"study {trials.name!r} has no feasible complete trial, so there is nothing to pick")
    n = picks[pick]
    return trials.points[n], (f"trial {n}, the {PICK_TITLES[pick]} pick of the Pareto set on "
                              f"{trials.meta.targets[0]}")


def _why_not_complete(trials, number: int) -> str:
    state = trials.trial_states.get(number)
    if state is None:
        if not trials.trial_states:
            return f"trial {number} is not in study {trials.name!r}: it has no trials"
        return (f"trial {number} is not in study {trials.name!r} (its trials are numbered "
                f"{min(trials.trial_states)} to {max(trials.trial_states)})")
    if state == "COMPLETE":
        return f"trial {number} of study {trials.name!r} carries no nas record, so it cannot be exported"
    return f"trial {number} of study {trials.name!r} is {state}, not COMPLETE; only complete trials can be exported"
