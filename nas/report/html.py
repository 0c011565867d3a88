"""A self-contained index.html: images embedded as base64 PNG, styles inline, no scripts, no network.

Readable on a phone: one column, images scale to the screen width, the wide table scrolls sideways.
"""

from __future__ import annotations

import base64
import html
import shlex
from pathlib import Path
from typing import Sequence

from nas.core.counts import format_count
from nas.core.paths import shipped
from nas.latency.uncertainty import band_for, legend, show
from nas.report import tables
from nas.report.data import Parity, ReportData
from nas.study.pareto import PICKS
from nas.study.read import PICK_TITLES


def _warnings(trials) -> str:
    """Where the search's latency predictions are extrapolated (outside a fitted model's range): shown on top."""
    found = (trials.search or {}).get("warnings") or []
    if not found:
        return ""
    items = "".join(f"<li>{html.escape(w)}</li>" for w in found)
    return f'<div class="warning"><b>Latency extrapolated</b> for these predictions:<ul>{items}</ul></div>'


def _css() -> str:
    """The report's stylesheet, shipped as data in reports/report.css (inlined: the page needs no network)."""
    return (shipped("reports") / "report.css").read_text(encoding="utf-8")


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    svg = path.with_suffix(".svg")
    link = f' <a href="{html.escape(svg.name)}">SVG</a>' if svg.is_file() else ""
    return (f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
            f'<figcaption class="note">{html.escape(alt)}.{link}</figcaption></figure>')


def _fmt(value, spec: str, unit: str = "") -> str:
    return "–" if value is None else f"{format(value, spec)}{unit}"


def _cards(data: ReportData, storage: str | None) -> str:
    if not data.picks:
        return '<p class="note">No feasible shape, so nothing to recommend (see notes below).</p>'
    t = data.first_target
    rows_by_trial = {r["trial"]: r for r in data.rows}
    out = []
    for name in PICKS:
        n = data.picks.get(name)
        if n is None:
            continue
        p = data.trials.points[n]
        row = rows_by_trial.get(n, {})
        fig = p.record.figures.get(t)
        also = [k for k, v in data.picks.items() if v == n and k != name]
        cmd = ["nas", "export", "--study", data.trials.name, "--trial", str(n), "--format", "hf",
               "--out", f"{data.trials.name.replace(':', '-')}-trial{n}"]
        if storage:
            cmd[4:4] = ["--storage", storage]
        items = [
            ("trial", f"#{n}" + (f" (also {', '.join(PICK_TITLES[a] for a in also)})" if also else "")),
            ("arch id", f"<code>{html.escape(p.arch_id)}</code>"),
            ("parameters", f"{format_count(p.record.arch.num_params)} ({p.record.arch.attention_type.upper()}, "
                           f"{html.escape(p.record.arch.ffn_kind)})"),
            ("quality", html.escape(f"{_fmt(row.get('quality'), '.4g')} — {data.quality_label.split(': ', 1)[-1]}")),
            (f"decode on {html.escape(t)}", "—" if fig is None else html.escape(
                show(fig.decode_tokens_per_s, band_for("decode_tokens_per_s", data.trials.meta.latency_errors.get(t)),
                     1) + " tokens/s")),
            (f"TTFT on {html.escape(t)}", "—" if fig is None else html.escape(
                show(fig.ttft_ms, band_for("ttft_ms", data.trials.meta.latency_errors.get(t)), 1)
                + f" ms ({data.trials.meta.prompt_len}-token prompt)")),
            (f"memory on {html.escape(t)}", _fmt(fig and fig.memory_mb, ".0f", " MB")),
        ]
        dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
        out.append(f'<div class="card {"knee" if name == "knee" else ""}"><h3>{html.escape(PICK_TITLES[name])}</h3>'
                   f'<div class="shape">{html.escape(p.shape)}</div><dl>{dl}</dl>'
                   f"<pre>{html.escape(shlex.join(cmd))}</pre></div>")
    return '<div class="cards">' + "".join(out) + "</div>"


def _parity_section(data: ReportData, images: dict[str, list[Path]]) -> str:
    parts = []
    for target, parity in data.parity.items():
        if isinstance(parity, Parity) and images.get(target):
            what = ("published measurements vs the analytic fit that left each architecture out"
                    if Path(parity.path).name == "published_fit.json" else
                    "predicted vs measured latency on held-out shapes")
            parts.append(_img(images[target][0], f"{target}: {what} (from {Path(parity.path).name})"))
        else:
            parts.append(f'<p class="note">{html.escape(target)}: no parity plot — {html.escape(str(parity))}.</p>')
    return "".join(parts) or '<p class="note">No target.</p>'


def _proxy_section(data: ReportData, images: Sequence[Path]) -> str:
    proxy = data.proxy
    if proxy is None and not data.runs:
        return ""
    states: dict[str, int] = {}
    for run in data.runs:
        states[run.state] = states.get(run.state, 0) + 1
    stopped = "".join(
        f"<li>#{r.number} <b>{html.escape(r.shape)}</b>: "
        + (f"stopped after rung {r.pruned_at} ({r.rungs[-1][1]:.3f} bits/byte at {r.rungs[-1][0]:,} tokens): "
           if r.state == "PRUNED" and r.rungs else f"{r.state.lower()}: ")
        + f"{html.escape(r.reason)}</li>"
        for r in data.runs if r.state in ("PRUNED", "FAIL"))
    ended = sum(1 for r in data.runs if r.state in ("PRUNED", "FAIL"))
    failed_list = f"""<details open><summary>Stopped early or failed ({ended})</summary>
<ul class="note">{stopped or "<li>none</li>"}</ul></details>"""
    counts = html.escape(', '.join(f'{v} {k.lower()}' for k, v in sorted(states.items())))
    if proxy is None:  # no shape finished a rung: no front, but which failed and why
        return f"""
<h2>Proxy training on your text</h2>
<p class="meta">{len(data.runs)} shapes chosen for proxy training: {counts}. None finished, so there is no proxy
front.</p>
{failed_list}
"""
    figures = "".join(_img(p, alt) for p, alt in zip(images, [
        "Proxy quality (held-out bits per byte, lower is better: the axis is flipped so up is better) vs decode "
        "speed: the front of trained shapes", "Proxy quality vs prefill speed",
        "Proxy training: loss curves and the held-out score of each shape at each rung"]))
    return f"""
<h2>Proxy training on your text</h2>
<p class="meta">{len(data.runs)} shapes trained as scaled proxies (study <code>{html.escape(proxy.trials.name)}</code>):
{counts}.
The front below ranks them by held-out bits per byte of the proxy against device speed.</p>
{figures}
{_landmark_note(proxy)}
<details open><summary>Proxy Pareto set ({len(proxy.rows)} shapes)</summary>
<div class="scroll">{tables.to_html(proxy.columns, proxy.rows)}</div>
<p class="note">Also as <a href="proxy_pareto.csv">CSV</a> and <a href="proxy_pareto.md">Markdown</a>.</p>
</details>
{failed_list.replace("<details open>", "<details>")}
"""


def _landmark_note(proxy: ReportData) -> str:
    """Where the published models' proxies scored, or how to train them."""
    trained = [lm for lm in proxy.landmarks if lm.proxy_bpb is not None]
    if not trained:
        return ('<p class="note">Published models are drawn as dashed lines at their predicted speed: they were '
                "not trained. <code>nas report --landmark-quality</code> trains each one's proxy exactly as these "
                "shapes were trained and places it at its proxy quality.</p>")
    items = ", ".join(f"{html.escape(lm.name)} {lm.proxy_bpb:.3f}" for lm in sorted(trained, key=lambda m: m.proxy_bpb))
    return (f'<p class="note">Published models, trained as proxies exactly as these shapes were (same rule, budget, '
            f"seeds and text), held-out bits per byte: {items}.</p>")


def _how_to_read(data: ReportData) -> str:
    """The report's reading notes, then this study's own notes."""
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in data.notes)
    return f"""<details><summary>How to read this</summary>
<ul class="note">
<li>Up and right is better: more quality, more tokens per second. Faint grey dots are dominated shapes,
faint red crosses break a constraint.</li>
<li>The <b>Pareto set</b> is the feasible shapes no other feasible shape beats on every study objective.
Each panel's front line is the same idea on that panel's two axes only.</li>
<li><b>Picks</b> (on {html.escape(data.first_target)}): <i>fastest</i> has the highest decode tokens/s,
<i>best quality</i> the highest quality, and the <i>knee</i> is the point of their quality-vs-decode front
(both axes scaled to 0–1) farthest from the line joining its two ends: the best trade. Qualities closer than
the study's tie (the quality law's band, or a proxy front's seed noise) are ties, won by the faster shape: best
quality is the fastest shape within the tie of the best, the knee the fastest within the tie of that point.</li>
<li>Predicted loss is the loss a shape is predicted to reach after the study's training tokens, on the quality
law's reference data and tokenizer (<code>nas quality</code>); the shaded band around the front is the law's
band. Published models sit at their own predicted loss and speed.</li>
<li>Search progress: the hypervolume of the feasible shapes the sampler found, over the study's objectives, as a
share of the exact front's (the same figure `nas search` prints); the star marks where the exact front's
remaining members were added.</li>
<li>Latency "analytic, uncalibrated" is a roofline estimate from the device's spec sheet, not a measurement;
"analytic, fitted to N published measurements" is the same roofline with its efficiencies and overheads fitted to
figures others published for that device (its parity plot shows how far to trust it).</li>
{notes}
</ul></details>"""


def render_index(data: ReportData, pareto_images: Sequence[Path], hv_image: Path,
                 parity_images: dict[str, list[Path]], files: Sequence[Path], storage: str | None = None,
                 proxy_images: Sequence[Path] = ()) -> str:
    tr = data.trials
    meta = tr.meta
    states = ", ".join(f"{v} {k.lower()}" for k, v in sorted(tr.states.items()))
    n_feasible = sum(p.feasible for p in tr.points.values())
    targets = "; ".join(
        f"<b>{html.escape(t)}</b> ({html.escape(meta.precision.get(t, ''))}, latency "
        f"{html.escape(meta.latency_sources.get(t, 'unknown'))}; {html.escape(legend(meta.latency_errors.get(t)))})"
        for t in meta.targets)
    objectives = ", ".join(f"{o.direction} {o.label}" for o in meta.objectives)
    figures = "".join(_img(p, alt) for p, alt in zip(
        pareto_images,
        ["Quality vs decode speed per target: front highlighted, picks marked",
         "Quality vs prefill speed per target"]))
    pick_source = ", from the proxy-trained front" if data.proxy else ""
    file_links = " · ".join(f'<a href="{html.escape(f.name)}">{html.escape(f.name)}</a>' for f in files)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>nas report — {html.escape(tr.name)}</title>
<style>{_css()}</style></head>
<body>
<h1>nas report — study {html.escape(tr.name)}</h1>
<p class="meta">Space <b>{html.escape(meta.space)}</b> · targets: {targets}<br>
Trials: {html.escape(states)}; {n_feasible} feasible; {len(data.pareto)} shapes on the Pareto set.<br>
Objectives: {html.escape(objectives)} · prompt {meta.prompt_len} tokens, context {meta.context_len} tokens
· nas {html.escape(meta.nas_version)}</p>
{_warnings(tr)}
<h2>Recommended shapes (picked on {html.escape(data.first_target)}{pick_source})</h2>
{_cards(data.proxy or data, storage)}
{_proxy_section(data, proxy_images)}
<details{"" if data.proxy else " open"}><summary>{"Parameter-count fronts (latency stage, for comparison)"
    if data.proxy else "Pareto fronts"}</summary>
<div class="figures">{figures}</div></details>

<details><summary>Pareto set of the latency stage ({len(data.rows)} shapes)</summary>
<div class="scroll">{tables.to_html(data.columns, data.rows)}</div>
<p class="note">Also as <a href="pareto.csv">CSV</a> and <a href="pareto.md">Markdown</a>.</p></details>

<details><summary>Search progress</summary>
{_img(hv_image, "Hypervolume of the sampler's trials, as a share of the exact front's")}</details>

<details><summary>Latency predictor accuracy</summary>
{_parity_section(data, parity_images)}</details>

{_how_to_read(data)}
<p class="note">Files: {file_links}</p>
</body></html>
"""


def write_index(out_dir: Path, text: str) -> Path:
    path = out_dir / "index.html"
    path.write_text(text, encoding="utf-8")
    return path
