"""The quality law: the shipped runs are complete and traceable, bad files are refused with file:line and the
field, the fit recovers known parameters, leave-one-study-out never sees the held-out study, the law rewards
nothing the published runs do not show, and the shipped fit is current."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nas.cli import main
from nas.core.arch import ArchBatch, ArchConfig
from nas.core.errors import NasUserError
from nas.quality.law import Features, FittedLaw, Form, fit_law
from nas.quality.model import (
    CHOICE_TOLERANCE,
    REFERENCE_STUDY,
    choose,
    load_fit,
    load_quality_model,
    parse_train_tokens,
    write_fit,
)
from nas.quality.runs import load_runs, runs_path, studies_path
from nas.quality.validate import Evaluation, Pairs, PairScore, evaluate, held_out_predictions, pairs, score_pairs

STUDY = "".join(f"""
[[study]]
name = "{name}"
title = "t"
source = "s"
data = "d"
tokenizer = "k"
metric = "m"
schedule = "cooled"
""" for name in ("a", "b"))


def shape(study, name, hidden, layers, vocab=1000):
    return (f'\n[[shape]]\nstudy = "{study}"\nname = "{name}"\nhidden_size = {hidden}\nnum_layers = {layers}\n'
            f'num_heads = {hidden // 64}\nintermediate_size = {4 * hidden}\nvocab_size = {vocab}\n'
            'tie_embeddings = true\nwhere = "w"\n')


def synthetic(tmp_path, truth: FittedLaw, noise: float = 0.0, seed: int = 0) -> tuple[Path, Path]:
    """Two studies of shapes at several widths and depths, losses from `truth` (plus noise)."""
    rng = np.random.default_rng(seed)
    toml, rows = STUDY, ["study,shape,tokens,loss,cooled,where"]
    for study in ("a", "b"):
        for hidden in (256, 512, 768, 1024):
            for layers in (3, 6, 12, 24):
                name = f"{hidden}x{layers}"
                toml += shape(study, name, hidden, layers)
                arch = ArchConfig(hidden_size=hidden, num_layers=layers, num_heads=hidden // 64,
                                  intermediate_size=4 * hidden, vocab_size=1000)
                for tokens in (1e9, 1e10, 1e11):
                    x = Features.of_batch(ArchBatch.from_configs([arch]), tokens, 1000)
                    loss = truth.predict(x, study)[0] + rng.normal(0, noise)
                    rows.append(f"{study},{name},{tokens:.0f},{loss:.6f},true,r")
    (tmp_path / "runs.toml").write_text(toml)
    (tmp_path / "runs.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "runs.toml", tmp_path / "runs.csv"


TRUTH = FittedLaw(Form("depth", "emb1", "shared"), {"log_A": np.log(0.8), "alpha": 0.3, "log_C": np.log(0.5),
                                                     "gamma": 1.0, "log_B": np.log(0.6), "beta": 0.3},
                  {"a": {"offset": 1.8}, "b": {"offset": 2.3}})


# ------------------------------------------------------------------------------------------------ the data
def test_shipped_runs_are_complete_and_traceable():
    runs = load_runs()
    names = runs.study_names()
    assert {"gemstones", "morph", "chinchilla"} <= set(names) and REFERENCE_STUDY in names
    assert len(runs) >= 500 and len(runs.shapes) >= 90
    for study in runs.studies:
        assert study.source.strip() and study.metric.strip() and study.schedule.strip()
    for s in runs.shapes:
        assert s.where.strip()
        if s.params is not None and s.study == "gemstones":  # Gemstones' published counts are nas's exactly
            assert s.arch.num_params == s.params
    per_study_shapes = {n: len({int(k) for k in runs.shape[runs.study == i]}) for i, n in enumerate(names)}
    assert all(v >= 20 for v in per_study_shapes.values())
    finished = runs.finished()
    assert finished.sum() < len(runs) and runs.cooled[finished].any()  # Gemstones' hot checkpoints left out
    assert len(pairs(runs.subset(finished), "equal_size")) >= 300  # many equal-size pairs to judge the law by


BAD = [
    ("unknown study in a shape", STUDY + shape("c", "x", 256, 4), "study,shape,tokens,loss,cooled,where\n",
     "runs.toml", 'study = "c"', "shape[0].study", "no [[study]] table"),
    ("impossible shape", STUDY + shape("a", "x", 256, 4).replace("num_heads = 4", "num_heads = 3"),
     "study,shape,tokens,loss,cooled,where\n", "runs.toml", "hidden_size = 256", "shape[0].hidden_size",
     "not divisible"),
    ("unknown key", STUDY + shape("a", "x", 256, 4) + "colour = 3\n", "study,shape,tokens,loss,cooled,where\n",
     "runs.toml", "colour = 3", "shape[0].colour", "unknown key"),
    ("unknown shape in a run", STUDY + shape("a", "x", 256, 4),
     "study,shape,tokens,loss,cooled,where\na,y,1e9,3.0,true,r\n", "runs.csv", "a,y,", "shape", "no [[shape]]"),
    ("negative loss", STUDY + shape("a", "x", 256, 4),
     "study,shape,tokens,loss,cooled,where\na,x,1e9,-3.0,true,r\n", "runs.csv", "a,x,", "loss", "from"),
    ("infinite tokens", STUDY + shape("a", "x", 256, 4),
     "study,shape,tokens,loss,cooled,where\na,x,inf,3.0,true,r\n", "runs.csv", "a,x,", "tokens", "from"),
    ("cooled not a boolean", STUDY + shape("a", "x", 256, 4),
     "study,shape,tokens,loss,cooled,where\na,x,1e9,3.0,yes,r\n", "runs.csv", "a,x,", "cooled", "true or false"),
    ("missing field", STUDY + shape("a", "x", 256, 4),
     "study,shape,tokens,loss,cooled,where\na,x,1e9,3.0,true\n", "runs.csv", "a,x,", "", "expected 6 fields"),
    ("wrong header", STUDY + shape("a", "x", 256, 4), "study,shape,tokens,loss\n", "runs.csv", "study,shape",
     "", "header must be"),
    ("duplicate run", STUDY + shape("a", "x", 256, 4),
     "study,shape,tokens,loss,cooled,where\na,x,1e9,3.0,true,r\na,x,1e9,3.1,true,r2\n", "runs.csv", "3.1", "",
     "duplicates the run at line 2"),
]


@pytest.mark.parametrize("name,toml,csv,bad_file,needle,key,words", BAD, ids=[b[0] for b in BAD])
def test_bad_files_are_refused_with_file_line_and_field(tmp_path, name, toml, csv, bad_file, needle, key, words):
    (tmp_path / "runs.toml").write_text(toml)
    (tmp_path / "runs.csv").write_text(csv)
    with pytest.raises(NasUserError) as err:
        load_runs(tmp_path / "runs.toml", tmp_path / "runs.csv")
    message = str(err.value)
    text = (tmp_path / bad_file).read_text().splitlines()
    line = next(i + 1 for i, t in enumerate(text)
                if needle in t and (bad_file == "runs.toml" or i > 0 or "header" in name))
    assert f"{bad_file}:{line}:" in message and words in message and "\n" not in message
    if key:
        assert f": {key}:" in message


def test_a_bad_runs_file_is_one_line_and_exit_2_from_the_cli(tmp_path, capsys):
    (tmp_path / "runs.toml").write_text(STUDY + shape("a", "x", 256, 4))
    (tmp_path / "runs.csv").write_text("study,shape,tokens,loss,cooled,where\na,x,1e9,abc,true,r\n")
    before = (tmp_path / "runs.csv").read_bytes()
    code = main(["quality", "fit", "--studies", str(tmp_path / "runs.toml"), "--runs", str(tmp_path / "runs.csv"),
                 "--out", str(tmp_path / "fit.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "runs.csv:2: loss: 'abc' is not a number" in err
    assert not (tmp_path / "fit.json").exists() and (tmp_path / "runs.csv").read_bytes() == before


# ------------------------------------------------------------------------------------------------ the law
def test_fit_recovers_known_parameters_and_ignores_an_outlier(tmp_path):
    studies, runs_file = synthetic(tmp_path, TRUTH, noise=0.002)
    text = runs_file.read_text().splitlines()
    fields = text[5].split(",")
    fields[3] = str(float(fields[3]) + 0.8)  # a mislabelled point, far off
    text[5] = ",".join(fields)
    runs_file.write_text("\n".join(text) + "\n")
    fitted = fit_law(load_runs(studies, runs_file), TRUTH.form)
    for k, v in TRUTH.params.items():
        assert fitted.params[k] == pytest.approx(v, abs=0.1), k
    assert fitted.groups["a"]["offset"] - fitted.groups["b"]["offset"] == pytest.approx(-0.5, abs=0.01)


def test_leave_one_study_out_never_sees_the_held_out_study(tmp_path, monkeypatch):
    studies, runs_file = synthetic(tmp_path, TRUTH)
    runs = load_runs(studies, runs_file)
    seen = []
    real = fit_law

    def spy(table, form, weights=None):
        seen.append(set(table.study.tolist()))
        return real(table, form, weights)

    pred = held_out_predictions(runs, TRUTH.form, fit=spy)
    assert seen == [{1}, {0}]  # study a predicted by a fit on b alone, and b by a fit on a
    assert np.allclose(pred, runs.loss, atol=1e-3)  # noiseless data: the held-out predictions are exact
    e = evaluate(runs, TRUTH.form, pred)
    assert e.overall["nonemb"].order_accuracy == 1.0 and e.band < 1e-3


def test_the_law_rewards_nothing_the_runs_do_not_show():
    q = load_quality_model("1T")
    base = ArchConfig(hidden_size=1024, num_layers=16, num_heads=16, num_kv_heads=16, intermediate_size=3072,
                      vocab_size=32000, tie_embeddings=True)
    same = [base.replace(tie_embeddings=False), base.replace(vocab_size=128256), base.replace(ffn_kind="reglu"),
            base.replace(vocab_size=49152, tie_embeddings=False)]
    losses = q.predict(ArchBatch.from_configs([base, *same]))
    assert np.allclose(losses, losses[0])  # tying, vocabulary and FFN kind earn nothing
    fewer_kv = q.predict(ArchBatch.from_configs([base.replace(num_kv_heads=1)]))[0]
    assert fewer_kv > losses[0]  # MQA only loses the parameters it drops
    x = q.features(ArchBatch.from_configs([base, base]))
    deeper = Features(np.array([16.0, 32.0]), x.hidden, x.non_embedding, x.vocab, x.tokens)
    shallow_loss, deep_loss = q.law.predict(deeper, q.reference)
    assert deep_loss < shallow_loss  # at equal parameters, depth is the one shape term


def test_more_tokens_and_more_parameters_lower_the_loss():
    small, big = load_quality_model("100B"), load_quality_model("1T")
    arch = ArchBatch.from_configs([ArchConfig(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=2048)])
    assert big.predict(arch)[0] < small.predict(arch)[0]
    wider = ArchBatch.from_configs([ArchConfig(hidden_size=1024, num_layers=12, num_heads=16, intermediate_size=2816)])
    assert big.predict(wider)[0] < big.predict(arch)[0]


def test_extrapolation_is_said():
    q = load_quality_model("10T")
    batch = ArchBatch.from_configs([ArchConfig(hidden_size=256, num_layers=100, num_heads=4, intermediate_size=512)])
    notes = " ".join(q.extrapolation(batch))
    assert "10T training tokens is beyond" in notes and "tokens per parameter" in notes and "layers 100" in notes
    near = load_quality_model("100B").extrapolation(ArchBatch.from_configs([ArchConfig(
        hidden_size=1024, num_layers=16, num_heads=16, intermediate_size=3072)]))
    assert near == []


@pytest.mark.parametrize("text", ["0", "-5", "1X", "", "1e400", "1.5.2T", "999"])
def test_bad_train_tokens_are_one_line(text):
    with pytest.raises(NasUserError, match="--train-tokens"):
        parse_train_tokens(text)


def test_train_tokens_forms():
    assert parse_train_tokens("1T") == 10**12 and parse_train_tokens("300B") == 3 * 10**11
    assert parse_train_tokens("2e11") == 2 * 10**11 and parse_train_tokens("1.5T") == 15 * 10**11


# ------------------------------------------------------------------------------------------------ the shipped fit
def test_shipped_fit_is_current_and_matches_a_refit():
    """Fails when the published runs or the law changed without `nas quality fit`."""
    runs = load_runs()
    shipped = load_fit()
    assert shipped["data_sha256"] == runs.sha256, "rerun `nas quality fit`"
    chosen = FittedLaw.from_dict(shipped["law"])
    fresh = fit_law(runs.subset(runs.finished()), chosen.form)
    for k, v in fresh.params.items():
        assert chosen.params[k] == pytest.approx(v, rel=1e-6, abs=1e-9), ("rerun `nas quality fit`", k)
    for g, params in fresh.groups.items():
        for k, v in params.items():
            assert chosen.groups[g][k] == pytest.approx(v, rel=1e-6, abs=1e-9), ("rerun `nas quality fit`", g, k)
    entry = next(e for e in shipped["evaluations"] if e["form"] == chosen.form.name)
    again = evaluate(runs.subset(runs.finished()), chosen.form)
    assert again.band == pytest.approx(shipped["band_nats"], rel=1e-6)
    assert again.to_dict()["overall"] == entry["overall"]
    assert len(shipped["bootstrap"]) >= 50


def test_the_chosen_form_beats_every_shape_blind_law_held_out():
    shipped = load_fit()
    forms = {e["form"]: e for e in shipped["evaluations"]}
    chosen = forms[FittedLaw.from_dict(shipped["law"]).form.name]
    blind = [e for e in shipped["evaluations"] if e["form"].startswith("size [")]
    assert len(blind) == 6
    for e in blind:
        assert chosen["band_nats"] < e["band_nats"], e["form"]
        for kind in ("equal_size", "neighbours"):
            mine, theirs = chosen["overall"][kind], e["overall"][kind]
            assert mine["order_accuracy"] > theirs["order_accuracy"], (e["form"], kind)
            assert mine["median_abs_error"] < theirs["median_abs_error"], (e["form"], kind)
    params = chosen["params_baseline"]["equal_size"]["order_accuracy"]
    assert chosen["overall"]["equal_size"]["order_accuracy"] > params + 0.2  # parameter count cannot rank these


def test_the_shipped_form_is_the_one_the_rule_chooses():
    shipped = load_fit()
    accuracy = {e["form"]: e["overall"]["neighbours"]["order_accuracy"] for e in shipped["evaluations"]}
    best = max(accuracy.values())
    first_within = next(f for f in accuracy if accuracy[f] >= best - CHOICE_TOLERANCE)  # simpler forms first
    assert FittedLaw.from_dict(shipped["law"]).form.name == first_within


def _evaluation(form: Form, accuracy: float, band: float = 0.05) -> Evaluation:
    score = PairScore(10, accuracy, 0.01)
    return Evaluation(form, {}, {"neighbours": score}, band, {})


def test_choose_keeps_the_simpler_form_unless_a_richer_one_orders_clearly_better():
    simple, rich = Form(None, "nonemb"), Form("depth", "emb2")
    close = choose([_evaluation(simple, 0.90), _evaluation(rich, 0.90 + CHOICE_TOLERANCE / 2)])
    assert close.form == simple
    clear = choose([_evaluation(simple, 0.90), _evaluation(rich, 0.90 + 2 * CHOICE_TOLERANCE)])
    assert clear.form == rich
    broken = choose([_evaluation(rich, 0.99, band=float("nan")), _evaluation(simple, 0.80)])
    assert broken.form == simple  # a form that left a study unpredicted is never chosen


def test_a_published_or_predicted_tie_counts_half():
    p = Pairs(np.array([0, 0, 1]), np.array([1, 2, 2]))
    actual = np.array([2.0, 2.0, 1.5])  # runs 0 and 1 tie in the published losses
    assert score_pairs(np.array([2.1, 2.0, 1.4]), actual, p).order_accuracy == pytest.approx((0.5 + 1 + 1) / 3)
    assert score_pairs(np.array([2.0, 2.0, 2.0]), actual, p).order_accuracy == pytest.approx(0.5)
    assert score_pairs(np.array([1.0, 2.0, 3.0]), actual, p).order_accuracy == pytest.approx(0.5 / 3)


def test_each_count_adds_its_embedding_tables_whatever_the_tying():
    x = Features(np.array([12.0]), np.array([512.0]), np.array([4e7]), np.array([50_000.0]), np.array([1e10]))
    assert [float(x.params(c)[0]) for c in ("nonemb", "emb1", "emb2")] == [4e7, 4e7 + 512 * 50_000,
                                                                          4e7 + 2 * 512 * 50_000]


def test_quality_fit_writes_a_file_the_model_reads(tmp_path, capsys):
    studies, runs_file = synthetic(tmp_path, TRUTH, noise=0.003)
    text = studies.read_text().replace('name = "a"', f'name = "{REFERENCE_STUDY}"')
    studies.write_text(text.replace('study = "a"', f'study = "{REFERENCE_STUDY}"'))
    runs_file.write_text(runs_file.read_text().replace("\na,", f"\n{REFERENCE_STUDY},"))
    out = tmp_path / "fit.json"
    code = main(["quality", "fit", "--studies", str(studies), "--runs", str(runs_file), "--out", str(out),
                 "--bootstrap", "3", "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["path"] == str(out) and len(data["bootstrap"]) == 3
    q = load_quality_model("1T", out)
    arch = ArchBatch.from_configs([ArchConfig(hidden_size=512, num_layers=8, num_heads=8, intermediate_size=2048)])
    assert q.bootstrap_losses(arch).shape == (3, 1) and np.isfinite(q.predict(arch)).all()


def test_quality_show_prints_the_law_its_data_and_what_it_cannot_tell(capsys):
    assert main(["quality"]) == 0
    out = capsys.readouterr().out
    for needle in ("quality law:", "leave-one-study-out", "gemstones", "morph", "chinchilla", "band:",
                   "no published evidence", "parameter count"):
        assert needle in out
    assert main(["quality", "--out", "x.json"]) == 2


def test_a_broken_fit_file_is_one_line(tmp_path):
    path = tmp_path / "fit.json"
    for text in ("{", "[]", json.dumps({"format": "other"}), json.dumps({"format": "nas-quality-fit/1"})):
        path.write_text(text)
        with pytest.raises(NasUserError, match="nas quality fit"):
            load_quality_model("1T", path)
    write_fit({"format": "x"}, path)  # atomic writer: the file is whole
    assert json.loads(path.read_text()) == {"format": "x"}


def test_shipped_files_are_where_the_wheel_puts_them():
    assert studies_path().name == "published_runs.toml" and runs_path().name == "published_runs.csv"
    assert studies_path().parent.name in ("quality_models", "quality_models")
