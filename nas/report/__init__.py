"""Turn a finished study into a report folder: Pareto plots, hypervolume, parity, tables, index.html.

Compute first (`nas.report.data`), draw second (`nas.report.plots`, `nas.report.tables`, `nas.report.html`).
Public entry point: `build_report(storage, study_name, out_dir) -> Path` (the index.html), used by
`nas report` and at the end of `nas search`.
"""

from __future__ import annotations

from pathlib import Path

from nas.core.errors import NasUserError
from nas.core.paths import default_storage
from nas.report import html, plots, tables
from nas.report.data import SPEED_METRICS, Parity, compute_report
from nas.study.read import load_study, read_study

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
    """Draw a computed `ReportData` into `out_dir`; returns the index.html path."""
    out_dir = prepare_dir(out_dir)
    pareto_images = [plots.plot_fronts(data, m, out_dir)[0] for m in SPEED_METRICS]
    hv_image = plots.plot_progress(data.progress, out_dir, data.trials.name)[0]
    parity_images = {t: plots.plot_parity(p, out_dir) for t, p in data.parity.items() if isinstance(p, Parity)}
    table_files = tables.write_tables(data.columns, data.rows, out_dir)
    files = sorted({*out_dir.glob("*.png"), *out_dir.glob("*.svg"), *table_files}, key=lambda p: p.name)
    return html.write_index(out_dir, html.render_index(data, pareto_images, hv_image, parity_images, files, storage))


def build_report(storage: str, study_name: str, out_dir: Path) -> Path:
    """Load `study_name` from `storage`, write the report folder `out_dir`, return its index.html path.

    Raises NasUserError (one line) for an unknown study, a study not written by nas, a study with no
    complete trials, or an unwritable folder.
    """
    trials = read_study(load_study(storage, study_name))
    data = compute_report(trials)
    return render_report(data, out_dir, storage=None if storage == default_storage() else storage)
