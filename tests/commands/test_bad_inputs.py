"""The bad-input catalogue: every user mistake ends with one line naming the problem, exit code 2, no traceback,
and the files already saved (the study database, measurements, predictors, configs) byte-for-byte unchanged."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from nas.cli import main

STUDY = "cat"


def _snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file under the roots. A SQLite study database is hashed by its full SQL dump: SQLite
    moves pages between the file and its write-ahead log (`-wal`, `-shm`) whenever the last reader closes it,
    which changes those files' bytes but not one row; the dump covers both."""
    out = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.name.endswith(("-wal", "-shm")):
                continue
            if path.suffix == ".db":
                with sqlite3.connect(path) as db:
                    out[str(path)] = hashlib.sha256("\n".join(db.iterdump()).encode()).hexdigest()
            else:
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A working directory with a finished study and the files users pass around."""
    root = tmp_path_factory.mktemp("catalogue")
    db = root / "runs" / "nas.db"
    storage = f"sqlite:///{db}"
    assert main(["search", "--no-proxy", "--target", "pixel8", "--space", "tiny", "--trials", "10", "--no-progress",
                 "--storage", storage, "--study", STUDY, "--no-report"]) == 0
    (root / "arch.json").write_text(json.dumps({"hidden_size": 64, "num_layers": 2, "num_heads": 2,
                                                "intermediate_size": 128, "vocab_size": 256}))
    (root / "bad.json").write_text('{"hidden_size": 64,')
    (root / "hf_missing.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 512}))
    (root / "hf_string.json").write_text(json.dumps({"model_type": "llama", "hidden_size": "512",
                                                     "num_attention_heads": 8}))
    (root / "list.json").write_text("[1, 2]")
    (root / "bad_space.toml").write_text('name = "x"\ndescription = "y"\n[dimensions]\nhidden_size = [64\n')
    (root / "odd_space.toml").write_text('name = "odd"\ndescription = "y"\n[dimensions]\nhidden_size = [64]\n'
                                         'num_layers = [2]\nnum_heads = [2]\nffn_ratio = [2.0]\nwidth = [3]\n')
    (root / "rows.jsonl").write_text('{"schema": 1, "target": "pixel8"\n')
    (root / "empty.jsonl").write_text("")
    (root / "not_a_dir").write_text("")
    (root / "empty_dir").mkdir()
    (root / "broken.xz").write_bytes(b"not xz data")
    (root / "not_journal.log").write_text('{"garbage": 1\n')
    return root, storage


CASES = [
    # (id, argv, what the one line must contain)
    ("unknown-target", ["search", "--target", "pixel9"], "'pixel9' is not a known target"),
    ("unknown-space", ["search", "--target", "pixel8", "--space", "nope"], "'nope' is not a known search space"),
    ("missing-space-file", ["search", "--target", "pixel8", "--space", "missing.toml"], "does not exist"),
    ("malformed-space", ["search", "--target", "pixel8", "--space", "bad_space.toml"], "malformed TOML"),
    ("unknown-space-key", ["search", "--target", "pixel8", "--space", "odd_space.toml"], "width: unknown key"),
    ("zero-trials", ["search", "--target", "pixel8", "--trials", "0"], "--trials must be a positive integer"),
    ("word-trials", ["search", "--target", "pixel8", "--trials", "many"], "invalid int value: 'many'"),
    ("negative-seed", ["search", "--target", "pixel8", "--seed", "-1"], "--seed must be an integer from 0"),
    ("huge-seed", ["search", "--target", "pixel8", "--seed", "99999999999"], "--seed must be an integer from 0"),
    ("params-no-suffix", ["search", "--target", "pixel8", "--params", "450:550"], "did you mean 450M:550M"),
    ("params-reversed", ["search", "--target", "pixel8", "--params", "600M:100M"], "low end is above the high end"),
    ("params-garbage", ["search", "--target", "pixel8", "--params", "lots"], "expected LOW:HIGH"),
    ("unknown-objective", ["search", "--target", "pixel8", "--objectives", "quality,speed"],
     "unknown objective 'speed'"),
    ("one-objective", ["search", "--target", "pixel8", "--objectives", "quality"], "at least two objectives"),
    ("bad-precision", ["search", "--target", "pixel8", "--precision", "int3"], "invalid choice: 'int3'"),
    ("negative-memory", ["search", "--target", "pixel8", "--max-memory-mb", "-5"], "--max-memory-mb must be"),
    ("impossible-constraint", ["search", "--target", "pixel8", "--space", "tiny", "--min-decode-tps", "1e9"],
     "meets --min-decode-tps"),
    ("unknown-sampler", ["search", "--target", "pixel8", "--sampler", "magic"], "unknown sampler 'magic'"),
    ("tiny-population", ["search", "--target", "pixel8", "--population", "1"], "--population must be at least 2"),
    ("storage-at-root", ["search", "--target", "pixel8", "--storage", "sqlite:////nonexistent-nas/dir/x.db"],
     "folder /nonexistent-nas does not exist"),
    ("storage-not-url", ["search", "--target", "pixel8", "--storage", "results.db"], "is not a database URL"),
    ("storage-unreachable", ["search", "--target", "pixel8", "--storage", "postgresql://nas@127.0.0.1:1/nas"],
     "cannot open study storage"),
    ("resume-other-settings", ["search", "--target", "pixel8", "--space", "tiny", "--study", STUDY,
                               "--prompt-len", "64"], "was searched with"),
    ("report-dir-unwritable", ["search", "--target", "pixel8", "--space", "tiny", "--report-dir", "not_a_dir/r"],
     "cannot write the report"),
    ("report-unknown-study", ["report", "--study", "nope"], "study 'nope' is not in"),
    ("report-missing-storage", ["report", "--study", STUDY, "--storage", "sqlite:///missing.db"], "no study storage"),
    ("export-unknown-trial", ["export", "--study", STUDY, "--trial", "99999", "--format", "hf", "--out", "x"],
     "trial 99999 is not in study"),
    ("export-unwritable", ["export", "--study", STUDY, "--pick", "knee", "--format", "json", "--out",
                           "not_a_dir/x"], "cannot write"),
    ("export-no-choice", ["export", "--study", STUDY, "--format", "hf", "--out", "x"], "say which shape to export"),
    ("export-bad-format", ["export", "--study", STUDY, "--pick", "knee", "--format", "onnx", "--out", "x"],
     "invalid choice: 'onnx'"),
    ("inspect-incomplete", ["inspect", "--hidden-size", "100", "--layers", "4", "--heads", "3"],
     "incomplete architecture: also give --intermediate-size"),
    ("inspect-indivisible", ["inspect", "--hidden-size", "100", "--layers", "4", "--heads", "3", "--ffn", "256"],
     "100 is not divisible by num_heads=3"),
    ("inspect-malformed-json", ["inspect", "bad.json"], "malformed JSON"),
    ("inspect-json-list", ["inspect", "list.json"], "expected a JSON object"),
    ("inspect-hf-missing-key", ["inspect", "hf_missing.json"], "HF config has no 'num_attention_heads'"),
    ("inspect-hf-string", ["inspect", "hf_string.json"], "'hidden_size' must be a positive integer"),
    ("inspect-missing-file", ["inspect", "nothing.json"], "cannot read config file"),
    ("predict-zero-prompt", ["predict", "--target", "pixel8", "arch.json", "--prompt-len", "0"],
     "--prompt-len must be a positive integer"),
    ("predict-unknown-target", ["predict", "--target", "pixel9", "arch.json"], "'pixel9' is not a known target"),
    ("predict-bad-precision", ["predict", "--target", "rpi5", "arch.json", "--precision", "fp8"],
     "invalid choice: 'fp8'"),
    ("calibrate-holdout-too-big", ["calibrate", "--target", "host-cpu", "--n-configs", "2", "--holdout", "5",
                                   "--dry-run"], "--holdout 5 leaves fewer than 2"),
    ("calibrate-device-without-rows", ["calibrate", "--target", "pixel8"], "cannot be measured on this machine"),
    ("calibrate-malformed-rows", ["calibrate", "--target", "pixel8", "--measurements", "rows.jsonl"],
     "malformed JSON"),
    ("calibrate-empty-rows", ["calibrate", "--target", "pixel8", "--measurements", "empty.jsonl"],
     "no successful measurements"),
    ("profile-device", ["profile", "--target", "pixel8"], "cannot be profiled here"),
    ("profile-unknown-provider", ["profile", "--target", "host-cpu", "--provider", "CUDAExecutionProvider"],
     "no execution provider 'CUDAExecutionProvider'"),
    ("bundle-unknown-precision", ["bundle", "--target", "host-cpu", "--out", "b", "--precision", "fp16"],
     "does not run precision 'fp16'"),
    ("bundle-non-empty-out", ["bundle", "--target", "rpi5", "--out", "runs"], "is not an empty folder"),
    ("targets-unknown", ["targets", "show", "pixel9"], "'pixel9' is not a known target"),
    ("spaces-unknown", ["spaces", "show", "nope"], "'nope' is not a known search space"),
    ("spaces-bad-action", ["spaces", "frobnicate"], "is not a spaces action"),
    ("no-command-args", ["search"], "the following arguments are required: --target"),
    ("data-missing", ["search", "--target", "pixel8", "--data", "no_such_text"], "--data no_such_text does not exist"),
    ("data-empty-folder", ["search", "--target", "pixel8", "--data", "empty_dir"], "is an empty folder"),
    ("data-too-small", ["search", "--target", "pixel8", "--data", "arch.json"], "proxy training needs at least"),
    ("data-unreadable", ["search", "--target", "pixel8", "--data", "broken.xz"], "cannot decompress"),
    ("proxy-shapes-zero", ["search", "--target", "pixel8", "--proxy-shapes", "0"], "--proxy-shapes must be"),
    ("proxy-tokens-decreasing", ["search", "--target", "pixel8", "--proxy-shapes", "2", "--proxy-tokens",
                                 "90000,30000"], "increasing positive token budgets"),
    ("eta-one", ["search", "--target", "pixel8", "--proxy-shapes", "2", "--eta", "1"], "--eta must be a number above 1"),
    ("stage-proxy-no-proxy", ["search", "--target", "pixel8", "--stage", "proxy", "--no-proxy"],
     "--stage proxy with --no-proxy"),
    ("storage-not-a-journal", ["search", "--target", "pixel8", "--storage", "not_journal.log"],
     "is not an Optuna journal file (line 1"),
    ("report-not-a-journal", ["report", "--study", STUDY, "--storage", "not_journal.log"],
     "is not an Optuna journal file"),
    ("report-storage-unreachable", ["report", "--study", STUDY, "--storage", "postgresql://nas@127.0.0.1:1/nas"],
     "cannot open study storage"),
    ("heartbeat-not-below-grace", ["search", "--target", "pixel8", "--heartbeat-interval", "10", "--grace-period",
                                   "5"], "--heartbeat-interval (10) must be at least 1 and below --grace-period (5)"),
    ("proxy-time-limit-negative", ["search", "--target", "pixel8", "--proxy-shapes", "2", "--proxy-time-limit", "-1"],
     "--proxy-time-limit must be a positive number of seconds, got -1.0"),
    ("predict-hf-string", ["predict", "--target", "pixel8", "hf_string.json"],
     "'hidden_size' must be a positive integer"),
]


@pytest.mark.parametrize("argv, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(workdir, monkeypatch, capsys, nas_home, argv, expected):
    root, storage = workdir
    monkeypatch.chdir(root)
    if argv[0] in ("search", "report", "export") and "--storage" not in argv:
        argv = argv + ["--storage", storage]
    if argv[0] == "search":
        argv = argv + ["--no-progress"] + ([] if "--data" in argv or "--proxy-shapes" in argv else ["--no-proxy"])
    before = _snapshot(root, nas_home)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (out, err)
    assert "Traceback" not in err and len(lines) == 1 or (lines and lines[0].startswith("usage:")), err
    assert expected in err, err
    assert _snapshot(root, nas_home) == before
    assert not Path("/nonexistent-nas").exists()


def test_the_catalogue_is_long_enough():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)
