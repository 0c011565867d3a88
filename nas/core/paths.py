"""Where nas finds what it ships and keeps what it generates.

Shipped data (device TOML files, search-space presets, latency data, published training runs and the quality
law fitted to them, report styles, the proxy-training corpus) lives in the top-level folders of the source tree
(`targets/`, `search_spaces/`, `latency_models/`, `quality_models/`, `reports/`, `corpora/`); a wheel carries the
same folders inside the package as `nas/_data/<folder>` (pyproject.toml maps them). `shipped()` finds either.

User data lives under NAS_HOME (default ~/.local/share/nas) so it survives reinstalls and is shared by
every working directory; tests point NAS_HOME at a temporary folder. Studies and reports default to the
current directory's runs/ folder.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the `nas` package folder
SHIPPED_FOLDERS = ("targets", "search_spaces", "latency_models", "quality_models", "reports", "corpora")


def shipped(folder: str) -> Path:
    """A folder of data shipped with nas: inside an installed wheel, else the source checkout's top level."""
    if folder not in SHIPPED_FOLDERS:
        raise ValueError(f"{folder!r} is not a shipped data folder; known: {', '.join(SHIPPED_FOLDERS)}")
    installed = _PACKAGE_DIR / "_data" / folder
    return installed if installed.is_dir() else _PACKAGE_DIR.parent / folder


def data_dir() -> Path:
    return Path(os.environ.get("NAS_HOME") or Path.home() / ".local" / "share" / "nas")


def measurements_path(target: str) -> Path:
    """JSONL of latency measurements for a target (appended by `nas profile`, read by `nas calibrate`)."""
    return data_dir() / "measurements" / f"{target}.jsonl"


def predictor_filename(target: str, provider: str, precision: str) -> str:
    return f"{target}__{provider}__{precision}.json"


def predictor_path(target: str, provider: str, precision: str) -> Path:
    """Where `nas calibrate` saves a target's fitted predictor."""
    return data_dir() / "predictors" / predictor_filename(target, provider, precision)


def shipped_predictor_path(target: str, provider: str, precision: str) -> Path:
    """Where a predictor shipped with nas would be (latency_models/predictors/)."""
    return shipped("latency_models") / "predictors" / predictor_filename(target, provider, precision)


def find_predictor(target: str, provider: str, precision: str) -> Path | None:
    """The user's fitted predictor if any, else one shipped with the package, else None."""
    for path in (predictor_path(target, provider, precision), shipped_predictor_path(target, provider, precision)):
        if path.is_file():
            return path
    return None


def default_storage() -> str:
    """SQLite study storage in the current directory's runs/ folder (created on first use)."""
    return "sqlite:///runs/nas.db"


def default_report_dir(study: str) -> Path:
    return Path("runs") / "reports" / study
