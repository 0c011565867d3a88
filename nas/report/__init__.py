"""Turn a finished study into a report folder: Pareto plots, hypervolume, parity, tables, index.html.

Compute first (`nas.report.data`), draw second (`nas.report.plots`, `nas.report.tables`, `nas.report.html`).
Public entry point: `build_report(storage, study_name, out_dir) -> Path` (the index.html), used by
`nas report` and at the end of `nas search`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from nas.core.errors import NasUserError
from nas.core.paths import default_storage
from nas.report import html, plots, tables
from nas.report.data import SPEED_METRICS, Parity, at_train_tokens, compute_report, proxy_runs, study_quality_model
from nas.study.read import landmark_scores, load_study, proxy_stage_of, read_study

__all__ = ["build_report", "prepare_dir", "render_report"]


def prepare_dir(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".nas-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise NasUserError(f"cannot write the report to {out_dir}: {exc.strerror or exc}") from None
    return out_dir


def render_report(data, out_dir: Path, storage: str | None = None) -> Path:
    """Draw a computed `ReportData` into `out_dir`; returns the index.html path. A folder that cannot be
    written (read-only, full, gone) is one NasUserError naming it and the reason."""
    out_dir = prepare_dir(out_dir)
    try:
        return _render(data, out_dir, storage)
    except OSError as exc:
        where = f" ({Path(exc.filename).name})" if exc.filename else ""
        raise NasUserError(f"cannot write the report to {out_dir}: {exc.strerror or exc}{where}") from None


def _render(data, out_dir: Path, storage: str | None) -> Path:
    pareto_images = [plots.plot_fronts(data, m, out_dir)[0] for m in SPEED_METRICS]
    proxy_images = []
    if data.proxy is not None:
        proxy_images = [plots.plot_fronts(data.proxy, m, out_dir, prefix="proxy_")[0] for m in SPEED_METRICS]
        proxy_images.append(plots.plot_proxy_runs(data.runs, out_dir, data.proxy.trials.name)[0])
        tables.write_tables(data.proxy.columns, data.proxy.rows, out_dir, stem="proxy_pareto")
    hv_image = plots.plot_progress(data.progress, out_dir, data.trials.name)[0]
    parity_images = {t: plots.plot_parity(p, out_dir) for t, p in data.parity.items() if isinstance(p, Parity)}
    table_files = tables.write_tables(data.columns, data.rows, out_dir)
    files = sorted({*out_dir.glob("*.png"), *out_dir.glob("*.svg"), *table_files}, key=lambda p: p.name)
    return html.write_index(out_dir, html.render_index(data, pareto_images, hv_image, parity_images, files, storage,
                                                       proxy_images))


def build_report(storage: str, study_name: str, out_dir: Path, train_tokens: int | None = None) -> Path:
    """Load `study_name` from `storage`, write the report folder `out_dir`, return its index.html path.
    Published models trained as proxies (`nas.proxy.landmarks`, `nas report --landmark-quality`) are drawn
    on the proxy fronts at their stored scores.

    `train_tokens`: report the predicted losses at this pretraining budget instead of the study's.

    Raises NasUserError (one line) for an unknown study, a study not written by nas, a study with no
    complete trials, --train-tokens on a study ranked by parameter count, or an unwritable folder.
    """
    trials = read_study(load_study(storage, study_name))
    quality_model = None
    if train_tokens is not None:
        quality_model = study_quality_model(trials.meta, train_tokens)  # another law would mix both: refused
        if quality_model is None:
            raise NasUserError(f"--train-tokens: study {study_name!r} was searched with --quality params; it has no "
                               "predicted loss to report at another budget")
        trials = at_train_tokens(trials, quality_model)
    data = compute_report(trials, quality_model=quality_model)
    proxy = proxy_stage_of(storage, study_name)
    if proxy is not None:
        data.runs = proxy_runs(proxy)
        proxy_trials = read_study(proxy)
        scores = landmark_scores(proxy)
        if proxy_trials.points:
            data.proxy = compute_report(proxy_trials, with_parity=False, with_landmarks=False)
            data.proxy.landmarks = [replace(lm, proxy_bpb=scores.get(lm.name, {}).get("val_bpb"))
                                    for lm in data.landmarks]
    return render_report(data, out_dir, storage=None if storage == default_storage() else storage)
