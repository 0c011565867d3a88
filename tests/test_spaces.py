"""Search spaces: presets load and enumerate fast, enumeration agrees with building every combination,
sampling is deterministic and spread out, and broken files fail with file, line and key."""

from __future__ import annotations

import itertools
import re
import shutil

import numpy as np
import pytest

from nas.core.arch import ArchBatch, ArchConfig
from nas.core.errors import NasUserError
from nas.spaces import SPACES_DIR, Dimension, SearchSpace, known_space_names, list_spaces, load_space

PRESETS = {"tiny", "mobilellm", "phonelm", "subbillion", "hostcal"}


def test_presets_are_shipped():
    assert PRESETS <= set(known_space_names())
    assert {s.name for s in list_spaces()} >= PRESETS


@pytest.mark.parametrize("name", known_space_names())
def test_preset_loads_and_enumerates(name):
    space = load_space(name)
    assert isinstance(space, SearchSpace) and space.name == name and space.description
    assert all(isinstance(d, Dimension) and d.choices for d in space.dimensions.values())
    batch = space.enumerate()
    assert isinstance(batch, ArchBatch) and len(batch) == space.size() > 0
    params = batch.num_params
    low, high = space.params_range
    assert (low is None or params.min() >= low) and (high is None or params.max() <= high)
    kinds = np.unique(batch.ffn_kinds, return_inverse=True)[1]
    matrix = np.stack([batch.columns[k] for k in ArchBatch.COLUMNS] + [kinds], axis=1)
    assert len(np.unique(matrix, axis=0)) == len(batch)  # deduplicated
    rng = np.random.default_rng(0)
    for i in rng.choice(len(batch), size=min(40, len(batch)), replace=False):
        arch = batch.config(int(i))
        assert space.check(arch) == [], arch
        assert arch.num_params == int(params[i])


def test_sizes():
    assert 100 <= load_space("tiny").size() <= 500
    assert 50_000 <= load_space("subbillion").size() <= 500_000
    assert load_space("hostcal").size() >= 300


def test_subbillion_enumerates_every_config():
    """How long it takes is benchmarks/bench_startup.py's."""
    from nas.spaces import _ENUM_CACHE

    space = load_space("subbillion")
    _ENUM_CACHE.pop(space.fingerprint, None)
    assert len(space.enumerate()) == space.size()


def test_enumeration_matches_building_every_combination():
    space = load_space("tiny")
    expected = {}
    for combo in itertools.product(*(d.choices for d in space.dimensions.values())):
        try:
            arch = space.build(dict(zip(space.dimensions, combo)))
        except NasUserError:
            continue
        low, high = space.params_range
        if low <= arch.num_params <= high:
            expected[arch.arch_id] = arch
    batch = space.enumerate()
    got = {batch.config(i).arch_id for i in range(len(batch))}
    assert got == set(expected)


def test_paper_configs_are_in_their_spaces():
    mobilellm = load_space("mobilellm")
    for hidden, layers, heads, kv, ffn in [(576, 30, 9, 3, 1536), (960, 32, 15, 5, 2560), (1152, 40, 18, 6, 3072)]:
        arch = ArchConfig(hidden_size=hidden, num_layers=layers, num_heads=heads, num_kv_heads=kv,
                          intermediate_size=ffn, vocab_size=32000)
        assert mobilellm.check(arch) == []
    built = mobilellm.build({"hidden_size": 576, "num_layers": 30, "attention": "gqa:3", "ffn_ratio": 2.667})
    assert built.num_params == 124_635_456 and built.num_kv_heads == 3
    phonelm = load_space("phonelm")
    for hidden, layers, ffn in [(1024, 24, 4864), (2560, 19, 6816)]:
        arch = ArchConfig(hidden_size=hidden, num_layers=layers, num_heads=16, intermediate_size=ffn,
                          vocab_size=49152, ffn_kind="reglu")
        assert phonelm.check(arch) == []


def test_check_reports_reasons():
    space = load_space("tiny")
    arch = ArchConfig(hidden_size=512, num_layers=3, num_heads=8, num_kv_heads=2, intermediate_size=1000,
                      vocab_size=32000)
    reasons = " | ".join(space.check(arch))
    for word in ("hidden_size", "num_layers", "vocab_size", "intermediate_size", "parameters"):
        assert word in reasons


def test_build_errors():
    space = load_space("tiny")
    values = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "attention": "mha", "ffn_ratio": 2.0,
              "tie_embeddings": True}
    assert space.build(values).intermediate_size == 128
    with pytest.raises(NasUserError, match="hidden_size=100 is not a choice"):
        space.build({**values, "hidden_size": 100})
    with pytest.raises(NasUserError, match="num_layers"):
        space.build({k: v for k, v in values.items() if k != "num_layers"})
    with pytest.raises(NasUserError, match="'heads' is not a dimension"):
        space.build({**values, "heads": 2})


def test_invalid_combinations_are_not_in_the_space(tmp_path):
    path = tmp_path / "odd.toml"
    path.write_text(
        'name = "odd"\ndescription = "d"\n[dimensions]\nhidden_size = [96, 128]\nnum_layers = [2]\n'
        'num_heads = [3, 4]\nattention = ["mha", "gqa:2", "kv:3"]\nintermediate_size = [256]\n'
        '[fixed]\nvocab_size = 100\n')
    space = load_space(str(path))
    batch = space.enumerate()
    configs = {(c.hidden_size, c.num_heads, c.num_kv_heads) for c in (batch.config(i) for i in range(len(batch)))}
    # 128/3 does not divide; gqa:2 and kv:3 do not divide 3 and 4 heads respectively (kv:3 with 3 heads is MHA);
    # 96/4 gives head_dim 24, which ONNX Runtime's GroupQueryAttention refuses (not a multiple of 16).
    assert configs == {(96, 3, 3), (128, 4, 4), (128, 4, 2)}
    arch = ArchConfig(hidden_size=96, num_layers=2, num_heads=4, intermediate_size=256, vocab_size=100)
    assert any("head_dim=24 is not a multiple of 16" in r for r in space.check(arch))
    with pytest.raises(NasUserError, match="hidden_size is not divisible by num_heads"):
        space.build({"hidden_size": 128, "num_layers": 2, "num_heads": 3, "attention": "mha",
                     "intermediate_size": 256})
    with pytest.raises(NasUserError, match="attention"):
        space.build({"hidden_size": 96, "num_layers": 2, "num_heads": 3, "attention": "gqa:2",
                     "intermediate_size": 256})


def test_sample_is_deterministic_distinct_and_spread():
    space = load_space("tiny")
    a, b = space.sample(24, seed=7), space.sample(24, seed=7)
    assert [x.arch_id for x in a] == [x.arch_id for x in b]
    assert len({x.arch_id for x in a}) == 24
    assert [x.arch_id for x in space.sample(24, seed=8)] != [x.arch_id for x in a]
    assert all(space.check(x) == [] for x in a)
    for name in ("hidden_size", "num_layers", "tie_embeddings"):  # every value of these dimensions is hit
        assert {getattr(x, name) for x in a} == set(space.dimensions[name].choices)
    everything = space.sample(10_000, seed=0)
    assert len(everything) == space.size() == len({x.arch_id for x in everything})


def test_sample_large_space():
    space = load_space("subbillion")
    picks = space.sample(100, seed=1)
    assert len({p.arch_id for p in picks}) == 100
    assert len({p.hidden_size for p in picks}) > 15 and len({p.num_layers for p in picks}) > 20


def _copy(tmp_path, name="tiny", edit=lambda s: s):
    path = tmp_path / f"{name}.toml"
    shutil.copy(SPACES_DIR / f"{name}.toml", path)
    path.write_text(edit(path.read_text()))
    return path


def test_fingerprint():
    assert load_space("tiny").fingerprint == load_space("tiny").fingerprint
    assert len({s.fingerprint for s in list_spaces()}) == len(list_spaces())


def test_fingerprint_follows_the_definition(tmp_path):
    base = load_space("tiny").fingerprint
    same = _copy(tmp_path, edit=lambda s: "# another comment\n" + s.replace('description = "', 'description = "x'))
    assert load_space(str(same)).fingerprint == base
    changed = _copy(tmp_path, edit=lambda s: s.replace("num_layers = [2, 4, 6]", "num_layers = [2, 4, 8]"))
    assert load_space(str(changed)).fingerprint != base


def _error(tmp_path, edit, name="tiny") -> str:
    path = _copy(tmp_path, name, edit)
    with pytest.raises(NasUserError) as info:
        load_space(str(path)).size()
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


def _line_no(path, needle) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_malformed_toml(tmp_path):
    message = _error(tmp_path, lambda s: s.replace("num_layers = [2, 4, 6]", "num_layers = [2, 4, 6"))
    assert "malformed TOML" in message and "line" in message


def test_unknown_keys(tmp_path):
    message = _error(tmp_path, lambda s: s.replace("num_layers = [2, 4, 6]", "num_layer = [2, 4, 6]"))
    assert "dimensions.num_layer" in message and "unknown key" in message
    assert f"tiny.toml:{_line_no(tmp_path / 'tiny.toml', 'num_layer =')}:" in message
    assert "fixed.vocab" in _error(tmp_path, lambda s: s.replace("vocab_size = 512", "vocab = 512"))
    assert "constraints.params_mx" in _error(tmp_path, lambda s: s.replace("params_max", "params_mx"))
    assert "speed" in _error(tmp_path, lambda s: s + "\nspeed = 1\n")


def test_empty_choices_and_ranges(tmp_path):
    assert "empty list" in _error(tmp_path, lambda s: s.replace("num_layers = [2, 4, 6]", "num_layers = []"))
    message = _error(tmp_path, lambda s: s.replace("min = 64, max = 256", "min = 256, max = 64"))
    assert "dimensions.hidden_size" in message and "empty range" in message
    assert "step" in _error(tmp_path, lambda s: s.replace("step = 64", "step = 0"))


def test_bad_values(tmp_path):
    message = _error(tmp_path, lambda s: s.replace('"gqa:2"', '"gqa:1"'))
    assert "dimensions.attention" in message and "'gqa:1'" in message
    assert "ffn_kind" in _error(tmp_path, lambda s: s.replace('ffn_kind = "swiglu"', 'ffn_kind = "relu"'))
    assert "tie_embeddings" in _error(tmp_path, lambda s: s.replace("[true, false]", '["yes"]'))
    assert "twice" in _error(tmp_path, lambda s: s.replace("[2, 4, 6]", "[2, 2, 6]"))
    message = _error(tmp_path, lambda s: s.replace("ffn_ratio = [2.0, 3.0, 4.0]", "ffn_ratio = { min = 2, max = 4 }"))
    assert "dimensions.ffn_ratio" in message and "integer" in message
    def added(line):
        return lambda s: s.replace("vocab_size = 512", f"vocab_size = 512\n{line}")

    assert "also a dimension" in _error(tmp_path, added("num_layers = 4"))
    assert "num_kv_heads" in _error(tmp_path, added("num_kv_heads = 1"))
    assert "hidden_size" in _error(tmp_path, lambda s: re.sub(r"(?m)^hidden_size = .*$", "", s))


def test_impossible_constraints(tmp_path):
    message = _error(tmp_path, lambda s: s.replace("params_min = 100_000", "params_min = 5_000_000"))
    assert "constraints.params_min" in message and "exceeds params_max" in message
    message = _error(tmp_path, lambda s: s.replace("params_max = 4_000_000", "params_max = 50_000")
                                          .replace("params_min = 100_000", "params_min = 10_000"))
    assert "constraints" in message and "admits no config" in message


def test_unknown_space():
    with pytest.raises(NasUserError) as info:
        load_space("nope")
    assert "'nope' is not a known search space; known: " in str(info.value)
    assert "tiny" in str(info.value) and "subbillion" in str(info.value)
    with pytest.raises(NasUserError, match="does not exist"):
        load_space("missing/space.toml")


BIG_SPACE = """name = "big"
description = "more configs than nas enumerates"
[dimensions]
hidden_size = { min = 256, max = 4096, step = 16 }
num_layers = { min = 2, max = 128, step = 1 }
head_dim = [32, 64, 128]
attention = ["mha", "gqa:2", "gqa:4", "gqa:8", "mqa"]
ffn_ratio = [2.0, 2.5, 2.667, 3.0, 3.5, 4.0]
ffn_kind = ["swiglu", "reglu", "geglu"]
tie_embeddings = [true, false]
"""


def test_size_with_a_limit_stops_early_on_a_huge_space(tmp_path):
    from nas.spaces import _ENUM_CACHE, ENUMERATION_LIMIT

    path = tmp_path / "big.toml"
    path.write_text(BIG_SPACE)
    space = load_space(str(path))
    assert space.size(limit=ENUMERATION_LIMIT) is None
    assert space.fingerprint not in _ENUM_CACHE  # answered without enumerating (or keeping) the space
    tiny = load_space("tiny")
    assert tiny.size(limit=ENUMERATION_LIMIT) == tiny.size() == len(tiny.enumerate())
    assert tiny.size(limit=tiny.size() - 1) is None


def test_nas_spaces_show_a_huge_space(tmp_path, capsys):
    from nas.cli import main

    path = tmp_path / "big.toml"
    path.write_text(BIG_SPACE)
    assert main(["spaces", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "size:        > 2,000,000 valid configs" in out and "too large to enumerate" in out


def test_default_lengths_fit_every_preset_and_are_measured_by_default():
    """Decode at context C is C cached tokens plus the new one (C + 1 positions): the presets' max_seq_len holds
    the search's default lengths, and the measuring commands' default lengths include them."""
    from nas.latency.measure import DEFAULT_CONTEXT_LENS, DEFAULT_PROMPT_LENS
    from nas.latency.profiling import fits_context
    from nas.search import DEFAULT_CONTEXT_LEN, DEFAULT_PROMPT_LEN

    assert DEFAULT_PROMPT_LEN in DEFAULT_PROMPT_LENS and DEFAULT_CONTEXT_LEN in DEFAULT_CONTEXT_LENS
    for name in ("subbillion", "phonelm", "mobilellm", "hostcal"):
        for arch in load_space(name).sample(20, seed=0):
            assert fits_context(arch, "prefill", max(DEFAULT_PROMPT_LENS)), name
            assert fits_context(arch, "decode", max(DEFAULT_CONTEXT_LENS)), name
