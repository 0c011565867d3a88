"""Opening Optuna study storages from what users type, with one-line errors.

One function for every command: `nas search` creates a storage on first use; `nas report` and `nas export`
read an existing one and refuse a path with nothing there (never silently create an empty database).
Accepted: an RDB URL (sqlite:///runs/nas.db, postgresql://user@host/db), an Optuna journal file (a path; a
new one must end in .log), or ':memory:'.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from nas.core.errors import NasUserError

MEMORY_STORAGES = (":memory:", "memory")
# What a storage raises when the database or file is at fault rather than nas: SQLAlchemy's errors (a bad URL,
# an unreachable server, a corrupt or read-only database; Optuna's RDB storage is built on SQLAlchemy), OS
# errors, and malformed journal lines. A missing database driver (psycopg2 for PostgreSQL) is an ImportError.
STORAGE_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, OSError, ValueError)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


@dataclass(frozen=True)
class Heartbeat:
    """How workers show they are alive (RDB storages): a heartbeat every `interval_s`; a RUNNING trial without
    one for `grace_s` is failed and, up to `max_retry` times, queued again as a WAITING copy (Optuna's
    RetryHeartbeatStaleTrialCallback)."""

    interval_s: int = 10
    grace_s: int = 60
    max_retry: int = 2


def open_storage(url: str, must_exist: bool = False, heartbeat: Heartbeat | None = None):
    """An Optuna storage for `url`. With `must_exist`, a SQLite file or journal that is not there is an error.
    With `heartbeat`, an RDB storage (SQLite, PostgreSQL, MySQL) records workers' heartbeats and retries the
    trials of workers that died (journal and in-memory storages have no heartbeat in Optuna)."""
    import optuna

    if url in MEMORY_STORAGES:
        if must_exist:
            raise NasUserError(f"--storage {url!r} holds no studies once its search has ended; "
                               "pass the storage the search used, e.g. sqlite:///runs/nas.db")
        return optuna.storages.InMemoryStorage()
    if "://" not in url:
        return _journal(url, must_exist)
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        if str(path) not in ("", ":memory:"):
            if must_exist and not path.is_file():
                raise NasUserError(f"no study storage at {path} (from --storage {url}); run `nas search` first "
                                   "or pass the --storage the search used")
            _make_parent(path, url)
    options = {}
    if heartbeat is not None:
        with warnings.catch_warnings():  # the callback is marked experimental; it is what Optuna documents
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=heartbeat.max_retry)
        options = dict(heartbeat_interval=heartbeat.interval_s, grace_period=heartbeat.grace_s,
                       heartbeat_stale_trial_callback=retry)
    try:
        with warnings.catch_warnings():  # heartbeats are marked experimental in Optuna; they are what it documents
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(url, **options)
    except ImportError as exc:  # the database's driver is not installed
        raise NasUserError(f"cannot open study storage {url!r}: {first_line(exc)} (install the database "
                           "driver: pip install 'nas[postgres]' for PostgreSQL)") from None
    except STORAGE_ERRORS as exc:
        raise NasUserError(f"cannot open study storage {url!r}: {first_line(exc)}") from None
    if url.startswith("sqlite"):
        _sqlite_wal(storage.engine)
    return storage


def _make_parent(path: Path, url: str) -> None:
    """Create the storage file's folder when its own parent exists (runs/ in the working directory), never a
    chain of folders: a mistyped absolute path is an error, not new folders at the filesystem root."""
    folder = path.parent
    if folder.is_dir():
        return
    if folder.parent.exists() and not folder.parent.is_dir():
        raise NasUserError(f"cannot create the folder for --storage {url!r}: {folder.parent} is not a folder")
    if not folder.parent.is_dir():
        raise NasUserError(f"cannot use --storage {url!r}: folder {folder.parent} does not exist")
    try:
        folder.mkdir()
    except OSError as exc:
        raise NasUserError(f"cannot create the folder for --storage {url!r}: {exc.strerror or exc}") from None


def _journal(path: str, must_exist: bool):
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if must_exist and not Path(path).is_file():
        raise NasUserError(f"no study storage at {path!r}: expected a database URL such as sqlite:///runs/nas.db "
                           "or an existing Optuna journal file")
    if not must_exist and not path.endswith(".log"):
        raise NasUserError(f"--storage {path!r} is not a database URL; expected e.g. sqlite:///runs/nas.db, "
                           "postgresql://user@host/db, an Optuna journal file ending in .log, or :memory:")
    _make_parent(Path(path), path)
    try:
        return JournalStorage(JournalFileBackend(path))
    except STORAGE_ERRORS as exc:  # an unwritable folder, a file that is not a journal
        raise NasUserError(f"cannot open journal storage {path!r}: {first_line(exc)}") from None


def _sqlite_wal(engine) -> None:
    """Write-ahead log with synchronous=NORMAL: one trial's commit no longer waits for an fsync (~20 ms
    here). A killed process loses no committed trial (the WAL is in the file system); only a power cut
    may lose the last few commits."""
    from sqlalchemy import event

    def pragmas(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", pragmas)
    engine.dispose()  # connections opened before the listener reconnect with the pragmas
