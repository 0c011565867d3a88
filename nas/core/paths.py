"""Where nas finds what it ships and keeps what it generates.

Shipped data (device TOML files, search-space presets, latency data, published training runs and the quality
law fitted to them, report styles, the proxy-training corpus) lives in the top-level folders of the source tree
(`targets/`, `search_spaces/`, `latency_models/`, `quality_models/`, `reports/`, `corpora/`); a wheel carries the
same folders inside the package as `nas/_data/<folder>` (pyproject.toml maps them). `shipped()` finds either.

User data lives under NAS_HOME (default ~/.local/share/nas) so it survives reinstalls and is shared by
every working directory; tests point NAS_HOME at a temporary folder. Studies and reports default to the
current directory's runs/ folder.

Every folder nas creates goes through `ensure_folder` and every file it writes whole through `write_atomic`,
so a file standing where a folder must be, an unwritable place or a full disk is one line naming the path and
the cause, and a file is either written completely or left as it was.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from nas.core.errors import NasUserError

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the `nas` package folder
SHIPPED_FOLDERS = ("targets", "search_spaces", "latency_models", "quality_models", "reports", "corpora",
                   "device_runners")


def shipped(folder: str) -> Path:
    """A folder of data shipped with nas: inside an installed wheel, else the source checkout's top level."""
    if folder not in SHIPPED_FOLDERS:
        raise ValueError(f"{folder!r} is not a shipped data folder; known: {', '.join(SHIPPED_FOLDERS)}")
    installed = _PACKAGE_DIR / "_data" / folder
    return installed if installed.is_dir() else _PACKAGE_DIR.parent / folder


def data_dir() -> Path:
    return Path(os.environ.get("NAS_HOME") or Path.home() / ".local" / "share" / "nas")


def ensure_folder(path: str | Path, what: str = "folder") -> Path:
    """Create the folder `path` (and its parents) unless it is there. A file standing where one of them must
    be is named as such (not "File exists"); a place nas may not write is one line with the cause."""
    path = Path(path)
    if path.is_dir():
        return path
    for ancestor in (path, *path.parents):
        if ancestor.is_dir():
            break
        if ancestor.exists() or ancestor.is_symlink():
            raise NasUserError(f"cannot create {what} {path}: {ancestor} is a file, not a folder{_home_hint(path)}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NasUserError(f"cannot create {what} {path}: {exc.strerror or exc}{_home_hint(path)}") from None
    return path


def check_can_create(path: str | Path, what: str = "folder") -> Path:
    """Refuse now, creating nothing, a folder `ensure_folder` would fail to create or nas could not write into
    later: a file in its place, a missing root, a read-only place (probed with a temporary file that is removed)."""
    path = Path(path)
    existing = next((p for p in (path, *path.parents) if p.exists() or p.is_symlink()), Path("."))
    if not existing.is_dir():
        raise NasUserError(f"cannot write {what} to {path}: {existing} is a file, not a folder{_home_hint(path)}")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise NasUserError(f"cannot write {what} to {path}: {exc.strerror or exc}{_home_hint(path)}") from None
    return path


def _home_hint(path: Path) -> str:
    """Where `path` lies under NAS_HOME, what to change: the user may not know nas keeps data there."""
    home = data_dir()
    try:
        path.absolute().relative_to(home.absolute())
    except ValueError:
        return ""
    return f" (nas keeps its data under NAS_HOME={home}: set NAS_HOME to a folder nas may create and write)"


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write the whole file `path` or nothing: the bytes go to a temporary file beside it, which replaces
    `path` only once written and synced. A full disk or unwritable folder leaves `path` as it was (one line)."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise NasUserError(f"cannot write {path}: {exc.strerror or exc}{_home_hint(path)}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; the file is an ordinary one
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise NasUserError(f"cannot write {path}: {exc.strerror or exc}{_home_hint(path)}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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


REPORT_ROOT = Path("runs") / "reports"


def default_report_dir(study: str) -> Path:
    """runs/reports/<study>: always a folder directly inside the report root, whatever the name holds."""
    if not study or study in (".", "..") or Path(study).name != study or "\\" in study:
        raise NasUserError(f"study name {study!r} cannot name a folder inside {REPORT_ROOT}; pass --out")
    return REPORT_ROOT / study
