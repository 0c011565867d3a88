"""Property-based fuzzing of every reader of user input: whatever a file or flag holds, nas either accepts it or
refuses it with one NasUserError line, never another exception (a traceback to the user).

Each fuzzer starts from a valid input (a space file, a target file, an HF config.json, a nas ArchConfig JSON, a
measurement row) and puts hostile values where the valid ones were: integers past int64, inf and nan, wrong JSON
and TOML types, nested values, control characters; or hands a reader arbitrary text and bytes. What is accepted
is then used the way the commands use it (accounting, enumeration, a prediction), so a value that passes the
reader but breaks the computation behind it is found too.

The budget is small and fixed for CI (`ci` profile: 40 examples a fuzzer, derandomized, so a run is the same
every time and takes seconds); `HYPOTHESIS_PROFILE=deep python -m pytest tests/test_fuzz_readers.py` searches
much further.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nas.core.errors import NasUserError

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("deep", max_examples=2000, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parents[1]

# Values a hostile user puts where a number, a name or a table belongs.
SCALARS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2**31, 2**53, 2**63 - 1, 2**63, 2**64, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e-12, 1e308, -0.0, 0.5]),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(["auto", "silu", "swiglu", "gqa:2", "kv:99999999999999999999", "mha", "GB/s", "\x1b[31m", ""]),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=6)


def refused_or_ok(fn, *args, **kwargs):
    """Call `fn`; a NasUserError must be one line. Returns the result, or None when refused."""
    try:
        return fn(*args, **kwargs)
    except NasUserError as exc:
        text = str(exc)
        assert text and "\n" not in text and not re.search(r"[\x00-\x1f\x7f]", text), repr(text)
        return None


def _file(tmp_path_factory, name: str, data: bytes):
    """A new file `name` holding `data`, in a folder of its own."""
    path = tmp_path_factory.mktemp("fuzz") / name
    path.write_bytes(data)
    return path


def _toml_value(value) -> str:
    """`value` as TOML (inf and nan as TOML writes them; tables inline)."""
    if isinstance(value, (bool, int)):
        return json.dumps(value)  # true / false and plain digits, as TOML writes them
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON's escapes are TOML's basic-string escapes
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


# ----------------------------------------------------------------------------------------------- space files
SPACE_LINES = ['name = "fuzz"', 'description = "d"', "ffn_multiple = 32", "[dimensions]", "hidden_size = [64, 128]",
               "num_layers = { min = 1, max = 3 }", "num_heads = [2, 4]", 'attention = ["mha", "gqa:2"]',
               "ffn_ratio = [2.0, 3.0]", "tie_embeddings = [true, false]", "[fixed]", "vocab_size = 256",
               "max_seq_len = 128", "[constraints]", "params_max = 4000000"]


@given(line=st.integers(0, len(SPACE_LINES) - 1), value=VALUES)
def test_space_files(tmp_path_factory, line, value):
    """A space file with one value replaced: loaded (and enumerated, then its first config's accounting
    taken) or refused in one line."""
    from nas.spaces import SearchSpace, _load_file

    lines = list(SPACE_LINES)
    if "=" in lines[line]:
        lines[line] = lines[line].split("=")[0] + "= " + _toml_value(value)
    path = tmp_path_factory.mktemp("space") / "fuzz.toml"
    path.write_text("\n".join(lines) + "\n")
    space = refused_or_ok(_load_file, path)
    if isinstance(space, SearchSpace) and math.prod(len(d) for d in space.dimensions.values()) <= 10_000:
        batch = refused_or_ok(space.enumerate)
        if batch is not None and len(batch):
            assert int(batch.num_params.min()) > 0  # no count wrapped around to a negative
            batch.config(0).accounting(64, 64)


@given(text=st.text(max_size=300))
def test_space_files_of_any_text(tmp_path_factory, text):
    from nas.spaces import _load_file

    refused_or_ok(_load_file, _file(tmp_path_factory, "fuzz.toml", text.encode("utf-8", "surrogatepass")))


# ----------------------------------------------------------------------------------------------- target files
PIXEL8 = (ROOT / "targets" / "pixel8.toml").read_text()
_TARGET_VALUES = list(re.finditer(r"(?m)(value = |^threads = |^default_precision = |unit = |runs_on = )([^,}\n]+)",
                                  PIXEL8))


@given(which=st.integers(0, len(_TARGET_VALUES) - 1), value=VALUES)
def test_target_files(tmp_path_factory, which, value):
    """pixel8.toml with one spec value, unit, thread count or precision replaced: loaded and used for an
    analytic prediction of a small shape (finite, positive) or refused in one line."""
    from nas.core.arch import ArchBatch, ArchConfig
    from nas.latency.registry import load_latency_model
    from nas.targets import load_target

    match = _TARGET_VALUES[which]
    text = PIXEL8[:match.start(2)] + _toml_value(value) + PIXEL8[match.end(2):]
    path = tmp_path_factory.mktemp("target") / "pixel8.toml"
    path.write_text(text)
    target = refused_or_ok(load_target, str(path))
    if target is None:
        return
    model = refused_or_ok(load_latency_model, target, target.default_precision)
    if model is not None:
        arch = ArchConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, vocab_size=256)
        out = refused_or_ok(model.predict, ArchBatch.from_configs([arch]), 64, 64)
        if out is not None:
            assert all(math.isfinite(float(v[0])) and float(v[0]) > 0 for v in out.values())


# ----------------------------------------------------------------------------------------------- JSON configs
HF = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
      "num_key_value_heads": 1, "intermediate_size": 128, "vocab_size": 256, "hidden_act": "silu",
      "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True,
      "rope_parameters": {"rope_theta": 10000.0}}
NAS = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 128, "num_kv_heads": 1,
       "head_dim": 32, "vocab_size": 256, "ffn_kind": "swiglu", "tie_embeddings": True, "qkv_bias": False,
       "max_seq_len": 256, "rope_theta": 10000.0, "rms_norm_eps": 1e-5}


def _read_config(path: Path):
    """What `nas inspect FILE` / `nas predict FILE` do with the file, then the accounting they print."""
    from nas.commands._common import _ARCH_FLAG_FIELDS, arch_from_args

    args = argparse.Namespace(config=str(path), **{name: None for name in _ARCH_FLAG_FIELDS})
    arch = arch_from_args(args)
    return arch.accounting(512, 2048)


@given(base=st.sampled_from([HF, NAS]), key=st.sampled_from(sorted(set(HF) | set(NAS)) + ["extra"]), value=VALUES)
def test_json_configs(tmp_path_factory, base, key, value):
    """An HF config.json or a nas ArchConfig JSON with one field replaced or added (NaN and Infinity written as
    Python's json writes them)."""
    path = tmp_path_factory.mktemp("config") / "config.json"
    path.write_text(json.dumps({**base, key: value}))
    refused_or_ok(_read_config, path)


@given(data=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_json_configs_of_any_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("config") / "config.json"
    path.write_bytes(data)
    refused_or_ok(_read_config, path)


# ----------------------------------------------------------------------------------------------- measurement rows
def _row():
    from tests.helpers import device_rows

    return device_rows(n=1)[0]


ROW = _row()
ROW_KEYS = sorted(ROW) + ["latency_ms.median", "latency_ms.session_medians", "protocol.runs", "arch.hidden_size",
                          "env.ort_version"]


@given(key=st.sampled_from(ROW_KEYS), value=VALUES)
def test_measurement_rows(tmp_path_factory, key, value):
    """A measurement row (as the on-device runner writes it) with one field replaced: read and fitted on
    as `nas calibrate --measurements` does, or refused in one line."""
    from nas.latency.predictor import phase_data
    from nas.latency.profiling import read_measurements

    row = json.loads(json.dumps(ROW))
    parent, _, leaf = key.rpartition(".")
    (row[parent] if parent else row)[leaf] = value
    path = tmp_path_factory.mktemp("rows") / "rows.jsonl"
    path.write_text(json.dumps(row) + "\n")
    rows = refused_or_ok(read_measurements, path, target="pixel8")
    if rows:
        for phase in ("prefill", "decode"):
            refused_or_ok(phase_data, rows, phase)


@given(data=st.binary(max_size=300))
def test_measurement_files_of_any_bytes(tmp_path_factory, data):
    from nas.latency.profiling import read_measurements

    refused_or_ok(read_measurements, _file(tmp_path_factory, "rows.jsonl", data))


# ----------------------------------------------------------------------------------------------- flags
COUNT_TEXT = st.one_of(st.text(max_size=20),
                       st.from_regex(r"\A[0-9.]{0,40}[kKmMbBgG]?(:[0-9.]{0,40}[kKmMbBgG]?){0,2}\Z"))


@given(text=COUNT_TEXT)
def test_params_ranges(text):
    """--params: a range of counts nas can compare with int64 parameter counts, or one line."""
    from nas.core.limits import MAX_COUNT
    from nas.study.objectives import parse_params_range

    parsed = refused_or_ok(parse_params_range, text)
    if parsed is not None:
        assert all(v is None or (isinstance(v, int) and 0 <= v <= MAX_COUNT) for v in parsed)


@given(text=st.one_of(st.text(max_size=20), st.from_regex(r"\A[0-9eE.+-]{0,30}[kKmM]?(,[0-9eE.+-]{0,30})?\Z")))
def test_token_and_length_lists(text):
    """--proxy-tokens and --prompt-lens / --context-lens: integers within bounds, or argparse's own one line."""
    from nas.commands.profile import lengths_arg
    from nas.commands.search import _tokens_arg
    from nas.core.limits import MAX_COUNT, MAX_TOKENS

    for parse, high in ((_tokens_arg, MAX_COUNT), (lengths_arg, MAX_TOKENS)):
        try:
            values = parse(text)
        except argparse.ArgumentTypeError:
            continue
        assert all(isinstance(v, int) and abs(v) <= high for v in values)


@given(flags=st.lists(st.tuples(st.sampled_from(["--hidden-size", "--layers", "--heads", "--kv-heads", "--ffn",
                                                 "--head-dim", "--vocab-size", "--max-seq-len", "--rope-theta",
                                                 "--prompt-len", "--context-len"]),
                                st.one_of(st.integers(-(2**70), 2**70).map(str),
                                          st.sampled_from(["inf", "nan", "1e999", "-0", "0x10", "1_000", "", "\x1b"]))),
                      max_size=6))
def test_inspect_flags(flags):
    """`nas inspect` with any flag values: exit 0, or exit 2 with one line on stderr and no traceback."""
    from nas.cli import main

    argv = ["inspect", "--hidden-size", "64", "--layers", "2", "--heads", "2", "--ffn", "128"]
    for flag, value in flags:
        argv += [flag, value]
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    assert code == 0 or (code == 2 and len(lines) == 1 and "Traceback" not in err.getvalue()), err.getvalue()


@pytest.mark.parametrize("reader", ["toml", "json"])
@given(depth=st.integers(1, 3000))
def test_nesting(tmp_path_factory, reader, depth):
    """Any depth of nesting: parsed or one line (Python's own parsers raise RecursionError near 1,000)."""
    from nas.core.userfiles import read_json_file, read_toml

    path = tmp_path_factory.mktemp("deep") / f"deep.{reader}"
    path.write_text(("a = " if reader == "toml" else "") + "[" * depth + "]" * depth + "\n")
    refused_or_ok(read_toml if reader == "toml" else read_json_file, path, "file")
