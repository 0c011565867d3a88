"""Where nas keeps what it generates: measurements, fitted predictors, studies, reports.

User data lives under NAS_HOME (default ~/.local/share/nas) so it survives reinstalls and is shared by
every working directory; tests point NAS_HOME at a temporary folder. Predictors shipped with the package
live in targets/calibrations/ and are used when the user has none of their own.
"""

from __future__ import annotations

import os
from pathlib import Path

SHIPPED_CALIBRATIONS = Path(__file__).resolve().parent.parent / "targets" / "calibrations"


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


def find_predictor(target: str, provider: str, precision: str) -> Path | None:
    """The user's fitted predictor if any, else one shipped with the package, else None."""
    for path in (predictor_path(target, provider, precision),
                 SHIPPED_CALIBRATIONS / predictor_filename(target, provider, precision)):
        if path.is_file():
            return path
    return None


def default_storage() -> str:
    """SQLite study storage in the current directory's runs/ folder (created on first use)."""
    return "sqlite:///runs/nas.db"


def default_report_dir(study: str) -> Path:
    return Path("runs") / "reports" / study
