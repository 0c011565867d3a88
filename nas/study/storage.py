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
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    PendingRollbackError,
    ProgrammingError,
    SQLAlchemyError,
)

from nas.core.errors import NasUserError, one_line

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
    """Whether `exc` is worth retrying: the database connection lost or refused, or the database busy, not a
    request that will fail again. Classified by the database's own error code where it gives one: SQLite's
    SQLITE_BUSY / SQLITE_LOCKED ("database is locked"), PostgreSQL's SQLSTATE class 08 (connection exception),
    57P01-57P03 (the server shutting down, restarting, not accepting connections yet), 40001 / 40P01 (a
    serialisation failure or deadlock: the transaction may be tried again) and 53300 (too many connections).
    Every other coded error is permanent: a read-only or full database, a file that is not a database, a
    missing table. Without a code (a connection that failed before the server answered: "connection refused",
    "server closed the connection"), SQLAlchemy's OperationalError and InterfaceError are transient, as is any
    error SQLAlchemy marks as having invalidated the connection, and its PendingRollbackError, which a session
    raises for a transaction its lost connection left invalid (Optuna rolls the session back after the error, so
    trying again is safe). Seen through Optuna's StorageInternalError."""
    if any(isinstance(e, PendingRollbackError) for e in (exc, exc.__cause__)):
        return True
    error = _database_error(exc)
    if error is None:
        return False
    if error.connection_invalidated:
        return True
    name = getattr(error.orig, "sqlite_errorname", None)
    if name:
        return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
    state = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
    if state:
        return state.startswith("08") or state in _TRANSIENT_SQLSTATES
    return isinstance(error, (OperationalError, InterfaceError))


_TRANSIENT_SQLSTATES = {"57P01", "57P02", "57P03", "40001", "40P01", "53300"}
# What a permanent error means, in words, by SQLite error name or PostgreSQL SQLSTATE.
_PERMANENT_CAUSES = {
    "SQLITE_READONLY": "the database is read-only", "SQLITE_FULL": "the disk is full",
    "SQLITE_NOTADB": "the file is not a database", "SQLITE_CANTOPEN": "the database file cannot be opened",
    "SQLITE_CORRUPT": "the database file is corrupt",
    "SQLITE_IOERR": "the disk refused a read or write (full, failing or gone)",
    "SQLITE_PERM": "permission denied", "53100": "the disk is full", "25006": "the database is read-only",
    "42501": "permission denied", "3D000": "the database does not exist",
}


def _database_error(exc: BaseException) -> DBAPIError | None:
    """The SQLAlchemy database error behind `exc` (itself, or the cause Optuna wrapped), or None."""
    for e in (exc, exc.__cause__):
        if isinstance(e, DBAPIError):
            return e
    return None


def permanent_cause(exc: BaseException) -> str | None:
    """One line naming why a database refused a request for good (see `lost_connection`), or None when `exc`
    is not a database error or is worth retrying. Integrity errors are not causes: Optuna handles them."""
    error = _database_error(exc)
    if error is None or isinstance(error, IntegrityError) or lost_connection(exc):
        return None
    code = getattr(error.orig, "sqlite_errorname", None) or getattr(error.orig, "sqlstate", None) or ""
    words = next((w for key, w in _PERMANENT_CAUSES.items() if code == key or code.startswith(key + "_")), None)
    detail = first_line(error.orig if error.orig is not None else error)
    if not words or detail.lower() in words.lower():
        return words or detail
    return f"{words} ({detail})"


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
                        cause = permanent_cause(exc)
                        if cause:  # it would fail the same way every time: say why at once, no retries
                            raise NasUserError(f"study storage {_safe_url(self.url)}: {cause}") from None
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
            print(one_line(f"storage: lost the database at {_safe_url(storage.url)} ({first_line(exc)}); retrying "
                           f"for up to {RETRY_S:.0f} s"), file=sys.stderr)


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
        parsed = make_url(url)
        return url if parsed.password is None else parsed.render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 -- only for a message
        return url


# Every call that reads or writes the database: the public storage API, heartbeats, and the private methods
# Optuna's _CachedStorage (which wraps every RDB storage a study uses) calls on its backend directly.
_PRIVATE_DATABASE_CALLS = ("_get_stale_trial_ids", "_create_new_trial", "_set_trial_param", "_get_trials",
                           "_get_best_trial_id")
for _name in [n for n, v in vars(optuna.storages.RDBStorage).items()
              if callable(v) and (not n.startswith("_") or n in _PRIVATE_DATABASE_CALLS)
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
    if url.startswith("sqlite:"):
        _check_sqlite_path(url, must_exist)
    options = {}
    if heartbeat is not None:
        with warnings.catch_warnings():  # the callback is marked experimental; it is what Optuna documents
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=heartbeat.max_retry)
        options = dict(heartbeat_interval=heartbeat.interval_s, grace_period=heartbeat.grace_s,
                       heartbeat_stale_trial_callback=retry)
    try:
        if must_exist:
            _check_holds_studies(url)
        storage = _create_rdb(url, options)
    except ImportError as exc:  # the database's driver is not installed
        raise NasUserError(f"cannot open study storage {url!r}: {first_line(exc)} (install the database "
                           "driver: pip install 'nas[postgres]' for PostgreSQL)") from None
    except STORAGE_ERRORS as exc:
        raise NasUserError(f"cannot open study storage {url!r}: {permanent_cause(exc) or first_line(exc)}") from None
    if url.startswith("sqlite"):
        _sqlite_wal(storage.engine)
    return storage


def _check_sqlite_path(url: str, must_exist: bool) -> None:
    """A SQLite URL must name a database file: `sqlite://`, `sqlite:///` and `sqlite:///:memory:` are a private
    in-memory database per connection, where Optuna's tables vanish between calls (and nas retried "no such
    table" for 120 s). A reading command needs the file to exist; a search creates its folder (see
    `_make_parent`)."""
    from sqlalchemy.engine import make_url

    try:
        database = make_url(url).database or ""
    except Exception as exc:  # noqa: BLE001 -- SQLAlchemy's ArgumentError for a malformed URL
        raise NasUserError(f"--storage {url!r} is not a database URL: {first_line(exc)}") from None
    database = database.split("?")[0].removeprefix("file:") if "uri=true" in url else database
    if database in ("", ":memory:"):
        raise NasUserError(f"--storage {url!r} names no database file (SQLite in memory lasts one connection); "
                           "give a file such as sqlite:///runs/nas.db, or :memory: for a study that need not "
                           "outlive the search")
    path = Path(database)
    if path.exists() and not path.is_file():
        raise NasUserError(f"--storage {url!r}: {path} is not a database file (a folder or a device)")
    if must_exist and not path.is_file():
        raise NasUserError(f"no study storage at {path} (from --storage {url}); run `nas search` first "
                           "or pass the --storage the search used")
    if not must_exist:
        _make_parent(path, url)


def _check_holds_studies(url: str) -> None:
    """Refuse, before Optuna creates its tables in it, a database that holds no Optuna study tables: a command
    that reads studies must not write into someone's unrelated database (or a 0-byte file) and then report
    "known studies: none". Only reads: a SQLAlchemy inspector on the user's URL."""
    from sqlalchemy import create_engine, inspect

    engine = create_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    if not {"studies", "version_info"} <= tables:
        what = f"tables {', '.join(sorted(tables)[:5])}" if tables else "no tables"
        raise NasUserError(f"--storage {url!r} holds no nas study (it has {what}, not Optuna's); pass the --storage "
                           "a search used")


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
    for place in (folder, folder.parent):
        if place.exists() and not place.is_dir():
            raise NasUserError(f"cannot create the folder for --storage {url!r}: {place} is a file, not a folder")
    if not folder.parent.is_dir():
        raise NasUserError(f"cannot use --storage {url!r}: folder {folder.parent} does not exist")
    try:
        folder.mkdir()
    except OSError as exc:
        raise NasUserError(f"cannot create the folder for --storage {url!r}: {exc.strerror or exc}") from None


def _journal(path: str, must_exist: bool):
    from optuna.storages.journal import JournalFileBackend

    if must_exist and not Path(path).is_file():
        raise NasUserError(f"no study storage at {path!r}: expected a database URL such as sqlite:///runs/nas.db "
                           "or an existing Optuna journal file")
    if not must_exist and not path.endswith(".log"):
        raise NasUserError(f"--storage {path!r} is not a database URL; expected e.g. sqlite:///runs/nas.db, "
                           "postgresql://user@host/db, an Optuna journal file ending in .log, or :memory:")
    _make_parent(Path(path), path)
    _check_journal(Path(path))
    try:
        return GuardedJournalStorage(JournalFileBackend(path))
    except STORAGE_ERRORS as exc:  # an unwritable folder, a file that is not a journal
        raise NasUserError(f"cannot open journal storage {path!r}: {first_line(exc)}") from None


class GuardedJournalStorage(optuna.storages.JournalStorage):
    """Optuna's journal storage whose file errors (a full disk, a read-only or vanished file) end the command
    in one line naming the file and the cause, instead of a traceback from deep inside Optuna."""


def _file_errors_in_one_line(method):
    @wraps(method)
    def call(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except OSError as exc:
            where = getattr(getattr(self, "_backend", None), "_file_path", "the journal file")
            raise NasUserError(f"study storage {where}: {exc.strerror or exc}") from None

    return call


for _name in [n for n, v in vars(optuna.storages.JournalStorage).items() if callable(v) and not n.startswith("_")]:
    setattr(GuardedJournalStorage, _name, _file_errors_in_one_line(getattr(optuna.storages.JournalStorage, _name)))


def _check_journal(path: Path) -> None:
    """Refuse a file that is not an Optuna journal (every line a JSON object with an "op_code") before anything
    is written to it: Optuna skips a malformed last line as a write cut short, so a search would append to
    the user's file and only then fail on the line it no longer sees as the last."""
    from nas.core.userfiles import parse_json

    if not path.is_file():
        return
    try:
        with path.open("rb") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    entry = parse_json(line, str(path), line=number)
                except NasUserError:  # malformed, NaN, nested past reason: not a line Optuna wrote
                    entry = None
                if not isinstance(entry, dict) or "op_code" not in entry:
                    raise NasUserError(f"--storage {str(path)!r} is not an Optuna journal file (line {number} is not a "
                                       "journal entry); pass a new .log path or the journal a search wrote")
    except OSError as exc:
        raise NasUserError(f"cannot read journal storage {str(path)!r}: {exc.strerror or exc}") from None


def _sqlite_wal(engine) -> None:
    """Write-ahead log with synchronous=NORMAL: one trial's commit no longer waits for an fsync. A killed process
    loses no committed trial (the WAL is in the file system); only a power cut may lose the last few commits."""
    from sqlalchemy import event

    def pragmas(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", pragmas)
    engine.dispose()  # connections opened before the listener reconnect with the pragmas
