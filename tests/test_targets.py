"""Target files: every shipped target loads and is complete; broken files fail with file, line and key."""

from __future__ import annotations

import os
import re
import shutil

import pytest

from nas.core.errors import NasUserError
from nas.targets import (
    COMPUTE_UNITS,
    EXECUTION_PROVIDERS,
    PRECISIONS,
    TARGETS_DIR,
    Spec,
    Target,
    known_target_names,
    list_targets,
    load_target,
)

REQUIRED = {"host-cpu", "pixel8", "sd8gen3", "iphone15pro", "rpi5", "jetson-orin-nano", "macbook-m3"}


def test_required_targets_are_shipped():
    assert REQUIRED <= set(known_target_names())
    assert [t.name for t in list_targets()][0] == "host-cpu"


@pytest.mark.parametrize("name", known_target_names())
def test_shipped_target(name):
    t = load_target(name)
    assert isinstance(t, Target) and t.name == name and t.path.name == f"{name}.toml"
    assert t.display_name and t.description
    assert t.execution_providers and all(ep in EXECUTION_PROVIDERS for ep in t.execution_providers)
    assert t.default_precision in t.precisions and set(t.precisions) <= set(PRECISIONS)
    assert set(t.compute_unit) == set(t.precisions) and set(t.compute_unit.values()) <= set(COMPUTE_UNITS)
    assert t.threads >= 1
    assert t.ram_bytes and t.memory_budget_bytes and t.memory_budget_bytes <= t.ram_bytes
    for key, spec in t.specs.items():
        assert isinstance(spec, Spec) and spec.value > 0 and spec.unit and len(spec.source) > 10, key
    if t.measured_here:
        assert name == "host-cpu"
        assert t.mem_bandwidth_bytes_per_s is None and t.peak_flops == {}
        assert t.threads == (os.cpu_count() or 1)
        assert t.default_precision == "fp32"
    else:
        assert set(t.peak_flops) == set(t.precisions)
        # Sanity bounds: 1 GB/s .. 1 TB/s of DRAM bandwidth; 10 GFLOP/s .. 1 POP/s of compute.
        assert 1e9 < t.mem_bandwidth_bytes_per_s < 1e12
        assert all(1e10 < v < 1e15 for v in t.peak_flops.values())
        assert {"ram", "memory_bandwidth", "memory_budget"} <= set(t.specs)
        # Sources say where a number comes from; estimates say how they were estimated.
        for spec in t.specs.values():
            assert "estimate" in spec.source or "http" in spec.source or any(
                w in spec.source for w in ("NVIDIA", "Qualcomm", "Apple", "same as", "teardown", "Raspberry"))
    assert t.to_dict()["name"] == name


def test_phones_deploy_int4_weight_only():
    for name in ("pixel8", "sd8gen3", "iphone15pro"):
        t = load_target(name)
        assert t.default_precision == "int4" and t.compute_unit["int4"] == "cpu"
    assert load_target("jetson-orin-nano").compute_unit["fp16"] == "gpu"


def test_latency_source_for_every_target():
    from nas.latency.registry import ANALYTIC, latency_source

    for t in list_targets():  # conftest gives an empty NAS_HOME: nothing calibrated
        source = latency_source(t)  # described devices may be fitted to published measurements
        assert source in (ANALYTIC, "calibrated", "measured") or source.startswith("analytic, fitted to ")


def test_unknown_target_lists_known():
    with pytest.raises(NasUserError) as info:
        load_target("pixel9")
    message = str(info.value)
    assert message.startswith("'pixel9' is not a known target; known: ")
    assert "host-cpu" in message and "pixel8" in message and "\n" not in message


def _broken(tmp_path, edit, name="pixel8"):
    path = tmp_path / f"{name}.toml"
    shutil.copy(TARGETS_DIR / f"{name}.toml", path)
    path.write_text(edit(path.read_text()))
    with pytest.raises(NasUserError) as info:
        load_target(str(path))
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


def _line(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_malformed_toml_names_file_and_line(tmp_path):
    message = _broken(tmp_path, lambda s: s.replace('threads = 4', 'threads = = 4'))
    text = (TARGETS_DIR / "pixel8.toml").read_text()
    assert "malformed TOML" in message and f"line {_line(text, 'threads = 4')}" in message


def test_unknown_key(tmp_path):
    message = _broken(tmp_path, lambda s: s.replace("threads = 4", "threads = 4\nthreds = 4"))
    assert "threds" in message and "unknown key" in message
    message = _broken(tmp_path, lambda s: s.replace('[compute.fp32]\nruns_on = "cpu"',
                                                    '[compute.fp32]\nruns_on = "cpu"\npeek = 3'))
    assert "compute.fp32.peek" in message


def test_unknown_execution_provider(tmp_path):
    message = _broken(tmp_path, lambda s: s.replace('"XnnpackExecutionProvider"', '"XNNPACK"'))
    assert "'XNNPACK' is not an ONNX Runtime execution provider" in message
    text = (tmp_path / "pixel8.toml").read_text()
    assert f"pixel8.toml:{_line(text, 'execution_providers = [')}:" in message


@pytest.mark.parametrize("old, new, needles", [
    ('default_precision = "int4"\n', "", ["missing key(s) default_precision"]),
    ("bandwidth = {", "bandwidth_ = {", ["memory.bandwidth_"]),
    ('default_precision = "int4"', 'default_precision = "int2"', ["precision"]),
    ('unit = "GB/s"', 'unit = "GB"', ["memory.bandwidth.unit", "GB/s"]),
    ("value = 68.3", "value = -1", ["memory.bandwidth.value"]),
    ("threads = 4", "threads = 0", ["threads"]),
    ("[compute.int4]", "[compute.int3]", ["compute"]),
    ('name = "pixel8"', 'name = "pixel7"', ["pixel7"]),
])
def test_missing_key_or_bad_value(tmp_path, old, new, needles):
    message = _broken(tmp_path, lambda s: s.replace(old, new))
    assert all(needle in message for needle in needles), message


def test_bad_compute_unit(tmp_path):
    message = _broken(tmp_path, lambda s: s.replace('runs_on = "cpu"', 'runs_on = "dsp"', 1))
    assert "compute.fp32.runs_on" in message and "'dsp'" in message


def test_peak_line_points_into_its_table(tmp_path):
    message = _broken(tmp_path, lambda s: s.replace('unit = "GOP/s", source = "same as int8',
                                                    'unit = "GIPS", source = "same as int8'))
    text = (tmp_path / "pixel8.toml").read_text()
    assert f":{_line(text, 'GIPS')}:" in message and "compute.int4.peak.unit" in message


def test_auto_is_only_for_host(tmp_path):
    message = _broken(tmp_path, lambda s: re.sub(r"(?m)^budget = .*$", 'budget = "auto"', s))
    assert "memory.budget" in message and "measured_here" in message
