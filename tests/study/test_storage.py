"""Opening a study storage: workers started together on a new SQLite database all get it (real processes)."""

from __future__ import annotations

import subprocess
import sys
import time

import optuna

OPEN_AT = """
import sys, time
from nas.study.storage import Heartbeat, open_storage
start = float(sys.argv[2])
while time.time() < start:  # every process opens the storage at the same instant
    pass
open_storage(sys.argv[1], heartbeat=Heartbeat())
print("opened")
"""


def test_workers_started_together_on_a_new_sqlite_database_all_open_it(tmp_path):
    for round_ in range(2):
        url = f"sqlite:///{tmp_path / f'new{round_}.db'}"
        start = time.time() + 6  # after every interpreter has imported optuna
        workers = [subprocess.Popen([sys.executable, "-c", OPEN_AT, url, str(start)], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for _ in range(4)]
        results = [w.communicate(timeout=120) for w in workers]
        for worker, (out, err) in zip(workers, results):
            assert worker.returncode == 0 and out.strip() == "opened", err
        optuna.create_study(storage=url, study_name="after")  # the schema the winner made is whole


def _sqlalchemy_error(url: str, sql: str, setup=None):
    """The real error SQLAlchemy raises running `sql` on `url` (after `setup(engine)`)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import DBAPIError

    engine = create_engine(url, connect_args={"timeout": 0})
    try:
        if setup:
            setup(engine)
        with engine.begin() as conn:
            conn.execute(text(sql))
    except DBAPIError as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError("no error")


def test_database_errors_are_transient_or_permanent_by_their_code(tmp_path):
    """A database that is busy is worth retrying; one that is read-only, full or not a database is not: the
    search used to retry those for 120 s ("lost the database") and then end in two lines."""
    import sqlite3

    from nas.study.storage import lost_connection, permanent_cause

    db = tmp_path / "x.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table t (a)")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("begin exclusive")  # another process in the middle of a write
    try:
        busy = _sqlalchemy_error(f"sqlite:///{db}", "insert into t values (1)")
    finally:
        holder.close()
    assert lost_connection(busy) and permanent_cause(busy) is None

    read_only = _sqlalchemy_error(f"sqlite:///file:{db}?mode=ro&uri=true", "insert into t values (1)")
    assert not lost_connection(read_only) and permanent_cause(read_only).startswith("the database is read-only")

    (tmp_path / "notes.db").write_text("my notes\n" * 200)
    not_a_db = _sqlalchemy_error(f"sqlite:///{tmp_path / 'notes.db'}", "select * from sqlite_master")
    assert not lost_connection(not_a_db) and permanent_cause(not_a_db) == "the file is not a database"


def test_a_full_disk_under_a_search_is_one_line_at_once(tmp_path):
    """The disk fills under a running search (a file-size limit on the process, RLIMIT_FSIZE, makes the kernel
    refuse SQLite's writes part-way): one line naming the cause, exit 2, and no "lost the database" retries."""
    import os
    import resource

    from nas.cli import main

    url = f"sqlite:///{tmp_path / 'full.db'}"
    assert main(["search", "--target", "pixel8", "--space", "tiny", "--no-proxy", "--trials", "5", "--storage", url,
                 "--no-progress", "--no-report"]) == 0
    limit = (tmp_path / "full.db").stat().st_size + 4096

    def full_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "nas", "search", "--target", "pixel8", "--space", "tiny",
                           "--no-proxy", "--trials", "60", "--storage", url, "--study", "more", "--no-progress",
                           "--no-report"], capture_output=True, text=True, preexec_fn=full_disk, timeout=300,
                          env={**os.environ, "NAS_HOME": str(tmp_path / "home")})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"nas search: error: study storage {url}: the disk"), lines
