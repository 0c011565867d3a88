"""Opening Optuna study storages from what users type, with one-line errors.

One function for every command: `nas search` creates a storage on first use; `nas report` and `nas export`
read an existing one and refuse a path with nothing there (never silently create an empty database).
Accepted: an RDB URL (sqlite:///runs/nas.db, postgresql://user@host/db), an Optuna journal file (a path; a
new one must end in .log), or ':memory:'.

A database that goes away for a while (a server restart, dropped connections, a network cut) does not end a
search: once opened, an RDB storage retries each call that fails on a lost or refused connection for up to
RETRY_S seconds, with one line when it loses the database and one when it is back (`ResilientRDBStorage`).
A database that cannot be reached when the storage is opened is refused at once, in one line.
"""

from __future__ import annotations

import sys
import threading
import time
import warnings
from dataclasses import dataclass
from functools import wraps
from pathlib import Path

import optuna
from optuna.exceptions import StorageInternalError
from sqlalchemy.exc import (DBAPIError, IntegrityError, InterfaceError, OperationalError, PendingRollbackError,
                            ProgrammingError, SQLAlchemyError)

from nas.core.errors import NasUserError

MEMORY_STORAGES = (":memory:", "memory")
# What a storage raises when the database or file is at fault rather than nas: SQLAlchemy's errors (a bad URL,
# an unreachable server, a corrupt or read-only database; Optuna's RDB storage is built on SQLAlchemy, and
# wraps the errors of its sessions in StorageInternalError), OS errors, and malformed journal lines. A missing
# database driver (psycopg for PostgreSQL) is an ImportError.
STORAGE_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, StorageInternalError, OSError, ValueError)
RETRY_S = 120.0  # how long one storage call keeps retrying while the database cannot be reached
RETRY_FIRST_S, RETRY_MAX_S = 0.25, 5.0  # the first pause between tries, doubled up to this


def first_line(exc: BaseException) -> str:
    if isinstance(exc, StorageInternalError) and exc.__cause__ is not None:
        exc = exc.__cause__  # Optuna's wrapper says only "an exception is raised during the commit"
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def lost_connection(exc: BaseException) -> bool:
    """Whether `exc` is a database connection lost or refused (worth retrying), not a bad request: SQLAlchemy's
    OperationalError and InterfaceError ("server closed the connection", "connection refused", "terminating
    connection due to administrator command", SQLite's "database is locked"), seen through Optuna's
    StorageInternalError; and SQLAlchemy's PendingRollbackError, which a session raises for a transaction its
    lost connection left invalid (Optuna rolls the session back after the error, so trying again is safe)."""
    for e in (exc, exc.__cause__):
        if isinstance(e, (OperationalError, InterfaceError, PendingRollbackError)):
            return True
        if isinstance(e, DBAPIError) and e.connection_invalidated:
            return True
    return False


class ResilientRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage whose calls survive the database going away for up to RETRY_S seconds: a call that
    fails on a lost connection is tried again (SQLAlchemy reconnects; the failed transaction was rolled back,
    so trying again is safe), pausing 0.25 s, 0.5 s, ... up to 5 s between tries. Past RETRY_S the search
    stops with one line; its finished trials are in the database, and a RUNNING one is retried by another
    worker once its heartbeats are missed (or by the next run). Only the outermost call retries."""

    _local = threading.local()
    _said = threading.Lock()
    _down_since: float | None = None


def _retrying(method):
    @wraps(method)
    def call(self, *args, **kwargs):
        local = ResilientRDBStorage._local
        if getattr(local, "depth", 0):
            return method(self, *args, **kwargs)
        local.depth = 1
        try:
            pause, start = RETRY_FIRST_S, None
            while True:
                try:
                    value = method(self, *args, **kwargs)
                except STORAGE_ERRORS as exc:
                    if not lost_connection(exc):
                        raise
                    now = time.monotonic()
                    start = now if start is None else start
                    _say_down(self, exc)
                    if now - start > RETRY_S:
                        raise NasUserError(f"lost the study storage {_safe_url(self.url)} for more than "
                                           f"{RETRY_S:.0f} s: {first_line(exc)}") from None
                    time.sleep(pause)
                    pause = min(2 * pause, RETRY_MAX_S)
                    continue
                _say_up(self)
                return value
        finally:
            local.depth = 0

    return call


def _say_down(storage, exc) -> None:
    with ResilientRDBStorage._said:
        if ResilientRDBStorage._down_since is None:
            ResilientRDBStorage._down_since = time.monotonic()
            print(f"storage: lost the database at {_safe_url(storage.url)} ({first_line(exc)}); retrying for up "
                  f"to {RETRY_S:.0f} s", file=sys.stderr)


def _say_up(storage) -> None:
    if ResilientRDBStorage._down_since is None:
        return
    with ResilientRDBStorage._said:
        if ResilientRDBStorage._down_since is not None:
            print(f"storage: the database is back after {time.monotonic() - ResilientRDBStorage._down_since:.1f} s",
                  file=sys.stderr)
            ResilientRDBStorage._down_since = None


def _safe_url(url: str) -> str:
    """The URL without a password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 -- only for a message
        return url


# Every call that reads or writes the database (the public storage API, heartbeats, the stale-trial query).
for _name in [n for n, v in vars(optuna.storages.RDBStorage).items()
              if callable(v) and (not n.startswith("_") or n == "_get_stale_trial_ids")
              and n not in ("get_heartbeat_interval", "get_heartbeat_stale_trial_callback", "remove_session")]:
    setattr(ResilientRDBStorage, _name, _retrying(getattr(optuna.storages.RDBStorage, _name)))


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
    trials of workers that died (journal and in-memory storages have no heartbeat in Optuna). An RDB storage
    rides out a database lost for up to RETRY_S seconds (`ResilientRDBStorage`)."""
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
        storage = _create_rdb(url, options)
    except ImportError as exc:  # the database's driver is not installed
        raise NasUserError(f"cannot open study storage {url!r}: {first_line(exc)} (install the database "
                           "driver: pip install 'nas[postgres]' for PostgreSQL)") from None
    except STORAGE_ERRORS as exc:
        raise NasUserError(f"cannot open study storage {url!r}: {first_line(exc)}") from None
    if url.startswith("sqlite"):
        _sqlite_wal(storage.engine)
    return storage


SCHEMA_RETRY_PAUSES_S = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4)  # workers that lose the race to create the tables


def _create_rdb(url: str, options: dict) -> ResilientRDBStorage:
    """Optuna's RDB storage for `url`, creating its tables on a new database. Workers started together on a
    new database all try to create the tables; all but one fail ("table studies already exists", a duplicate
    alembic version row) and, once the winner's schema is committed, open it as an existing database."""
    def create() -> ResilientRDBStorage:
        with warnings.catch_warnings():  # heartbeats are marked experimental; they are what Optuna documents
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return ResilientRDBStorage(url, **options)

    for pause in SCHEMA_RETRY_PAUSES_S:
        try:
            return create()
        except (IntegrityError, OperationalError, ProgrammingError) as exc:
            if not _schema_race(exc):
                raise
            time.sleep(pause)
    return create()


def _schema_race(exc: BaseException) -> bool:
    """Whether `exc` is another process creating the same tables at the same time (SQLite, PostgreSQL)."""
    text = str(exc).lower()
    return isinstance(exc, IntegrityError) or "already exists" in text or "database is locked" in text


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
    _check_journal(Path(path))
    try:
        return JournalStorage(JournalFileBackend(path))
    except STORAGE_ERRORS as exc:  # an unwritable folder, a file that is not a journal
        raise NasUserError(f"cannot open journal storage {path!r}: {first_line(exc)}") from None


def _check_journal(path: Path) -> None:
    """Refuse a file that is not an Optuna journal (every line a JSON object with an "op_code") before anything
    is written to it: Optuna skips a malformed last line as a write cut short, so a search would append to
    the user's file and only then fail on the line it no longer sees as the last."""
    import json

    if not path.is_file():
        return
    try:
        with path.open("rb") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:
                    entry = None
                if not isinstance(entry, dict) or "op_code" not in entry:
                    raise NasUserError(f"--storage {str(path)!r} is not an Optuna journal file (line {number} is not a "
                                       "journal entry); pass a new .log path or the journal a search wrote")
    except OSError as exc:
        raise NasUserError(f"cannot read journal storage {str(path)!r}: {exc.strerror or exc}") from None


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
