"""The study schema: every key a search writes is defined, with its meaning, in nas.study.schema."""

from __future__ import annotations

import optuna

from nas.search import LatencyStage, SearchSettings
from nas.study import schema


def test_every_key_a_search_writes_is_in_the_schema(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    LatencyStage(SearchSettings(targets=("pixel8",), space="tiny", trials=30, storage=url, study="s", seed=1),
           log=lambda _: None).run(progress=False)
    study = optuna.load_study(study_name="s", storage=url)
    assert set(study.user_attrs) <= set(schema.STUDY_ATTRS)
    assert {schema.STUDY_META, schema.STUDY_EXACT, schema.STUDY_SEARCH} <= set(study.user_attrs)
    written = set()
    for trial in study.get_trials(deepcopy=False):
        written |= set(trial.user_attrs)
    assert written <= set(schema.TRIAL_ATTRS), written - set(schema.TRIAL_ATTRS)
    assert {schema.FOUND_BY, schema.COUNTED, schema.ARCH_ID, schema.PREDICTIONS} <= written
    assert all(isinstance(meaning, str) and meaning for meaning in schema.TRIAL_ATTRS.values())


def test_records_round_trip_through_user_attrs(tiny_arch):
    figs = {"pixel8": schema.TargetFigures(prefill_ms=10.0, decode_ms=5.0, memory_mb=100.0,
                                           latency_source="analytic, uncalibrated", prompt_len=64)}
    record = schema.TrialRecord(tiny_arch, figs, 1.5, "non_embedding_params", ("too big",))
    attrs = record.to_user_attrs()
    assert schema.TrialRecord.present_in(attrs)
    assert schema.TrialRecord.from_user_attrs(attrs) == record
    assert not schema.TrialRecord.present_in({schema.FAIL_REASON: "x"})
