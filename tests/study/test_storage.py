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
