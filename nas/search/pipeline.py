"""One `nas search` run: the latency stage, then the proxy stage, for one process among any number.

Any number of processes may run the same `nas search` (same --storage and --study) at once, on one machine or
many (an RDB storage such as PostgreSQL). The latency stage runs under a lock (`StageLock`), so it happens
once: the first process runs it and plans the proxy stage (chooses and enqueues the shapes); the others wait
for the lock, then find the stage finished (a resumed latency stage with its budget spent evaluates nothing)
and join the proxy stage as workers. `--stage latency` runs only the first part, `--stage proxy` only joins as
a worker (waiting for the plan), `--stage all` (the default) does both.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

from nas.core.arch import ArchConfig
from nas.core.errors import NasUserError
from nas.proxy.corpus import load_corpus
from nas.search.latency_stage import LatencyStage, SearchResult
from nas.search.output import pareto_row
from nas.search.proxy_stage import ProxyOptions, ProxyOutcome, ProxyWorker, enqueue, proxy_objectives
from nas.search.recommendation import law_picks, recommendation
from nas.search.selection import Candidates, select_shapes
from nas.search.settings import STAGES, SearchSettings
from nas.study import schema
from nas.study.read import failure_reason, pareto_set, read_study, seed_noise
from nas.study.resume import PROXY, load_or_none, open_study, settle_name
from nas.study.storage import Heartbeat, open_storage

LOCK_SUFFIX = ":lock"
LOCK_BEAT_S = 5.0
LOCK_STALE_S = 60.0  # a lock whose holder has not refreshed it for this long is taken over
WAIT_LOG_S = 30.0


class StageLock:
    """A lock shared by every process using one storage: a study named `<study>:lock` exists while it is held.
    Study names are unique in every Optuna storage, so exactly one of several simultaneous `create_study`
    calls succeeds. The holder refreshes a timestamp every LOCK_BEAT_S; a waiter takes over a lock whose
    timestamp is older than LOCK_STALE_S (its holder died), by deleting it and creating it again, which again
    only one waiter can win."""

    def __init__(self, storage, name: str, log: Callable[[str], None]):
        self.storage, self.name, self.log = storage, name + LOCK_SUFFIX, log
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _try_create(self) -> bool:
        import optuna

        try:
            study = optuna.create_study(study_name=self.name, storage=self.storage)
        except optuna.exceptions.DuplicatedStudyError:
            return False
        study.set_user_attr("holder", self.holder)
        study.set_user_attr("beat", time.time())
        return True

    def _holder_beat(self) -> tuple[str, float | None]:
        import optuna

        try:
            attrs = optuna.load_study(study_name=self.name, storage=self.storage).user_attrs
        except KeyError:
            return "", None
        return str(attrs.get("holder", "?")), attrs.get("beat")

    def acquire(self) -> None:
        import optuna

        said = 0.0
        while not self._try_create():
            holder, beat = self._holder_beat()
            if beat is not None and time.time() - float(beat) > LOCK_STALE_S:
                self.log(f"taking over the latency stage from {holder} (no sign of life for {LOCK_STALE_S:.0f} s)")
                try:
                    optuna.delete_study(study_name=self.name, storage=self.storage)
                except KeyError:
                    pass  # another waiter deleted it first; whoever creates it next holds it
                continue
            if time.time() - said > WAIT_LOG_S:
                self.log(f"waiting: {holder or 'another process'} is running the latency stage")
                said = time.time()
            time.sleep(1.0)
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        import optuna

        while not self._stop.wait(LOCK_BEAT_S):
            try:
                optuna.load_study(study_name=self.name, storage=self.storage).set_user_attr("beat", time.time())
            except Exception:  # noqa: BLE001 -- a lost beat only lets a waiter take over later; never crash
                pass

    def release(self) -> None:
        import optuna

        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=LOCK_BEAT_S + 1)
        try:
            optuna.delete_study(study_name=self.name, storage=self.storage)
        except KeyError:
            pass

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


@dataclass
class ProxySummary:
    """The proxy stage as this run leaves it."""

    study_name: str
    chosen: int  # shapes in the plan
    candidates: int  # feasible shapes they were chosen from
    outcome: ProxyOutcome | None  # this process's work (None with --stage latency)
    pareto: list[dict[str, Any]] = field(default_factory=list)  # proxy quality vs speed, one row per shape
    pruned: list[dict[str, Any]] = field(default_factory=list)  # shapes stopped early, with rung and reason
    failed: list[dict[str, Any]] = field(default_factory=list)  # shapes whose training failed, with the reason
    objectives: tuple = ()
    noise: float | None = None  # seed noise of the scores at the last rung (nas.study.read.seed_noise), bits/byte


class Search:
    """`nas search`: construct (resolves and validates everything, writes nothing), then `run()`."""

    def __init__(self, settings: SearchSettings, proxy: ProxyOptions | None = None, stage: str = "all",
                 log: Callable[[str], None] | None = None, heartbeat: Heartbeat | None = None):
        if stage not in STAGES:
            raise NasUserError(f"--stage {stage!r} is not one of {', '.join(STAGES)}")
        if stage == "proxy" and proxy is None:
            raise NasUserError("--stage proxy with --no-proxy leaves nothing to do")
        self.log = log or (lambda line: print(line, file=sys.stderr))
        self.latency = LatencyStage(settings, log=self.log)
        self.proxy_options, self.stage = proxy, stage
        self.heartbeat = heartbeat or Heartbeat()
        self.settings = settings
        self.study_name = self.latency.problem.study_name  # settled when run() opens the storage
        self.storage = None  # the storage run() opened

    def proxy_meta(self) -> schema.StudyMeta:
        meta = self.latency.problem.meta
        corpus = load_corpus(self.proxy_options.data)
        return schema.StudyMeta(**{**meta.__dict__, "objectives": proxy_objectives(meta.objectives),
                            "proxy": self.proxy_options.identity(corpus)})

    def run(self, progress: bool = True) -> SearchResult:
        import optuna

        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per study and trial created
        try:
            return self._run(progress)
        finally:
            optuna.logging.set_verbosity(verbosity)

    def validate(self) -> None:
        """Every refusal that needs no storage (the exact stage's impossible constraints; the settings, names,
        --data and --device were checked when this was built): call before anything is written."""
        if self.stage in ("all", "latency"):
            self.latency.exact

    def _run(self, progress: bool) -> SearchResult:
        self.validate()  # before the storage is opened: opening creates a new database
        url = self.latency.problem.storage_url
        storage = self.storage = open_storage(url, heartbeat=self.heartbeat if self.proxy_options else None)
        self.study_name = self._settle_name(storage, url)  # refusals (other settings) before any write
        if self.proxy_options is not None:
            open_study(storage, url, schema.proxy_study_name(self.study_name), self.proxy_meta(), kind=PROXY,
                       create=False)
        result = None
        if self.stage in ("all", "latency"):
            with StageLock(storage, self.study_name, self.log) if not _in_memory(storage) else nullcontext():
                result = self._latency_and_plan(storage, progress)
        if self.proxy_options is not None and self.stage in ("all", "proxy") and not (result and result.interrupted):
            if result is None:
                result = self._wait_for_plan(storage)
            outcome = ProxyWorker(storage, schema.proxy_study_name(self.study_name), self.proxy_options,
                                  [o.direction for o in proxy_objectives(self.latency.problem.objectives)][1:],
                                  log=self.log, progress=progress).run()
            result.interrupted = result.interrupted or outcome.interrupted
            result.proxy = self._proxy_summary(storage, outcome)
        elif self.proxy_options is not None and result is not None:
            result.proxy = self._proxy_summary(storage, None)
        if result is not None:
            result.recommendation = recommendation(result, self.latency, self.settings.storage, storage)
        return result

    def _settle_name(self, storage, url: str) -> str:
        """The study name this run uses (`nas.study.resume.settle_name`); a default name whose proxy stage was
        trained with other proxy settings (another --data, rung budgets, seeds, ...) gives these settings a
        study of their own, `<name>-<digest>` (the same every time, so running them again resumes it), as the
        latency stage does for its own settings, instead of an error."""
        problem, by_user = self.latency.problem, self.settings.named_by_user
        name = problem.study_name
        if self.stage in ("all", "latency"):
            name = settle_name(storage, url, name, by_user, problem.meta, self.log)
        if self.proxy_options is None or by_user:
            return name
        proxy = load_or_none(storage, url, schema.proxy_study_name(name))
        old = None if proxy is None else schema.StudyMeta.from_user_attrs(proxy.user_attrs)
        mine = self.proxy_meta()
        if old is None or old.identity() == mine.identity():
            return name
        renamed = f"{name}-{mine.digest()}"
        self.log(f"note: study {name!r} has a proxy stage trained with other settings "
                 f"({'; '.join(mine.differences(old)[:3])}); this one is study {renamed!r}")
        if self.stage in ("all", "latency"):
            renamed = settle_name(storage, url, renamed, True, problem.meta, self.log)
        return renamed

    def _latency_and_plan(self, storage, progress: bool) -> SearchResult:
        result = self.latency.run(progress=progress, storage=storage, study_name=self.study_name)
        if result.interrupted or self.proxy_options is None:
            return result
        self.latency.loop.study.set_user_attr(schema.STUDY_LATENCY_DONE, True)
        proxy_study = open_study(storage, self.latency.problem.storage_url, schema.proxy_study_name(self.study_name),
                                 self.proxy_meta(), kind=PROXY)
        if schema.STUDY_PROXY_PLAN not in proxy_study.user_attrs:
            self._plan(proxy_study, result)
        return result

    def _plan(self, proxy_study, result: SearchResult) -> None:
        """Choose the shapes to train and queue them on the proxy study, once."""
        batch, speeds, quality, record_of = self.latency.candidates()
        law = self.latency.problem.quality_model
        pick_ids: frozenset[str] = frozenset()
        if law is None:
            chosen = select_shapes(Candidates.of(batch, speeds), self.proxy_options.shapes)
        else:  # the law's picks first, then shapes on and near its front (within its band)
            rec = law_picks(result, self.latency, self.settings.storage) or {"picks": {}}
            first = [batch.index_of(ArchConfig.from_dict(p["arch"])) for p in rec["picks"].values()]
            chosen = select_shapes(Candidates.of(batch, speeds, quality), self.proxy_options.shapes,
                                   slack=law.band, first=tuple(i for i in first if i is not None))
            pick_ids = frozenset(p["arch_id"] for p in rec["picks"].values())
        picked = [record_of(i) for i in chosen]
        added = enqueue(proxy_study, [r for r, _ in picked], [v for _, v in picked],
                        self.proxy_options.rung_tokens, picks=pick_ids)
        proxy_study.set_user_attr(schema.STUDY_PROXY_PLAN, {
            "arch_ids": [r.arch.arch_id for r, _ in picked], "candidates": int(len(batch)),
            "enqueued": added, "time": time.time()})
        front = "the parameter-count front" if law is None else "the predicted-loss front, its picks first"
        self.log(f"proxy stage: {len(picked)} shapes chosen from {len(batch):,} feasible candidates "
                 f"(on and near {front}, spread along {self.latency.problem.speed_objective().label})")

    def _wait_for_plan(self, storage) -> SearchResult:
        """--stage proxy: wait until the latency stage has planned the proxy stage, then read its result."""
        import optuna

        said = 0.0
        name = schema.proxy_study_name(self.study_name)
        while True:
            try:
                study = optuna.load_study(study_name=name, storage=storage)
                if schema.STUDY_PROXY_PLAN in study.user_attrs:
                    break
            except KeyError:
                pass
            if time.time() - said > WAIT_LOG_S:
                self.log(f"waiting for the latency stage of study {self.study_name!r} to plan the proxy stage "
                         f"(run `nas search ... --stage latency` if no process is running it)")
                said = time.time()
            time.sleep(2.0)
        # The budget is spent: reads the stored study, evaluates nothing.
        return self.latency.run(progress=False, storage=storage, study_name=self.study_name)

    def _proxy_summary(self, storage, outcome: ProxyOutcome | None) -> ProxySummary:
        import optuna
        from optuna.trial import TrialState

        name = schema.proxy_study_name(self.study_name)
        study = optuna.load_study(study_name=name, storage=storage)
        read = read_study(study)
        plan = study.user_attrs.get(schema.STUDY_PROXY_PLAN, {})
        trials = study.get_trials(deepcopy=False)
        by_number = {t.number: t for t in trials}
        front = pareto_set(read.points.values(), read.directions)
        rows = [{**pareto_row(by_number[n], read.meta.objectives),
                 "twins": [read.points[m].arch_id for m in group[1:]]} for n, group in front.items()]
        rows.sort(key=lambda r: (-r["quality"], r["trial"]))
        pruned = [{"trial": t.number, "shape": t.user_attrs.get(schema.SHAPE),
                   "arch_id": t.user_attrs.get(schema.ARCH_ID),
                   "rung": t.user_attrs.get(schema.PRUNED_AT_RUNG), "reason": t.user_attrs.get(schema.PRUNE_REASON),
                   "val_bpb": -float(t.user_attrs.get(schema.QUALITY, float("nan")))}
                  for t in trials if t.state == TrialState.PRUNED]
        failed = [{"trial": t.number, "shape": t.user_attrs.get(schema.SHAPE),
                   "arch_id": t.user_attrs.get(schema.ARCH_ID),
                   "reason": failure_reason(t, trials)}
                  for t in trials if t.state == TrialState.FAIL]
        return ProxySummary(name, len(plan.get("arch_ids", [])), int(plan.get("candidates", 0)), outcome, rows,
                            pruned, failed, read.meta.objectives,
                            seed_noise(t.user_attrs for t in trials if t.state == TrialState.COMPLETE))


def _in_memory(storage) -> bool:
    import optuna

    return isinstance(storage, optuna.storages.InMemoryStorage)
