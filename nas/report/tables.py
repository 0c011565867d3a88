"""The Pareto-set table as CSV (full precision, for tools) and Markdown / HTML (rounded, for people)."""

from __future__ import annotations

import csv
import html
import io
from pathlib import Path
from typing import Any, Sequence

from nas.latency.uncertainty import show_plain
from nas.report.data import APPROXIMATE, Column


def format_cell(value: Any, fmt: str) -> str:
    if value is None:
        return "–"
    if fmt == APPROXIMATE and isinstance(value, (int, float)):
        return show_plain(float(value), None)
    if fmt and isinstance(value, (int, float)):
        return format(value, fmt)
    return str(value)


def to_csv(columns: Sequence[Column], rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([c.title for c in columns])
    for row in rows:
        writer.writerow(["" if row.get(c.key) is None else row.get(c.key) for c in columns])
    return buf.getvalue()


def to_markdown(columns: Sequence[Column], rows: Sequence[dict[str, Any]]) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    numeric = [bool(c.fmt) for c in columns]
    lines = ["| " + " | ".join(esc(c.title) for c in columns) + " |",
             "|" + "|".join("---:" if num else "---" for num in numeric) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(esc(format_cell(row.get(c.key), c.fmt)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def to_html(columns: Sequence[Column], rows: Sequence[dict[str, Any]]) -> str:
    head = "".join(f"<th>{html.escape(c.title)}</th>" for c in columns)
    body = []
    for row in rows:
        cls = ' class="pick"' if row.get("pick") else ""
        cells = "".join(
            f'<td class="{"num" if c.fmt else "txt"}">{html.escape(format_cell(row.get(c.key), c.fmt))}</td>'
            for c in columns)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


def write_tables(columns: Sequence[Column], rows: Sequence[dict[str, Any]], out_dir: Path,
                 stem: str = "pareto") -> list[Path]:
    csv_path, md_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    csv_path.write_text(to_csv(columns, rows))
    md_path.write_text(to_markdown(columns, rows))
    return [csv_path, md_path]
