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
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from nas.core.arch import ArchBatch, ArchConfig
from nas.core.errors import NasUserError
from nas.proxy.corpus import load_corpus
from nas.search.latency_stage import LatencyStage, SearchResult, SearchSettings
from nas.search.advice import (ProxyScore, fixed_speed_picks, knee_stability, landmark_matches, law_check,
                               proxy_move, trade_words)
from nas.search.output import group_twins, pareto_row, recommend
from nas.search.proxy_stage import ProxyOptions, ProxyOutcome, ProxyWorker, enqueue, open_proxy_study, proxy_objectives
from nas.search.selection import Candidates, select_shapes
from nas.study import schema as S
from nas.study.pareto import pareto_mask, to_minimisation
from nas.study.read import failure_reason, seed_noise
from nas.study.schema import StudyMeta, TrialRecord, proxy_study_name
from nas.study.storage import Heartbeat, open_storage

STAGES = ("all", "latency", "proxy")
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

    @property
    def study_name(self) -> str:
        return self.latency.study_name

    def proxy_meta(self) -> StudyMeta:
        meta = self.latency.meta
        corpus = load_corpus(self.proxy_options.data)
        return StudyMeta(**{**meta.__dict__, "objectives": proxy_objectives(meta.objectives),
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
            self.latency.plan()

    def _run(self, progress: bool) -> SearchResult:
        self.validate()  # before the storage is opened: opening creates a new database
        storage = self._storage = open_storage(self.latency.storage_url,
                                               heartbeat=self.heartbeat if self.proxy_options else None)
        self.latency.storage = storage
        default_name = not self.latency.named_by_user
        if self.stage in ("all", "latency"):
            self.latency.prepare()  # refusals (impossible constraints, other settings) before any write
        if self.proxy_options is not None:
            if default_name:
                self._name_for_proxy_settings(storage)
            open_proxy_study(storage, proxy_study_name(self.study_name), self.proxy_meta(), create=False)
        shared = not _in_memory(storage)
        result = None
        if self.stage in ("all", "latency"):
            if shared:
                with StageLock(storage, self.study_name, self.log):
                    result = self._latency_and_plan(storage, progress)
            else:
                result = self._latency_and_plan(storage, progress)
        if self.proxy_options is not None and self.stage in ("all", "proxy") and not (result and result.interrupted):
            if result is None:
                result = self._wait_for_plan(storage, progress)
            outcome = ProxyWorker(storage, proxy_study_name(self.study_name), self.proxy_options,
                                  [o.direction for o in proxy_objectives(self.latency.objectives)][1:],
                                  log=self.log, progress=progress).run()
            result.interrupted = result.interrupted or outcome.interrupted
            result.proxy = self._proxy_summary(storage, outcome)
        elif self.proxy_options is not None and result is not None:
            result.proxy = self._proxy_summary(storage, None)
        if result is not None:
            result.recommendation = self.recommendation(result)
        return result

    def _name_for_proxy_settings(self, storage) -> None:
        """A default study name whose proxy stage was trained with other proxy settings (another --data, rung
        budgets, seeds, ...) gives these settings a study of their own, `<name>-<digest>` (the same every time, so
        running them again resumes it), as the latency stage does for its own settings, instead of an error."""
        import optuna

        try:
            study = optuna.load_study(study_name=proxy_study_name(self.study_name), storage=storage)
        except KeyError:
            return
        old, mine = StudyMeta.from_user_attrs(study.user_attrs), self.proxy_meta()
        if old is None or old.identity() == mine.identity():
            return
        base = self.study_name
        self.latency.study_name = f"{base.split(':')[0]}-{mine.digest()}"
        self.latency.named_by_user = True
        shown = "; ".join(mine.differences(old)[:3])
        self.log(f"note: study {base!r} has a proxy stage trained with other settings ({shown}); this one is study "
                 f"{self.study_name!r}")
        if self.stage in ("all", "latency"):
            self.latency.check_existing_study()

    def _latency_and_plan(self, storage, progress: bool) -> SearchResult:
        result = self.latency.run(progress=progress)
        if result.interrupted or self.proxy_options is None:
            return result
        study = self.latency.study
        study.set_user_attr(S.STUDY_LATENCY_DONE, True)
        proxy_study = open_proxy_study(storage, proxy_study_name(self.study_name), self.proxy_meta(), create=True)
        if S.STUDY_PROXY_PLAN not in proxy_study.user_attrs:
            batch, speeds, quality, record_of = self.latency.candidates()
            law = self.latency.quality_model
            pick_ids: frozenset[str] = frozenset()
            if law is None:
                chosen = select_shapes(Candidates.of(batch, speeds), self.proxy_options.shapes)
            else:  # the law's picks first, then shapes on and near its front (within its band)
                rec = self._law_picks(result) or {"picks": {}}
                first = [batch.index_of(ArchConfig.from_dict(p["arch"])) for p in rec["picks"].values()]
                chosen = select_shapes(Candidates.of(batch, speeds, quality), self.proxy_options.shapes,
                                       slack=law.band, first=tuple(i for i in first if i is not None))
                pick_ids = frozenset(p["arch_id"] for p in rec["picks"].values())
            picked = [record_of(i) for i in chosen]
            added = enqueue(proxy_study, [r for r, _ in picked], [v for _, v in picked],
                            self.proxy_options.rung_tokens, picks=pick_ids)
            proxy_study.set_user_attr(S.STUDY_PROXY_PLAN, {
                "arch_ids": [r.arch.arch_id for r, _ in picked], "candidates": int(len(batch)),
                "enqueued": added, "time": time.time()})
            front = "the parameter-count front" if law is None else "the predicted-loss front, its picks first"
            self.log(f"proxy stage: {len(picked)} shapes chosen from {len(batch):,} feasible candidates "
                     f"(on and near {front}, spread along {self.latency.speed_objective().label})")
        return result

    # ------------------------------------------------------------------------------------------ recommendation
    def _law_picks(self, result: SearchResult, exclude: frozenset = frozenset()) -> dict[str, Any] | None:
        """The three picks of the latency stage's front under the law (losses within its band tie)."""
        target = result.meta.targets[0]
        rows = [r for r in result.pareto if r["arch_id"] not in exclude]
        rec = recommend(rows, target, self.study_name, self.settings.storage,
                        result.meta.latency_errors.get(target), tie=self.latency.quality_model.band, unit="nats",
                        tie_what="the quality law's band")
        if rec is not None:
            by_id = {r["arch_id"]: r for r in rows}
            for pick in rec["picks"].values():
                pick["predicted_loss"] = -pick["quality"]
                pick["arch"] = by_id[pick["arch_id"]]["arch"]
        return rec

    def recommendation(self, result: SearchResult) -> dict[str, Any] | None:
        """What nas recommends, and why: with the law, the picks of the predicted-loss front, what the knee
        trades, the best shape at fixed speeds, how stable the knee is, where published models sit and what the
        proxy check on the user's text says (and moves, by `advice.proxy_move`); with --quality params, the picks
        of the proxy front (its seed noise as the tie) or of the parameter-count front."""
        target = result.meta.targets[0]
        law = self.latency.quality_model
        if law is None:
            proxy = result.proxy
            final = proxy.pareto if proxy is not None and proxy.pareto else result.pareto
            study = proxy.study_name if final is not result.pareto else result.study_name
            noise = proxy.noise if final is not result.pareto else None
            return recommend(final, target, study, self.settings.storage, result.meta.latency_errors.get(target),
                             noise)
        scores = self._proxy_scores(result)
        failed = frozenset(s.arch_id for s in scores if s.state == "FAIL")
        rec = self._law_picks(result, failed)
        if rec is None:
            return None
        table = self.latency.shape_table(target)
        picks = rec["picks"]
        knee = picks["knee"]
        rec["trade"] = trade_words(knee, picks["best-quality"], picks["fastest"], law.band)
        rec["band_nats"] = law.band
        rec["train_tokens"] = law.train_tokens
        rec["fixed_speeds"] = fixed_speed_picks(table, law.band)
        row = table.batch.index_of(ArchConfig.from_dict(knee["arch"]))
        rec["stability"] = knee_stability(table, law, row) if row is not None else {"fits": 0}
        rec["landmarks"] = landmark_matches(self.latency.landmark_rows(target), table)
        rec["skipped_failed"] = sorted(failed)
        if result.proxy is not None:
            noise = result.proxy.noise
            rec["law_check"] = law_check(scores, noise, law.band)
            for name in ("knee", "best-quality"):
                moved, why = proxy_move(picks[name]["arch_id"], scores, noise, law.band)
                if moved is not None:
                    picks[name] = {**picks[name], "moved_from": picks[name]["shape"], "shape": moved.shape,
                                   "arch_id": moved.arch_id, "why": why, "predicted_loss": moved.predicted_loss,
                                   "trial": moved.trial, "study": result.proxy.study_name,
                                   "decode_tokens_per_s": moved.decode_tokens_per_s,
                                   "export": picks[name]["export"] and picks[name]["export"].replace(
                                       f"--study {self.study_name} --trial {picks[name]['trial']}",
                                       f"--study {result.proxy.study_name} --trial {moved.trial}")}
        for pick in picks.values():
            pick.pop("arch", None)
        return rec

    def _proxy_scores(self, result: SearchResult) -> list[ProxyScore]:
        """Every proxy trial that ended, with the law's prediction for its shape (empty without a proxy stage)."""
        if result.proxy is None:
            return []
        import optuna

        target = result.meta.targets[0]
        study = optuna.load_study(study_name=result.proxy.study_name, storage=self._storage)
        trials = study.get_trials(deepcopy=False)
        out = []
        for t in trials:
            if t.state.name not in ("COMPLETE", "PRUNED", "FAIL") or not TrialRecord.present_in(t.user_attrs):
                continue
            rec = TrialRecord.from_user_attrs(t.user_attrs)
            loss = float(self.latency.quality_model.predict(ArchBatch.from_configs([rec.arch]))[0])
            fig = rec.figures.get(target)
            bpb = None if t.state.name == "FAIL" else rec.loss
            reason = failure_reason(t, trials) if t.state.name == "FAIL" else str(t.user_attrs.get(S.PRUNE_REASON, ""))
            out.append(ProxyScore(rec.arch.arch_id, rec.arch.short_tag, t.state.name, bpb, loss,
                                  None if fig is None else fig.decode_tokens_per_s, t.number, reason))
        return out

    def _wait_for_plan(self, storage, progress: bool) -> SearchResult:
        """--stage proxy: wait until the latency stage has planned the proxy stage, then read its result."""
        import optuna

        said = 0.0
        name = proxy_study_name(self.study_name)
        while True:
            try:
                study = optuna.load_study(study_name=name, storage=storage)
                if S.STUDY_PROXY_PLAN in study.user_attrs:
                    break
            except KeyError:
                pass
            if time.time() - said > WAIT_LOG_S:
                self.log(f"waiting for the latency stage of study {self.study_name!r} to plan the proxy stage "
                         f"(run `nas search ... --stage latency` if no process is running it)")
                said = time.time()
            time.sleep(2.0)
        return self.latency.run(progress=False)  # the budget is spent: reads the stored study, evaluates nothing

    def _proxy_summary(self, storage, outcome: ProxyOutcome | None) -> ProxySummary:
        import optuna
        from optuna.trial import TrialState

        name = proxy_study_name(self.study_name)
        study = optuna.load_study(study_name=name, storage=storage)
        meta = StudyMeta.from_user_attrs(study.user_attrs)
        plan = study.user_attrs.get(S.STUDY_PROXY_PLAN, {})
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
        rows = []
        if complete:
            mask = pareto_mask(to_minimisation(np.array([t.values for t in complete]),
                                               [o.direction for o in meta.objectives]))
            rows = [pareto_row(t, meta.objectives) for t, m in zip(complete, mask) if m]
            rows.sort(key=lambda r: (-r["quality"], r["trial"]))
            rows = group_twins(rows)
        pruned = [{"trial": t.number, "shape": t.user_attrs.get(S.SHAPE), "arch_id": t.user_attrs.get(S.ARCH_ID),
                   "rung": t.user_attrs.get(S.PRUNED_AT_RUNG), "reason": t.user_attrs.get(S.PRUNE_REASON),
                   "val_bpb": -float(t.user_attrs.get(S.QUALITY, float("nan")))}
                  for t in trials if t.state == TrialState.PRUNED]
        failed = [{"trial": t.number, "shape": t.user_attrs.get(S.SHAPE), "arch_id": t.user_attrs.get(S.ARCH_ID),
                   "reason": failure_reason(t, trials)}
                  for t in trials if t.state == TrialState.FAIL]
        return ProxySummary(name, len(plan.get("arch_ids", [])), int(plan.get("candidates", 0)), outcome, rows,
                            pruned, failed, meta.objectives, seed_noise(t.user_attrs for t in complete))


def _in_memory(storage) -> bool:
    import optuna

    return isinstance(storage, optuna.storages.InMemoryStorage)
