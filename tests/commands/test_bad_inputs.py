"""The bad-input catalogue: every user mistake ends with one line naming the problem, exit code 2, no traceback,
no raw control character, and the files already saved (the study database, measurements, predictors, configs,
other people's files and databases) byte-for-byte unchanged, with no file or folder added.

The cases after the first 67 are what a careful, hostile new user tried (issue 21): files nas did not write
given as --out, unrelated or empty databases, permanent storage errors, study names that are not names, numbers
beyond int64 or not finite, user files of the wrong JSON/TOML types, nested too deep, devices given as files,
NAS_HOME that cannot be a folder."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from pathlib import Path

import pytest

from nas.cli import main
from tests.helpers import device_rows, write_rows

STUDY = "cat"


def _snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file under the roots, and every folder (a folder made and left empty is a change too). A
    nas study database (*.db) is hashed by its full SQL dump: SQLite moves pages between the file and its
    write-ahead log (`-wal`, `-shm`) whenever the last reader closes it, which changes those files' bytes but not
    one row; the dump covers both. Other people's SQLite files (*.sqlite) are hashed byte for byte."""
    out = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_dir():
                out[str(path)] = "folder"
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
    _hostile_files(root)
    return root, storage


ARCH = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 128, "vocab_size": 256}
HF = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
      "intermediate_size": 128, "vocab_size": 256}
SPACE = 'name = "s"\ndescription = "d"\n[dimensions]\nhidden_size = [64]\nnum_layers = [2]\nnum_heads = [2]\n'


def _hostile_files(root: Path) -> None:
    """What a hostile new user hands nas: other people's files, numbers past int64, wrong JSON types, depth."""
    (root / "notes.txt").write_bytes(b"first line\nsecond, no newline")
    (root / "binary.bin").write_bytes(bytes(range(256)) * 4)
    (root / "other.jsonl").write_bytes(b'{"a": 1}')
    (root / "out_dir").mkdir()
    with sqlite3.connect(root / "notes.sqlite") as db:  # someone's own SQLite database
        db.execute("create table notes (t)")
        db.execute("insert into notes values ('buy milk')")
    db.close()
    (root / "zero.sqlite").write_bytes(b"")
    (root / "text.sqlite").write_text("not a database\n" * 100)
    for name, data in (("hf_act_list", {**HF, "hidden_act": ["silu"]}),
                       ("hf_rope_str", {**HF, "rope_parameters": "yarn"}),
                       ("hf_tie_str", {**HF, "tie_word_embeddings": "false"}),
                       ("arch_huge", {**ARCH, "hidden_size": 2_000_000}), ("arch_int64", {**ARCH, "vocab_size": 2**64}),
                       ("arch_ffn_list", {**ARCH, "ffn_kind": ["swiglu"]})):
        (root / f"{name}.json").write_text(json.dumps(data))
    (root / "nan.json").write_text('{"hidden_size": NaN}')
    (root / "digits.json").write_text('{"hidden_size": ' + "9" * 5000 + "}")
    (root / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (root / "deep_journal.log").write_text("[" * 100_000 + "]" * 100_000 + "\n")
    spaces = {
        "space_ffn_multiple": SPACE.replace("[dimensions]", "ffn_multiple = 9223372036854775807\n[dimensions]")
        + "ffn_ratio = [2.0]\n[constraints]\nparams_max = 1000000\n",
        "space_ffn_ratio_inf": SPACE + "ffn_ratio = [inf]\n",
        "space_int64": SPACE.replace("[64]", "[99999999999999999999]") + "ffn_ratio = [2.0]\n",
        "space_hidden_huge": SPACE.replace("[64]", "[2000000]") + "ffn_ratio = [2.0]\n",
        "space_gqa_huge": SPACE + 'ffn_ratio = [2.0]\nattention = ["gqa:99999999999999999999"]\n',
        "space_deep": SPACE + "ffn_ratio = " + "[" * 5000 + "]" * 5000 + "\n",
        "space_grid": 'name = "g"\ndescription = "d"\n[dimensions]\nhidden_size = { min = 1, max = 1048576 }\n'
                      "num_layers = { min = 1, max = 4096 }\nnum_heads = { min = 1, max = 1048576 }\n"
                      "intermediate_size = { min = 1, max = 1048576 }\n",
    }
    for name, text in spaces.items():
        (root / f"{name}.toml").write_text(text)
    (root / "folder.toml").mkdir()
    shipped = (Path(__file__).resolve().parents[2] / "targets" / "pixel8.toml").read_text()
    bandwidth = re.search(r"bandwidth = \{ value = ([0-9.]+), unit = \"GB/s\"", shipped)
    for name, text in (("inf", shipped.replace(f"value = {bandwidth.group(1)}, unit", "value = inf, unit", 1)),
                       ("tiny", shipped.replace(f"value = {bandwidth.group(1)}, unit", "value = 1e-12, unit", 1)),
                       ("unit_list", shipped.replace('unit = "GB/s"', 'unit = ["GB/s"]', 1)),
                       ("threads", re.sub(r"(?m)^threads = .*$", "threads = 99999", shipped))):
        (root / f"target_{name}").mkdir()
        (root / f"target_{name}" / "pixel8.toml").write_text(text)
    rows = device_rows(n=1)
    rows_path = root / "rows_{}.jsonl"
    write_rows(Path(str(rows_path).format("huge_length")), [{**rows[0], "prompt_len": 10**12}])
    Path(str(rows_path).format("nan")).write_text(json.dumps(rows[0]).replace('"median": ', '"median": NaN, "x": ', 1)
                                                  + "\n")
    os.mkfifo(root / "fifo")


PROFILE = ["profile", "--target", "host-cpu", "--space", "tiny", "--n-configs", "1", "--prompt-lens", "8",
           "--context-lens", "8", "--warmup", "0", "--runs", "1", "--sessions", "1", "--quiet"]
ARCH_FLAGS = ["--hidden-size", "64", "--layers", "2", "--heads", "2", "--ffn", "128"]

CASES = [
    # (id, argv, what the one line must contain); "--env NAME=VALUE" in argv sets an environment variable
    ("unknown-target", ["search", "--target", "pixel9"], "'pixel9' is not a known target"),
    ("unknown-space", ["search", "--target", "pixel8", "--space", "nope"], "'nope' is not a known search space"),
    ("missing-space-file", ["search", "--target", "pixel8", "--space", "missing.toml"], "does not exist"),
    ("malformed-space", ["search", "--target", "pixel8", "--space", "bad_space.toml"], "malformed TOML"),
    ("unknown-space-key", ["search", "--target", "pixel8", "--space", "odd_space.toml"], "width: unknown key"),
    ("zero-trials", ["search", "--target", "pixel8", "--trials", "0"], "--trials must be an integer from 1 to"),
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
    ("tiny-population", ["search", "--target", "pixel8", "--population", "1"],
     "--population must be an integer from 2"),
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
                           "not_a_dir/x"], "not_a_dir is a file, not a folder"),
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
     "--prompt-len must be an integer from 1 to 16,777,216, got 0"),
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
    ("eta-one", ["search", "--target", "pixel8", "--proxy-shapes", "2", "--eta", "1"],
     "--eta must be a number above 1"),
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
    # ----- issue 21: a hostile new user -----
    # nas profile --out: a file nas did not write is refused untouched, never cut
    *[(f"profile-out-{name}", [*PROFILE, "--out", path], expected) for name, path, expected in (
        ("notes", "notes.txt", "--out notes.txt is not a measurements file nas can append to (notes.txt:1"),
        ("binary", "binary.bin", "binary.bin: not UTF-8 text"),
        ("other-jsonl", "other.jsonl", "other.jsonl:1: missing field 'schema'"),
        ("folder", "out_dir", "out_dir: it is a folder, not a file"),
        ("under-a-file", "not_a_dir/m.jsonl", "not_a_dir is a file, not a folder"),
        ("device", "/dev/zero", "/dev/zero: it is not a regular file"),
    )],
    ("nas-home-a-file", [*PROFILE, "--env", "NAS_HOME=not_a_dir"], "not_a_dir is a file, not a folder (nas keeps its "
     "data under NAS_HOME=not_a_dir"),
    ("nas-home-uncreatable", [*PROFILE, "--env", "NAS_HOME=/proc/nas-cannot-be-here"],
     "(nas keeps its data under NAS_HOME=/proc/nas-cannot-be-here"),
    # storages: a reading command never writes into a database that holds no nas study
    ("report-unrelated-sqlite", ["report", "--study", STUDY, "--storage", "sqlite:///notes.sqlite"],
     "holds no nas study (it has tables notes, not Optuna's)"),
    ("export-zero-byte-sqlite", ["export", "--study", STUDY, "--pick", "knee", "--format", "hf", "--out", "x",
                                "--storage", "sqlite:///zero.sqlite"], "holds no nas study (it has no tables"),
    ("report-not-a-database", ["report", "--study", STUDY, "--storage", "sqlite:///text.sqlite"],
     "the file is not a database"),
    ("search-not-a-database", ["search", "--target", "pixel8", "--space", "tiny", "--storage", "sqlite:///text.sqlite"],
     "the file is not a database"),
    ("search-unrelated-database-read-only", ["search", "--target", "pixel8", "--space", "tiny", "--storage",
                                             "sqlite:///file:notes.sqlite?mode=ro&uri=true"],
     "the database is read-only"),
    ("storage-sqlite-no-path", ["search", "--target", "pixel8", "--storage", "sqlite://"], "names no database file"),
    ("storage-sqlite-empty-path", ["search", "--target", "pixel8", "--storage", "sqlite:///"],
     "names no database file"),
    ("storage-sqlite-memory", ["report", "--study", STUDY, "--storage", "sqlite:///:memory:"],
     "names no database file"),
    ("storage-read-only", ["search", "--target", "pixel8", "--space", "tiny", "--study", "new", "--storage",
                           "sqlite:///file:runs/nas.db?mode=ro&uri=true"], "the database is read-only"),
    ("storage-under-a-file", ["search", "--target", "pixel8", "--storage", "sqlite:///not_a_dir/x.db"],
     "not_a_dir is a file, not a folder"),
    ("storage-a-folder", ["search", "--target", "pixel8", "--storage", "sqlite:///empty_dir"],
     "empty_dir is not a database file"),
    ("storage-journal-too-deep", ["report", "--study", STUDY, "--storage", "deep_journal.log"],
     "is not an Optuna journal file (line 1"),
    # the whole request is validated before anything is written
    ("search-cuda-absent", ["search", "--target", "pixel8", "--space", "tiny", "--proxy-shapes", "2", "--device",
                            "cuda:999", "--storage", "sqlite:///runs/fresh.db"], "--device cuda:999: "),
    ("search-device-unknown", ["search", "--target", "pixel8", "--proxy-shapes", "2", "--device", "tpu"],
     "--device 'tpu' is not cpu, cuda or cuda:N"),
    ("impossible-constraint-new-storage", ["search", "--target", "pixel8", "--space", "tiny", "--min-decode-tps",
                                           "1e9", "--storage", "sqlite:///runs/fresh.db", "--report-dir", "new/rep"],
     "meets --min-decode-tps"),
    # study names: one rule
    ("study-reserved-suffix", ["search", "--target", "pixel8", "--space", "tiny", "--study", "m:proxy"],
     "--study 'm:proxy' is not a study name"),
    ("study-path", ["search", "--target", "pixel8", "--space", "tiny", "--study", "../../../escaped"],
     "--study '../../../escaped' is not a study name"),
    ("study-control-characters", ["search", "--target", "pixel8", "--study", "a\x1b[31mb\nc"],
     "--study 'a\\x1b[31mb\\nc' is not a study name"),
    ("study-empty", ["search", "--target", "pixel8", "--study", ""], "--study '' is not a study name"),
    ("report-study-path", ["report", "--study", "../x"], "--study '../x' is not a study name"),
    ("export-study-lock", ["export", "--study", f"{STUDY}:lock", "--pick", "knee", "--format", "hf", "--out", "x"],
     f"--study '{STUDY}:lock' is not a study name"),
    # numbers: bounded integers, finite floats, on the CLI
    ("predict-prompt-beyond-tokens", ["predict", "--target", "pixel8", "arch.json", "--prompt-len", "100000000"],
     "--prompt-len must be an integer from 1 to 16,777,216, got 100000000"),
    ("predict-prompt-beyond-int64", ["predict", "--target", "pixel8", "arch.json", "--prompt-len", "1" + "0" * 30],
     "argument --prompt-len: 1000000000000000000000000000000 is beyond the 64-bit integers nas takes"),
    ("trials-beyond-int64", ["search", "--target", "pixel8", "--trials", "99999999999999999999"],
     "is beyond the 64-bit integers"),
    ("memory-infinite", ["search", "--target", "pixel8", "--max-memory-mb", "inf"], "'inf' is not a finite number"),
    ("eta-nan", ["search", "--target", "pixel8", "--proxy-shapes", "2", "--eta", "nan"],
     "'nan' is not a finite number"),
    ("rope-theta-infinite", ["inspect", *ARCH_FLAGS, "--rope-theta", "1e999"], "'1e999' is not a finite number"),
    ("hidden-beyond-bound", ["inspect", "--hidden-size", "2000000", "--layers", "2", "--heads", "2", "--ffn", "128"],
     "hidden_size: must be at most 1,048,576, got 2000000"),
    ("profile-lengths-beyond", ["profile", "--target", "host-cpu", "--prompt-lens", "99999999999"],
     "token lengths from 1 to 16,777,216"),
    ("profile-threads-beyond", [*PROFILE, "--threads", "99999"], "--threads must be at most 4,096"),
    ("proxy-tokens-infinite", ["search", "--target", "pixel8", "--proxy-shapes", "2", "--proxy-tokens", "1e400"],
     "token budgets such as 24K,72K"),
    ("params-three-parts", ["search", "--target", "pixel8", "--params", "1M:2M:3M"],
     "--params '1M:2M:3M': expected LOW:HIGH"),
    ("params-beyond", ["search", "--target", "pixel8", "--params", "1M:" + "9" * 30 + "B"],
     "is beyond the largest count nas takes"),
    ("grace-beyond", ["search", "--target", "pixel8", "--heartbeat-interval", "10", "--grace-period", "9999999999"],
     "--grace-period must be at most 604,800 seconds"),
    # space files
    ("space-ffn-multiple-int64", ["spaces", "show", "space_ffn_multiple.toml"],
     "ffn_multiple: must be an integer from 1 to 1,048,576"),
    ("space-ffn-ratio-infinite", ["spaces", "show", "space_ffn_ratio_inf.toml"],
     "dimensions.ffn_ratio[0]: inf is not a finite number"),
    ("space-int-beyond-int64", ["search", "--target", "pixel8", "--space", "space_int64.toml"],
     "dimensions.hidden_size[0]: 99999999999999999999 is beyond the 64-bit integers"),
    ("space-hidden-beyond", ["spaces", "show", "space_hidden_huge.toml"], "2000000 is above 1,048,576"),
    ("space-attention-beyond", ["spaces", "show", "space_gqa_huge.toml"], "is not an attention type"),
    ("space-nested-too-deep", ["spaces", "show", "space_deep.toml"], "nested deeper than"),
    ("space-grid-beyond", ["spaces", "show", "space_grid.toml"], "combinations; nas takes at most"),
    ("space-a-folder", ["search", "--target", "pixel8", "--space", "folder.toml"],
     "cannot read search space file folder.toml: it is a folder, not a file"),
    # target files
    ("target-infinite", ["predict", "--target", "target_inf/pixel8.toml", "arch.json"],
     "memory.bandwidth.value: inf is not a finite number"),
    ("target-below-one-unit", ["targets", "show", "target_tiny/pixel8.toml"],
     "1e-12 GB/s is less than 1 in base units"),
    ("target-unit-list", ["targets", "show", "target_unit_list/pixel8.toml"], "['GB/s'] is not allowed here"),
    ("target-threads-beyond", ["targets", "show", "target_threads/pixel8.toml"],
     "threads: must be an integer from 1 to 4,096"),
    ("target-a-folder", ["targets", "show", "folder.toml"], "cannot read target file folder.toml: it is a folder"),
    # HF config.json and nas JSON: types, bounds, finite numbers, depth, devices
    ("hf-activation-list", ["inspect", "hf_act_list.json"], "HF hidden_act ['silu'] is not supported"),
    ("hf-rope-parameters-string", ["predict", "--target", "pixel8", "hf_rope_str.json"],
     "'rope_parameters' must be an object (or null), got 'yarn'"),
    ("hf-tie-string", ["inspect", "hf_tie_str.json"], "'tie_word_embeddings' must be true or false, got 'false'"),
    ("json-beyond-bound", ["inspect", "arch_huge.json"], "hidden_size: must be at most 1,048,576"),
    ("json-beyond-int64", ["inspect", "arch_int64.json"], "vocab_size: 18446744073709551616 is beyond the 64-bit"),
    ("json-kind-list", ["inspect", "arch_ffn_list.json"], "ffn_kind: ['swiglu'] is not one of"),
    ("json-nan", ["inspect", "nan.json"], "NaN is not a number nas accepts"),
    ("json-digits", ["inspect", "digits.json"], "an integer of more than 4,300 digits"),
    ("json-nested-too-deep", ["predict", "--target", "pixel8", "deep.json"], "nested deeper than 64 levels"),
    ("json-a-device", ["inspect", "/dev/zero"], "cannot read config file /dev/zero: it is not a regular file"),
    ("json-a-folder", ["inspect", "empty_dir"], "cannot read config file empty_dir: it is a folder"),
    # measurement rows
    ("rows-length-beyond", ["calibrate", "--target", "pixel8", "--measurements", "rows_huge_length.jsonl"],
     "field 'prompt_len' must be an integer from 1 to 16777216"),
    ("rows-nan", ["calibrate", "--target", "pixel8", "--measurements", "rows_nan.jsonl"],
     "NaN is not a number nas accepts"),
    ("rows-a-device", ["calibrate", "--target", "pixel8", "--measurements", "/dev/zero"], "not a regular file"),
    # training text
    ("data-a-device", ["search", "--target", "pixel8", "--data", "/dev/zero"],
     "cannot read --data /dev/zero: it is not a regular file"),
    ("data-a-pipe", ["search", "--target", "pixel8", "--data", "fifo"], "cannot read --data fifo: it is not a regular"),
    # bundles
    ("bundle-out-under-a-file", ["bundle", "--target", "rpi5", "--space", "tiny", "--n-configs", "1", "--out",
                                 "not_a_dir/b"], "not_a_dir is a file, not a folder"),
    # the quality law (issue 20): the pretraining budget, the published-runs files, the fit file
    ("train-tokens-zero", ["search", "--target", "pixel8", "--train-tokens", "0"],
     "--train-tokens: '0' is fewer than 1M tokens"),
    ("train-tokens-garbage", ["predict", "--target", "pixel8", "arch.json", "--train-tokens", "lots"],
     "--train-tokens: 'lots' is not a count such as 1T, 300B or 2e11"),
    ("train-tokens-negative", ["inspect", "arch.json", "--train-tokens=-1T"], "--train-tokens: '-1T'"),
    ("train-tokens-beyond", ["report", "--study", STUDY, "--train-tokens", "1e30"],
     "is beyond the largest count nas takes"),
    ("train-tokens-with-params", ["search", "--target", "pixel8", "--quality", "params", "--train-tokens", "1T"],
     "with --quality params there is no predicted loss"),
    ("quality-runs-malformed", ["quality", "fit", "--runs", "bad.json", "--out", "fit.json"],
     "bad.json:1: header must be"),
    ("quality-runs-missing", ["quality", "fit", "--studies", "nowhere.toml", "--out", "fit.json"], "nowhere.toml"),
    ("quality-out-is-a-folder", ["quality", "fit", "--bootstrap", "0", "--out", "runs"],
     "cannot write the quality fit to runs: it is a folder, not a file"),
    ("quality-option-on-show", ["quality", "--bootstrap", "3"], "--bootstrap is an option of `nas quality fit`"),
]


@pytest.mark.parametrize("argv, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(workdir, monkeypatch, capsys, nas_home, argv, expected):
    root, storage = workdir
    monkeypatch.chdir(root)
    while "--env" in argv:  # an environment variable for this case (NAS_HOME), not a nas flag
        i = argv.index("--env")
        name, _, value = argv[i + 1].partition("=")
        monkeypatch.setenv(name, value)
        argv = argv[:i] + argv[i + 2:]
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
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", err), err  # control characters are escaped, never echoed
    assert _snapshot(root, nas_home) == before
    assert not Path("/nonexistent-nas").exists() and not Path("/proc/nas-cannot-be-here").exists()


def test_the_catalogue_is_long_enough():
    assert len(CASES) >= 130 and len({c[0] for c in CASES}) == len(CASES)
