"""Pieces several subcommands share: --json output, reading an ArchConfig from flags or files."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from nas.core.errors import NasUserError
from nas.core.limits import INT64_MAX, is_finite_number, shown
from nas.core.userfiles import read_json_file


def int_arg(text: str) -> int:
    """argparse type of every integer flag: an integer that fits int64. Python's int() takes any size, and
    numpy would raise OverflowError (or wrap around) on one past 2**63 - 1 far from the flag; each command then
    checks its own range (`nas.core.limits.check_int`)."""
    value = int(text)  # a ValueError is argparse's "invalid int value: 'TEXT'"
    if not -INT64_MAX <= value <= INT64_MAX:
        raise argparse.ArgumentTypeError(f"{shown(value)} is beyond the 64-bit integers nas takes "
                                         f"(at most {INT64_MAX:,})")
    return value


def float_arg(text: str) -> float:
    """argparse type of every number flag: a finite float. float() takes "inf", "nan" and 1e999 (inf)."""
    value = float(text)  # a ValueError is argparse's "invalid float value: 'TEXT'"
    if not is_finite_number(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


int_arg.__name__, float_arg.__name__ = "int", "float"  # argparse names the type in "invalid int value: ..."


def bound_number_flags(parser: argparse.ArgumentParser) -> None:
    """Give every `type=int` / `type=float` flag of `parser` the bounded types above: one check at the CLI
    boundary for every command, present and future."""
    for action in parser._actions:  # noqa: SLF001 -- argparse has no public way to list a parser's actions
        if action.type is int:
            action.type = int_arg
        elif action.type is float:
            action.type = float_arg


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    """Print `data` as JSON when --json was given, else the human-readable `text`."""
    if getattr(args, "json", False):
        json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(text.rstrip("\n") + "\n")


def add_train_tokens_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train-tokens", default="1T", metavar="D",
                        help="pretraining tokens the loss is predicted at: 1T, 300B, 2e11 (default 1T, MobileLLM's "
                             "budget); `nas quality` shows the law")


def add_arch_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags that describe one ArchConfig: a file (nas JSON or HF config.json) and/or explicit fields."""
    group = parser.add_argument_group("architecture (a file, flags, or a file overridden by flags)")
    group.add_argument("config", nargs="?", help="ArchConfig JSON (from `nas export --format json`) or HF config.json")
    group.add_argument("--hidden-size", type=int)
    group.add_argument("--layers", type=int, dest="num_layers")
    group.add_argument("--heads", type=int, dest="num_heads")
    group.add_argument("--kv-heads", type=int, dest="num_kv_heads")
    group.add_argument("--head-dim", type=int)
    group.add_argument("--intermediate-size", "--ffn", type=int, dest="intermediate_size")
    group.add_argument("--vocab-size", type=int)
    group.add_argument("--ffn-kind", choices=["swiglu", "reglu", "geglu", "gelu"])
    group.add_argument("--tie-embeddings", action=argparse.BooleanOptionalAction, default=None)
    group.add_argument("--qkv-bias", action=argparse.BooleanOptionalAction, default=None)
    group.add_argument("--max-seq-len", type=int)
    group.add_argument("--rope-theta", type=float)


_ARCH_FLAG_FIELDS = ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "intermediate_size",
                     "vocab_size", "ffn_kind", "tie_embeddings", "qkv_bias", "max_seq_len", "rope_theta")


def arch_from_args(args: argparse.Namespace):
    """Build the ArchConfig the user described; a file is read first, flags override its fields."""
    from nas.core.arch import ArchConfig

    fields: dict[str, Any] = {}
    if args.config:
        data = read_json_file(args.config, "config file")
        if not isinstance(data, dict):
            raise NasUserError(f"{args.config}: expected a JSON object, got {type(data).__name__}")
        fields = (ArchConfig.from_hf_config(data) if "model_type" in data else ArchConfig.from_dict(data)).to_dict()
        if getattr(args, "head_dim", None) is None and getattr(args, "num_heads", None) is not None:
            fields.pop("head_dim")  # re-derive from the new head count unless given
    for name in _ARCH_FLAG_FIELDS:
        value = getattr(args, name, None)
        if value is not None:
            fields[name] = value
    required = ("hidden_size", "num_layers", "num_heads", "intermediate_size")
    missing = [n for n in required if n not in fields]
    if missing:
        flags = ", ".join("--" + {"num_layers": "layers", "num_heads": "heads"}.get(n, n).replace("_", "-")
                          for n in missing)
        if fields:
            raise NasUserError(f"incomplete architecture: also give {flags} (or a config file)")
        raise NasUserError(f"no architecture given: pass a config file or the flags {flags}")
    return ArchConfig.from_dict(fields)


def list_or_show(args: argparse.Namespace, noun: str, example: str, list_fn, show_fn) -> int:
    """`nas NOUN [list]` lists, `nas NOUN show NAME` shows one; anything else is one clear line."""
    words = args.words
    if not words or words == ["list"]:
        return list_fn(args)
    if words[0] == "show" and len(words) == 2:
        return show_fn(args, words[1])
    if words[0] == "show":
        raise NasUserError(f"`nas {noun} show` takes exactly one name, e.g. `nas {noun} show {example}`")
    raise NasUserError(f"{' '.join(words)!r} is not a {noun} action; use `nas {noun}` or `nas {noun} show NAME`")
