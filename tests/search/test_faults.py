"""Faults during a search, injected for real: the database lost mid-search (PostgreSQL's connections terminated,
then the server stopped for seconds and started again), a report folder that cannot be written (read-only, or
full), a worker whose trial was given away while it trained."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import optuna
import sqlalchemy as sa
from optuna.trial import TrialState

from nas.cli import main
from nas.study.schema import ARCH_ID, FAIL_REASON, SHAPE, STUDY_PROXY_PLAN, proxy_study_name
from tests.helpers import killed_if_left

FAST = ["--target", "pixel8", "--space", "tiny", "--trials", "20", "--seed", "2", "--no-progress",
        "--proxy-shapes", "3", "--proxy-tokens", "4096,8192", "--proxy-threads", "1"]


def _running(url: str, name: str) -> list:
    try:
        return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    except KeyError:
        return []


def _wait(predicate, timeout: float = 120.0, what: str = "") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _terminate_connections(url: str) -> int:
    """pg_terminate_backend on every other connection to the database: what a DBA, a failover or a proxy
    restart does to clients. Returns how many were cut."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as db:
            return int(db.execute(sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar_one())
    finally:
        engine.dispose()


def test_a_worker_survives_its_database_going_away(postgres_server):
    """A worker training on PostgreSQL: its connections are terminated mid-trial, then the server is stopped for
    3 s and started again. The worker retries each storage call until the database is back (one line each way),
    and the stage finishes with every shape trained exactly once and none left RUNNING."""
    url = postgres_server.url
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    argv = [*FAST, "--storage", url, "--study", "lost", "--no-report", "--heartbeat-interval", "1",
            "--grace-period", "30"]
    assert main(["search", *argv, "--stage", "latency"]) == 0
    name = proxy_study_name("lost")
    worker = subprocess.Popen([sys.executable, "-m", "nas", "search", *argv, "--stage", "proxy", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with killed_if_left(worker):
        _wait(lambda: _running(url, name), what="the worker to claim a shape")
        assert _terminate_connections(url) >= 1  # the worker's (and its heartbeat thread's) connections
        time.sleep(0.5)
        postgres_server.stop("fast")  # and now no server at all, for a few seconds
        time.sleep(3.0)
        postgres_server.start()
        out, err = worker.communicate(timeout=300)
    assert worker.returncode == 0, err
    assert "storage: lost the database" in err and "storage: the database is back after" in err, err
    assert "Traceback" not in err, err
    study = optuna.load_study(study_name=name, storage=url)
    plan = study.user_attrs[STUDY_PROXY_PLAN]
    trials = study.get_trials(deepcopy=False)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for arch_id in plan["arch_ids"]:  # each shape trained once (a shape failed and retried counts once), or it
        # failed on its own account (a tiny proxy that collapses), never because the database went away
        ended = [t for t in trials if t.user_attrs[ARCH_ID] == arch_id and t.state in (TrialState.COMPLETE,
                                                                                         TrialState.PRUNED)]
        own = [t for t in trials if t.user_attrs[ARCH_ID] == arch_id and t.state == TrialState.FAIL
               and str(t.user_attrs.get(FAIL_REASON, "")).startswith("ProxyDiverged")]
        assert len(ended) + len(own) == 1, (arch_id, [(t.number, t.state.name, t.user_attrs.get(ARCH_ID),
                                                      t.user_attrs.get(FAIL_REASON)) for t in trials])
    data = json.loads(out)
    assert data["proxy"]["done"] and data["proxy"]["pareto"]


def test_an_unreachable_database_at_start_is_refused_at_once(postgres_server, capsys):
    """Retrying is for a database lost mid-search; one that cannot be reached at the start is one line, at once."""
    start = time.monotonic()
    url = f"postgresql://nas@127.0.0.1:{postgres_server.port + 1}/nas"  # nothing listens there
    assert main(["search", *FAST, "--no-proxy", "--storage", url, "--no-report"]) == 2
    assert time.monotonic() - start < 30
    assert "cannot open study storage" in capsys.readouterr().err


OOM_DRIVER = r"""
import json, resource, sys
import torch  # noqa: F401 -- imported before the limit
from nas.proxy.scaling import ProxyRule
from nas.proxy.train import TrainSettings
from nas.search import ProxyOptions, Search, SearchSettings

# A batch of 2048 windows of 128 bytes: about 2 GiB of activations for a proxy of width 64.
train = TrainSettings(batch_size=2048, seq_len=128, warmup_tokens=128, eval_windows=4, curve_every=2)
proxy = ProxyOptions(shapes=2, rung_tokens=(2 * 2048 * 128,), rule=ProxyRule(shrink=2, head_dim=16), train=train,
                     threads=1)
settings = SearchSettings(targets=("pixel8",), space="tiny", trials=10, storage=sys.argv[1], study="oom", seed=1)
Search(settings, proxy=proxy, stage="latency", log=lambda _: None).run(progress=False)
with open("/proc/self/status") as fh:
    size = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
limit = size + 600 * 2**20  # what the process holds now, and 600 MiB more
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
result = Search(settings, proxy=proxy, stage="proxy", log=lambda _: None).run(progress=False)
print(json.dumps({"failed": result.proxy.failed, "done": result.proxy.outcome.done,
                  "states": result.proxy.outcome.states}))
"""


def test_a_proxy_over_its_memory_limit_fails_its_trial_and_the_stage_goes_on(tmp_path):
    """A real allocation failure: the worker runs under an address-space limit (RLIMIT_AS, 600 MiB above what it
    holds after the latency stage) and each proxy needs about 2 GiB; every trial is FAIL with "out of memory",
    and the stage ends instead of crashing."""
    storage = f"sqlite:///{tmp_path / 'nas.db'}"
    done = subprocess.run([sys.executable, "-c", OOM_DRIVER, storage], capture_output=True, text=True, timeout=300,
                          check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout.strip().splitlines()[-1])
    assert data["done"] and data["states"] == {"FAIL": 2}
    assert all(f["reason"].startswith("out of memory: ") for f in data["failed"]), data["failed"]


def test_a_trial_given_away_while_training_is_left_to_its_retry(tmp_path):
    """Another worker failed and requeued this worker's trial (its heartbeats were missed while the database was
    away): the worker does not crash on its next write; it leaves the trial to the retry and goes on."""
    from nas.proxy.scaling import ProxyRule
    from nas.proxy.train import TrainSettings
    from nas.search import ProxyOptions, Search, SearchSettings
    from nas.search.proxy_stage import ProxyWorker, _requeue

    tiny = ProxyOptions(shapes=2, rung_tokens=(256,), rule=ProxyRule(shrink=4, head_dim=8), threads=1,
                        train=TrainSettings(batch_size=4, seq_len=32, warmup_tokens=128, eval_windows=4,
                                            curve_every=2))
    settings = SearchSettings(targets=("pixel8",), space="tiny", trials=10, storage=f"sqlite:///{tmp_path / 'n.db'}",
                              study="g", seed=1)
    search = Search(settings, proxy=tiny, stage="latency", log=lambda _: None)
    search.run(progress=False)
    storage = search.storage
    study = optuna.load_study(study_name=proxy_study_name("g"), storage=storage)
    said: list[str] = []
    worker = ProxyWorker(storage, proxy_study_name("g"), tiny, ["maximize"], log=said.append, progress=False)
    frozen, trial_id = worker.claim(study)
    storage.set_trial_state_values(trial_id, state=TrialState.FAIL)  # what the other worker's stale check does
    _requeue(study, storage.get_trial(trial_id))
    run = worker._open(frozen, trial_id)
    assert worker._advance(study, run, []) == 0
    run.heartbeat.__exit__(None, None, None)
    assert said and "leaving it to the retry" in said[0]
    outcome = worker.run()
    trials = study.get_trials(deepcopy=False)
    assert outcome.done and [t.state for t in trials].count(TrialState.FAIL) == 1
    assert sorted(t.user_attrs[ARCH_ID] for t in trials if t.state == TrialState.COMPLETE) == \
        sorted(study.user_attrs[STUDY_PROXY_PLAN]["arch_ids"])


REPORT_ARGV = ["search", "--target", "pixel8", "--space", "tiny", "--trials", "10", "--no-progress", "--no-proxy",
               "--study", "r"]


def _stored_trials(folder) -> int:
    return len(optuna.load_study(study_name="r", storage=f"sqlite:///{folder}/runs/nas.db").trials)


def test_a_full_report_folder_keeps_the_trials_says_so_in_one_line_and_exits_1(tmp_path, monkeypatch, capsys):
    """Disk full, simulated for the report alone: its index.html is a symlink to /dev/full, where every write
    fails with ENOSPC ("No space left on device"), the error a full disk gives."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "runs" / "reports" / "r"
    folder.mkdir(parents=True)
    (folder / "index.html").symlink_to("/dev/full")
    assert main(REPORT_ARGV) == 1
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "cannot write the report to runs/reports/r: No space left on device" in lines[0], err
    assert "nas report --study r" in lines[0] and "Traceback" not in err
    assert "Pareto set:" in out  # what was found is still printed
    assert _stored_trials(tmp_path) >= 10


def test_a_read_only_report_folder_keeps_the_trials_says_so_in_one_line_and_exits_1(tmp_path, monkeypatch, capsys):
    """The default report folder's parent is read-only: chmod 555, or, when the tests run as root (who writes
    anywhere), the immutable attribute (chattr +i), which stops root too."""
    monkeypatch.chdir(tmp_path)
    reports = tmp_path / "runs" / "reports"
    reports.mkdir(parents=True)
    as_root = os.geteuid() == 0
    if as_root:
        subprocess.run(["chattr", "+i", str(reports)], check=True, capture_output=True)
    else:
        reports.chmod(0o555)
    try:
        assert main(REPORT_ARGV) == 1
    finally:
        if as_root:
            subprocess.run(["chattr", "-i", str(reports)], check=True, capture_output=True)
        reports.chmod(0o755)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "cannot write the report to runs/reports/r: " in lines[0], err
    assert ("Operation not permitted" if as_root else "Permission denied") in lines[0], err
    assert "Pareto set:" in out and "Traceback" not in err
    assert _stored_trials(tmp_path) >= 10


def test_a_proxy_past_its_time_limit_fails_its_trial_and_the_report_says_why(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["search", "--target", "pixel8", "--space", "tiny", "--trials", "10", "--no-progress", "--study", "t",
                 "--proxy-shapes", "2", "--proxy-tokens", "4096,8192", "--proxy-threads", "1",
                 "--proxy-time-limit", "0.001", "--report-dir", "rep"])
    out = capsys.readouterr().out
    assert code == 0
    failed = [line for line in out.splitlines() if line.strip().startswith("failed:")]
    assert len(failed) == 2 and all("ProxyTimeout: proxy training passed its time limit of 0.001 s" in line
                                    for line in failed), out
    assert out.count("failed to train on your text: ProxyTimeout") == 2  # the law's check flags both
    assert "0 trained to the last rung, 0 stopped early by successive halving, 2 failed" in out
    html = (tmp_path / "rep" / "index.html").read_text()
    assert html.count("ProxyTimeout: proxy training passed its time limit") == 2


def test_a_claim_from_a_stale_list_skips_a_trial_another_worker_finished(tmp_path):
    """Two workers read the WAITING list; one claims and finishes a trial before the other claims from its (now
    stale) list: the other moves on to the next trial instead of crashing (Optuna raises
    UpdateFinishedTrialError for a finished trial; found by benchmarks/bench_workers.py with 3 workers)."""
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    from nas.search import ProxyOptions
    from nas.search.proxy_stage import ProxyWorker

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "q.log")))
    study = optuna.create_study(study_name="q", storage=storage, directions=["minimize", "maximize"])
    for i in range(2):
        study.enqueue_trial(params={}, user_attrs={SHAPE: f"s{i}"}, skip_if_exists=False)
    snapshot = study.get_trials(deepcopy=True, states=(TrialState.WAITING,))

    class StaleList:  # the other worker's view: the list it read before the first trial was finished
        study_name = "q"

        def get_trials(self, deepcopy=False, states=None):
            return snapshot

    first = ProxyWorker(storage, "q", ProxyOptions(), ["maximize"], progress=False)
    frozen, _ = first.claim(study)
    study.tell(frozen.number, values=[1.0, 1.0])
    second = ProxyWorker(storage, "q", ProxyOptions(), ["maximize"], progress=False)
    claimed, _ = second.claim(StaleList())
    assert (frozen.number, claimed.number) == (0, 1)
