"""`nas spaces`: the architecture search spaces, their size and shape."""

from __future__ import annotations

import argparse

from nas.commands._common import add_json_flag, emit, list_or_show

HELP = "list search spaces with their size, or show one space's dimensions and constraints"
DESCRIPTION = """List the search spaces (TOML files in search_spaces/, or your own file), or show one in full.

  nas spaces                       name, number of valid configs, parameter range
  nas spaces show mobilellm        dimensions, fixed fields, constraints, smallest and largest config
  nas spaces show my_space.toml --json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("words", nargs="*", metavar="show NAME", help="`show NAME|PATH` to print one space in full")
    add_json_flag(parser)


def _count(n: int | None) -> str:
    from nas.core.counts import format_count

    return "-" if n is None else format_count(n, 3)


def _arch_summary(arch) -> dict:
    return {"arch_id": arch.arch_id, "short_tag": arch.short_tag, "num_params": arch.num_params,
            "config": arch.to_dict()}


def _size_text(size: int | None, limit: int) -> str:
    """A space's size for people: exact, or "> limit" for a space too large to enumerate (JSON: null)."""
    return f"> {limit:,}" if size is None else f"{size:,}"


def _list(args) -> int:
    from nas.spaces import ENUMERATION_LIMIT, list_spaces

    data, rows = [], []
    for s in list_spaces():
        size = s.size(limit=ENUMERATION_LIMIT)
        low, high = s.params_range
        data.append({"name": s.name, "description": s.description, "size": size, "params_min": low,
                     "params_max": high, "dimensions": list(s.dimensions), "fingerprint": s.fingerprint,
                     "path": str(s.path)})
        rows.append([s.name, _size_text(size, ENUMERATION_LIMIT), s.range_text(compact=True), s.description])
    widths = [max(len(r[i]) for r in rows + [["NAME", "CONFIGS", "PARAMS", ""]]) for i in range(3)]
    lines = [f"{'NAME':<{widths[0]}}  {'CONFIGS':>{widths[1]}}  {'PARAMS':<{widths[2]}}  DESCRIPTION"]
    lines += [f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}" for r in rows]
    emit(args, data, "\n".join(lines))
    return 0


def _show(args, name: str) -> int:
    from nas.spaces import ENUMERATION_LIMIT, load_space

    s = load_space(name)
    size = s.size(limit=ENUMERATION_LIMIT)
    data = s.to_dict()
    data.update(size=size, size_limit=ENUMERATION_LIMIT)
    if size is not None:
        smallest, largest = s.smallest_largest()
        data.update(smallest=_arch_summary(smallest), largest=_arch_summary(largest))
    lines = [f"{s.name}: {s.description}", f"  file:        {s.path}", f"  fingerprint: {s.fingerprint[:16]}",
             f"  size:        {_size_text(size, ENUMERATION_LIMIT)} valid configs", "  dimensions:"]
    for d in s.dimensions.values():
        shown = (f"{d.low}..{d.high} step {d.step} ({len(d)} values)" if d.step
                 else ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in d.choices))
        lines.append(f"    {d.name:<16} {shown}")
    if "ffn_ratio" in s.dimensions:
        lines.append(f"    (intermediate_size = ffn_ratio * hidden_size rounded to a multiple of {s.ffn_multiple})")
    lines.append("  fixed:")
    lines += [f"    {k:<16} {str(v).lower() if isinstance(v, bool) else v}" for k, v in s.fixed.items()] or ["    -"]
    low, high = s.params_range
    lines.append(f"  constraints: params {'-' if low is None else f'{low:,}'} .. "
                 f"{'-' if high is None else f'{high:,}'}")
    if size is None:
        lines.append("  (too large to enumerate: nas search samples it and skips the exact front)")
    for label, key in (("smallest", "smallest"), ("largest", "largest")):
        if key not in data:
            continue
        arch = smallest if key == "smallest" else largest
        lines.append(f"  {label + ':':<12} {_count(arch.num_params)} params  {arch.short_tag}  "
                     f"{arch.attention_type} {arch.ffn_kind} {'tied' if arch.tie_embeddings else 'untied'}  "
                     f"id {arch.arch_id}")
    emit(args, data, "\n".join(lines))
    return 0


def run(args: argparse.Namespace) -> int:
    return list_or_show(args, "spaces", "tiny", _list, _show)
