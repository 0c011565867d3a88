"""Throughput of the proxy stage's trial bookkeeping: N worker processes on one storage, training replaced by
nothing, so what is timed is the queue itself.

Each worker is the real `nas.search.proxy_stage.ProxyWorker` loop (stale-trial check, atomic claim of a WAITING trial,
a heartbeat thread, the attrs and intermediate value a trained trial writes, `tell`), with `_train_claimed`
replaced by the same storage writes and no training. A study with --trials WAITING trials is enqueued first; the
workers start together (after their imports, at a common start time); trials/s = trials / (last trial finished -
first trial started), from the trials' own timestamps in the storage. Every run is checked: each trial finished
exactly once (no duplicate claims), none left WAITING or RUNNING.

Configurations: SQLite with 1 and 3 workers, PostgreSQL (a server this script starts on loopback in a temporary
folder, as the tests do) with 1 and 3 workers, an Optuna journal file with 1 and 3 workers. Also the latency
stage alone (one process; it runs once however many workers there are) on SQLite and PostgreSQL: Optuna trials
written per second by `nas search --no-proxy` on the tiny space.

    flock /work/scratch/bench.lock .venv/bin/python benchmarks/bench_workers.py [--trials 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.postgres import running_postgres  # noqa: E402 -- fsync on: a commit costs what it costs on a server


# ------------------------------------------------------------------------------------------------ a worker
def worker_main(storage_url: str, study: str, start_at: float) -> None:
    import optuna

    from nas.search.proxy_stage import ProxyOptions, ProxyWorker, _HeartbeatThread
    from nas.study import schema
    from nas.study.storage import Heartbeat, open_storage

    class CheapWorker(ProxyWorker):
        """The real loop; each claimed trial writes what a trained one writes, and trains nothing."""

        def _configure_torch(self) -> None:
            pass

        def _train_claimed(self, study, frozen, trial_id: int) -> int:
            set_attr = lambda key, value: self.storage.set_trial_user_attr(trial_id, key, value)  # noqa: E731
            with _HeartbeatThread(self.storage, trial_id):
                set_attr(schema.PROXY_ARCH, {"hidden_size": 128})
                self.storage.set_trial_intermediate_value(trial_id, 0, 2.0)
                set_attr(schema.PROXY_HISTORY, [{"rung": 0, "val_bpb": 2.0}])
                set_attr(schema.QUALITY, -2.0)
                set_attr(schema.QUALITY_SOURCE, "proxy_bpb")
            self._tell(study, frozen, trial_id, values=[2.0, float(frozen.number)])
            return 1

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(storage_url, heartbeat=Heartbeat(10, 60))
    worker = CheapWorker(storage, study, ProxyOptions(), ["maximize"], progress=False)
    time.sleep(max(0.0, start_at - time.time()))
    worker.run()


# ------------------------------------------------------------------------------------------------ one run
def one_run(storage_url: str, workers: int, trials: int, study: str) -> float:
    import optuna
    from optuna.trial import TrialState

    from nas.study.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(storage_url)
    s = optuna.create_study(study_name=study, storage=storage, directions=["minimize", "maximize"])
    for i in range(trials):
        s.enqueue_trial(params={}, user_attrs={"shape": f"shape {i}"}, skip_if_exists=False)
    start_at = time.time() + 8.0 + workers  # every worker past its imports
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", storage_url, study, repr(start_at)],
                              stderr=subprocess.PIPE, text=True) for _ in range(workers)]
    for p in procs:
        _, err = p.communicate(timeout=900)
        if p.returncode != 0:
            sys.exit(f"a worker failed ({p.returncode}): {err.strip().splitlines()[-3:]}")
    done = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    states = [t.state for t in done]
    assert len(done) == trials and states.count(TrialState.COMPLETE) == trials, "a trial is not COMPLETE"
    assert len({t.number for t in done}) == trials  # no duplicates
    first = min(t.datetime_start for t in done)
    last = max(t.datetime_complete for t in done)
    return trials / (last - first).total_seconds()


def latency_stage(storage_url: str, study: str, trials: int) -> float:
    """Optuna trials written per second by the latency stage (tiny space: exact front added, then stored)."""
    import optuna

    from nas.search import Search, SearchSettings

    settings = SearchSettings(targets=("pixel8",), space="tiny", trials=trials, storage=storage_url, study=study,
                              seed=1)
    start = time.perf_counter()
    Search(settings, proxy=None, log=lambda _: None).run(progress=False)
    seconds = time.perf_counter() - start
    return len(optuna.load_study(study_name=study, storage=storage_url).trials) / seconds


def main(argv: list[str]) -> int | None:
    if argv and argv[0] == "--worker":
        worker_main(argv[1], argv[2], float(argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-trials", type=int, default=200)
    args = parser.parse_args(argv)
    os.environ.setdefault("NAS_HOME", tempfile.mkdtemp(prefix="nas-bench-home-"))
    print(f"machine: {os.cpu_count()} cpus, load average at start {os.getloadavg()[0]:.1f}; "
          f"{args.trials} trials per run, {args.repeats} repeats, medians")
    results: dict[str, list[float]] = {}
    latency: dict[str, list[float]] = {}
    with running_postgres(fsync=True) as pg, tempfile.TemporaryDirectory() as tmp:
        backends = {"sqlite": lambda i, w: f"sqlite:///{tmp}/q{i}-{w}.db",
                    "postgresql": lambda i, w: pg.url,
                    "journal": lambda i, w: f"{tmp}/q{i}-{w}.log"}
        for repeat in range(args.repeats):
            for name, url_of in backends.items():
                for workers in (1, 3):
                    key = f"{name} x{workers}"
                    rate = one_run(url_of(repeat, workers), workers, args.trials, f"bench-{repeat}-{workers}")
                    results.setdefault(key, []).append(rate)
                    print(f"  run {repeat + 1}: {key:<14} {rate:7.1f} trials/s", flush=True)
            for name, url in (("sqlite", f"sqlite:///{tmp}/lat{repeat}.db"), ("postgresql", pg.url)):
                rate = latency_stage(url, f"lat-{repeat}", args.latency_trials)
                latency.setdefault(name, []).append(rate)
                print(f"  run {repeat + 1}: latency stage on {name:<10} {rate:7.1f} Optuna trials/s", flush=True)
    print("proxy-queue bookkeeping (claim, heartbeat, attrs, intermediate value, tell; no training), "
          "trials/s, median [min-max]:")
    for key, rates in results.items():
        print(f"  {key:<14} {statistics.median(rates):7.1f}  [{min(rates):.1f}-{max(rates):.1f}]")
    print("latency stage (one process), Optuna trials written/s, median [min-max]:")
    for key, rates in latency.items():
        print(f"  {key:<14} {statistics.median(rates):7.1f}  [{min(rates):.1f}-{max(rates):.1f}]")
    pg3, sq1 = statistics.median(results["postgresql x3"]), statistics.median(results["sqlite x1"])
    print(f"HEADLINE proxy-queue bookkeeping: 3 workers on PostgreSQL {pg3:.1f} trials/s vs 1 worker on SQLite "
          f"{sq1:.1f} trials/s (x{pg3 / sq1:.2f}); load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
