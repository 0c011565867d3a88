"""Deployment targets: one declarative TOML file per device, loaded into a frozen `Target`.

A target file says which ONNX Runtime execution providers to use (exact ORT names, preferred first), the
precision the model is deployed at by default and the ones it can be deployed at, the threads to use, and
every spec number the analytic (roofline) latency model needs, each with its unit and its source:

    name = "pixel8"
    display_name = "Google Pixel 8 (Tensor G3)"
    description = "..."
    measured_here = false                      # true only for host-cpu: latency measured on this machine
    execution_providers = ["CPUExecutionProvider", "XnnpackExecutionProvider"]
    default_precision = "int4"
    precisions = ["fp32", "fp16", "int8", "int4"]
    threads = 4                                # or "auto" (host-cpu): os.cpu_count()

    [memory]                                   # each a spec: value, unit, source
    ram = { value = 8, unit = "GB", source = "..." }
    bandwidth = { value = 68.3, unit = "GB/s", source = "..." }
    budget = { value = 2, unit = "GiB", source = "..." }   # what one app may give the model

    [compute.int4]                             # one table per deployable precision
    runs_on = "cpu"                            # cpu | gpu | npu
    peak = { value = 830, unit = "GOP/s", source = "..." }

    [extra.npu_int8]                           # optional display-only specs
    value = 35
    unit = "TOP/s"
    source = "..."

host-cpu is measured, not described: its file has `ram = "auto"`, `budget = "auto"` (half of RAM), no
bandwidth and no peaks (probes measure those), and `threads = "auto"`.

Units: bytes in B, KB, MB, GB (10**3 steps) or KiB, MiB, GiB (2**10 steps); bandwidth in GB/s or MB/s;
throughput in GFLOP/s, TFLOP/s (floating point) or GOP/s, TOP/s (integer ops). A multiply-add is 2 ops.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.core.accounting import PRECISIONS
from nas.core.errors import NasUserError
from nas.core.limits import MAX_THREADS, is_finite_number, is_int, shown
from nas.core.paths import shipped
from nas.core.userfiles import TomlFile, read_toml

__all__ = ["Spec", "Target", "load_target", "list_targets", "known_target_names", "TARGETS_DIR",
           "EXECUTION_PROVIDERS", "PRECISIONS", "COMPUTE_UNITS"]

TARGETS_DIR = shipped("targets")

# Exact names ONNX Runtime gives its execution providers (onnxruntime.get_all_providers()).
EXECUTION_PROVIDERS = (
    "CPUExecutionProvider", "XnnpackExecutionProvider", "NnapiExecutionProvider", "QNNExecutionProvider",
    "CoreMLExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider",
    "MIGraphXExecutionProvider", "OpenVINOExecutionProvider", "DnnlExecutionProvider", "DmlExecutionProvider",
    "WebGpuExecutionProvider", "ACLExecutionProvider", "ArmNNExecutionProvider", "VitisAIExecutionProvider",
    "SNPEExecutionProvider", "AzureExecutionProvider", "JsExecutionProvider", "CANNExecutionProvider",
    "RknpuExecutionProvider", "TvmExecutionProvider", "NvTensorRTRTXExecutionProvider",
)
COMPUTE_UNITS = ("cpu", "gpu", "npu")

_BYTE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
_BANDWIDTH_UNITS = {"GB/s": 1e9, "MB/s": 1e6}
_FLOP_UNITS = {"GFLOP/s": 1e9, "TFLOP/s": 1e12, "GOP/s": 1e9, "TOP/s": 1e12}

_TOP_KEYS = {"name", "display_name", "description", "measured_here", "execution_providers", "default_precision",
             "precisions", "threads", "memory", "compute", "extra"}
_REQUIRED_TOP = _TOP_KEYS - {"extra"}
_MEMORY_KEYS = {"ram", "bandwidth", "budget"}
_SPEC_KEYS = {"value", "unit", "source"}
_COMPUTE_KEYS = {"runs_on", "peak"}
MAX_SPEC = 1e18  # bytes, bytes/s or ops/s: an exabyte or an exaop/s is beyond any device, and within int64


@dataclass(frozen=True)
class Spec:
    """One spec number with its unit and where it comes from (a URL or document, and what it says)."""

    value: float
    unit: str
    source: str


@dataclass(frozen=True)
class Target:
    name: str
    display_name: str
    description: str
    measured_here: bool  # True only for host-cpu
    execution_providers: tuple[str, ...]  # exact ORT names, preferred first
    default_precision: str
    precisions: tuple[str, ...]
    threads: int
    ram_bytes: int | None
    memory_budget_bytes: int | None
    mem_bandwidth_bytes_per_s: float | None  # peak DRAM bandwidth (None for host-cpu: probed)
    peak_flops: dict[str, float]  # precision -> peak FLOP/s (ops/s for int) of the unit that runs it
    compute_unit: dict[str, str]  # precision -> "cpu" | "gpu" | "npu"
    specs: dict[str, Spec]  # every spec number with unit and source, for display
    path: Path = field(compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able view (what `nas targets show --json` prints)."""
        return {
            "name": self.name, "display_name": self.display_name, "description": self.description,
            "measured_here": self.measured_here, "execution_providers": list(self.execution_providers),
            "default_precision": self.default_precision, "precisions": list(self.precisions),
            "threads": self.threads, "ram_bytes": self.ram_bytes, "memory_budget_bytes": self.memory_budget_bytes,
            "mem_bandwidth_bytes_per_s": self.mem_bandwidth_bytes_per_s, "peak_flops": dict(self.peak_flops),
            "compute_unit": dict(self.compute_unit),
            "specs": {k: {"value": s.value, "unit": s.unit, "source": s.source} for k, s in self.specs.items()},
            "path": str(self.path),
        }


# ----------------------------------------------------------------------------------------------------------
# loading and validation

def _spec(c: TomlFile, value: Any, key: str, units: dict[str, float]) -> tuple[Spec, float]:
    """A {value, unit, source} table -> (Spec, value in base units)."""
    c.keys(value, key, _SPEC_KEYS, _SPEC_KEYS)
    number = value["value"]
    if not is_finite_number(number) or not number > 0:
        raise c.fail(f"{key}.value", f"must be a positive number, got {shown(number)}")
    unit = value["unit"]
    if not isinstance(unit, str) or unit not in units:
        raise c.fail(f"{key}.unit", f"{shown(unit)} is not allowed here; allowed: {', '.join(units)}")
    source = c.string(value["source"], f"{key}.source")
    base = float(number) * units[unit]
    if not base < MAX_SPEC:
        raise c.fail(f"{key}.value", f"{number!r} {unit} is beyond any device (at most {MAX_SPEC:.0e} in base units)")
    if round(base) < 1:  # counted in whole bytes (ops) per second: below one it would round to 0, i.e. "missing"
        raise c.fail(f"{key}.value", f"{number!r} {unit} is less than 1 in base units (bytes, bytes/s, ops/s); "
                                     f"give the figure in its unit")
    return Spec(float(number), unit, source), float(round(base))


def _host_ram_bytes() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _parse(path: Path) -> Target:
    c = read_toml(path, "target file")
    data = c.data
    c.keys(data, "", _TOP_KEYS, set())
    missing = sorted(_REQUIRED_TOP - set(data))
    if missing:
        raise c.fail("", f"missing key(s) {', '.join(missing)}")
    name = c.string(data["name"], "name")
    if name != path.stem:
        raise c.fail("name", f"{name!r} must equal the file name {path.stem!r}")
    measured_here = data["measured_here"]
    if not isinstance(measured_here, bool):
        raise c.fail("measured_here", f"must be true or false, got {measured_here!r}")
    precisions = _listed(c, data["precisions"], "precisions", PRECISIONS, "a precision")
    default_precision = data["default_precision"]
    if default_precision not in precisions:
        raise c.fail("default_precision", f"{default_precision!r} must be one of precisions: {', '.join(precisions)}")
    specs: dict[str, Spec] = {}
    ram_bytes, budget_bytes, bandwidth = _memory(c, data["memory"], measured_here, specs)
    peak_flops, compute_unit = _compute(c, data["compute"], precisions, measured_here, specs)
    _extra(c, data.get("extra", {}), specs)
    return Target(
        name=name, display_name=c.string(data["display_name"], "display_name"),
        description=c.string(data["description"], "description"), measured_here=measured_here,
        execution_providers=_listed(c, data["execution_providers"], "execution_providers", EXECUTION_PROVIDERS,
                                    "an ONNX Runtime execution provider"),
        default_precision=default_precision, precisions=precisions, threads=_threads(c, data["threads"]),
        ram_bytes=ram_bytes, memory_budget_bytes=budget_bytes, mem_bandwidth_bytes_per_s=bandwidth,
        peak_flops=peak_flops, compute_unit=compute_unit, specs=specs, path=path,
    )


def _listed(c, values, key: str, known, what: str) -> tuple[str, ...]:
    """A non-empty list of distinct names, each one of `known`."""
    if not isinstance(values, list) or not values:
        raise c.fail(key, f"must be a non-empty list drawn from {', '.join(known)}")
    for value in values:
        if value not in known:
            raise c.fail(key, f"{value!r} is not {what}; known: {', '.join(known)}")
    if len(set(values)) != len(values):
        raise c.fail(key, f"lists {what.split(' ', 1)[1]} twice")
    return tuple(values)


def _threads(c, threads) -> int:
    if threads == "auto":
        return os.cpu_count() or 1
    if not is_int(threads) or not 1 <= threads <= MAX_THREADS:
        raise c.fail("threads", f"must be an integer from 1 to {MAX_THREADS:,} or \"auto\", got {shown(threads)}")
    return threads


# [memory] sizes a measured_here target may read from this machine ("auto"): what each means.
_AUTO_MEMORY = {"ram": ("ram", "read from this machine", "measured here: os.sysconf(SC_PHYS_PAGES) * "
                        "os.sysconf(SC_PAGE_SIZE)"),
                "budget": ("memory_budget", "half of this machine's RAM",
                           "half of this machine's RAM, leaving the rest to the OS and other work")}


def _memory(c, memory, measured_here: bool, specs: dict[str, Spec]) -> tuple[int | None, int | None, float | None]:
    """RAM and model budget in bytes, and bandwidth in bytes/s (None: probed), their specs added to `specs`."""
    c.keys(memory, "memory", _MEMORY_KEYS, {"ram", "budget"} if measured_here else _MEMORY_KEYS)
    sizes: dict[str, int | None] = {}
    for key, (spec_name, auto_what, auto_source) in _AUTO_MEMORY.items():
        if memory[key] == "auto":
            if not measured_here:
                raise c.fail(f"memory.{key}", f"\"auto\" ({auto_what}) is only for measured_here targets")
            ram = sizes.get("ram")
            sizes[key] = _host_ram_bytes() if key == "ram" else (ram // 2 if ram else None)
            if sizes[key]:
                specs[spec_name] = Spec(round(sizes[key] / 2**30, 2), "GiB", auto_source)
        else:
            spec, value = _spec(c, memory[key], f"memory.{key}", _BYTE_UNITS)
            specs[spec_name], sizes[key] = spec, int(value)
            if key == "budget" and sizes["ram"] and sizes[key] > sizes["ram"]:
                raise c.fail("memory.budget", f"{spec.value} {spec.unit} exceeds the RAM")
    bandwidth: float | None = None
    if "bandwidth" in memory:
        if measured_here:
            raise c.fail("memory.bandwidth", "a measured_here target's bandwidth is probed, not written down")
        specs["memory_bandwidth"], bandwidth = _spec(c, memory["bandwidth"], "memory.bandwidth", _BANDWIDTH_UNITS)
    return sizes["ram"], sizes["budget"], bandwidth


def _compute(c, compute, precisions, measured_here: bool, specs: dict[str, Spec]):
    """Per precision: peak FLOP/s (spec sheet; none for a measured_here target) and the unit that runs it."""
    c.keys(compute, "compute", set(PRECISIONS), set(precisions))
    extra_precisions = sorted(set(compute) - set(precisions))
    if extra_precisions:
        raise c.fail(f"compute.{extra_precisions[0]}", f"is not in precisions ({', '.join(precisions)})")
    peak_flops: dict[str, float] = {}
    compute_unit: dict[str, str] = {}
    for precision in precisions:
        key = f"compute.{precision}"
        entry = compute[precision]
        c.keys(entry, key, _COMPUTE_KEYS, {"runs_on"} if measured_here else _COMPUTE_KEYS)
        unit = entry["runs_on"]
        if unit not in COMPUTE_UNITS:
            raise c.fail(f"{key}.runs_on", f"{unit!r} is not a compute unit; allowed: {', '.join(COMPUTE_UNITS)}")
        compute_unit[precision] = unit
        if "peak" in entry:
            if measured_here:
                raise c.fail(f"{key}.peak", "a measured_here target's peak is probed, not written down")
            specs[f"peak_{precision}"], peak_flops[precision] = _spec(c, entry["peak"], f"{key}.peak", _FLOP_UNITS)
    return peak_flops, compute_unit


def _extra(c, extra, specs: dict[str, Spec]) -> None:
    """[extra] specs (documentation: clock, cores, power), each with its unit and source."""
    c.keys(extra, "extra", set(extra) if isinstance(extra, dict) else set(), set())
    all_units = {**_BYTE_UNITS, **_BANDWIDTH_UNITS, **_FLOP_UNITS, "GHz": 1e9, "MHz": 1e6, "cores": 1, "W": 1}
    for key, entry in extra.items():
        if key in specs:
            raise c.fail(f"extra.{key}", "clashes with a spec name derived from [memory]/[compute]")
        specs[key], _ = _spec(c, entry, f"extra.{key}", all_units)


def _target_files() -> dict[str, Path]:
    return {p.stem: p for p in sorted(TARGETS_DIR.glob("*.toml"))}


def known_target_names() -> list[str]:
    """Names of the shipped targets, sorted."""
    return sorted(_target_files())


def load_target(name: str) -> Target:
    """The target called `name` (a shipped file), or a path to a target .toml file."""
    if isinstance(name, Target):
        return name
    files = _target_files()
    if name in files:
        return _parse(files[name])
    if str(name).endswith(".toml"):
        path = Path(name)
        if not path.exists():
            raise NasUserError(f"target file {name} does not exist")
        return _parse(path)  # a folder or a device is refused by the reader, as what it is
    raise NasUserError(f"{name!r} is not a known target; known: {', '.join(sorted(files))}")


def list_targets() -> list[Target]:
    """Every shipped target, host-cpu first, then by name."""
    targets = [_parse(path) for path in _target_files().values()]
    return sorted(targets, key=lambda t: (not t.measured_here, t.name))
