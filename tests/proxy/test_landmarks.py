"""Published models trained as proxies under a proxy study's settings (`nas.proxy.landmarks`, run by
`nas report --landmark-quality`); the report draws the stored scores."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState

from nas.cli import main
from nas.core.arch import ArchConfig
from nas.core.landmarks import load_landmarks
from nas.proxy.landmarks import train_landmarks
from nas.proxy.scaling import ProxyRule
from nas.proxy.train import TrainSettings
from nas.search import ProxyOptions, Search, SearchSettings
from nas.study.read import landmark_scores
from nas.study.schema import ARCH, PROXY_HISTORY, proxy_study_name

TINY = ProxyOptions(shapes=4, rung_tokens=(256, 768), rule=ProxyRule(shrink=8, head_dim=8), threads=1,
                    train=TrainSettings(batch_size=4, seq_len=32, warmup_tokens=128, eval_windows=4, curve_every=2))


@pytest.fixture(scope="module")
def proxy_search(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lq")
    storage = f"sqlite:///{tmp / 'nas.db'}"
    settings = SearchSettings(targets=("pixel8",), space="tiny", trials=20, storage=storage, study="lq", seed=1)
    Search(settings, proxy=TINY, log=lambda _: None).run(progress=False)
    return storage, optuna.load_study(study_name=proxy_study_name("lq"), storage=storage)


def test_a_landmark_scores_as_a_finalist_of_the_study_does(proxy_search):
    """Trained straight to the last rung with the final seeds, a shape gets exactly the score the study gave it
    after its rungs: so landmarks and the study's shapes are comparable."""
    _, study = proxy_search
    finalist = next(t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE)
    arch = ArchConfig.from_dict(finalist.user_attrs[ARCH])
    scores, trained = train_landmarks(study, [("as-landmark", arch, "test")], threads=1, progress=False)
    assert trained == 1 and scores["as-landmark"]["val_bpb"] == pytest.approx(finalist.values[0], abs=1e-9)
    assert scores["as-landmark"]["val_bpb_each"] == pytest.approx(
        finalist.user_attrs[PROXY_HISTORY][-1]["val_bpb_each"], abs=1e-9)


def test_report_trains_every_landmark_once_and_draws_them(proxy_search, tmp_path, capsys):
    storage, study = proxy_search
    assert main(["report", "--study", "lq", "--storage", storage, "--out", str(tmp_path / "r"),
                 "--landmark-quality", "--no-progress"]) == 0
    index = tmp_path / "r" / "index.html"
    assert "published models' proxies" in capsys.readouterr().out
    scores = landmark_scores(optuna.load_study(study_name=proxy_study_name("lq"), storage=storage))
    names = [name for name, _, _ in load_landmarks()]
    assert set(names) <= set(scores) and len(names) >= 6
    assert all(math.isfinite(scores[n]["val_bpb"]) and len(scores[n]["val_bpb_each"]) == 2 for n in names)
    assert "proxy_pareto_decode.png" in {p.name for p in index.parent.iterdir()}
    again, trained = train_landmarks(study, load_landmarks(), threads=1, progress=False)
    assert trained == 0 and again == scores  # stored: a second report trains nothing


def test_landmark_quality_on_other_text_or_without_proxy_stage_is_one_line(proxy_search, tmp_path, capsys):
    storage, _ = proxy_search
    text = tmp_path / "other.txt"
    text.write_text("other text " * 70000)
    assert main(["report", "--study", "lq", "--storage", storage, "--out", str(tmp_path / "o"),
                 "--landmark-quality", "--data", str(text), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "was trained on" in err and "Traceback" not in err
    assert main(["search", "--target", "pixel8", "--space", "tiny", "--trials", "10", "--no-proxy", "--no-progress",
                 "--study", "np", "--storage", storage, "--no-report"]) == 0
    capsys.readouterr()
    assert main(["report", "--study", "np", "--storage", storage, "--out", str(tmp_path / "n"),
                 "--landmark-quality"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has no proxy stage" in err
