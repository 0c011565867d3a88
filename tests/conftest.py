"""Shared fixtures. Every test gets its own NAS_HOME so no test reads or writes the user's data."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests import helpers


@pytest.fixture(autouse=True)
def nas_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("nas_home")
    monkeypatch.setenv("NAS_HOME", str(home))
    return home


@pytest.fixture
def tiny_arch():
    from nas.core.arch import ArchConfig

    return ArchConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128,
                      vocab_size=256, max_seq_len=256)


@pytest.fixture
def fake_graphs(monkeypatch):
    """The graph builder that profiling and bundles call, swapped for a tiny real ONNX graph."""
    import nas.latency.bundle
    import nas.latency.profile

    module = helpers.fake_graphs_module()
    monkeypatch.setattr(nas.latency.profile, "graphs", module)
    monkeypatch.setattr(nas.latency.bundle, "graphs", module)
    return module


@pytest.fixture
def fake_space(monkeypatch):
    import nas.spaces

    monkeypatch.setattr(nas.spaces, "load_space", lambda name: helpers.FakeSpace(), raising=False)


def _postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return candidates[-1].parent if candidates else None


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server on loopback in a temporary folder, run as a non-root user (`nobody` when the
    tests run as root), for the tests of many workers on one study. Its absence is a failure, not a skip:
    .ci/run installs Debian's postgresql package."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.fail("PostgreSQL is not installed (pg_ctl not found); .ci/run installs Debian's postgresql package")
    root = Path(tempfile.mkdtemp(prefix="nas-postgres-"))  # not under pytest's root-only folder: `nobody` runs it
    as_user: list[str] = []
    if os.geteuid() == 0:
        os.chown(root, pwd.getpwnam("nobody").pw_uid, -1)
        root.chmod(0o755)
        as_user = ["runuser", "-u", "nobody", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data, logfile = root / "data", root / "server.log"

    def pg(*argv: str) -> None:
        subprocess.run(as_user + list(argv), check=True, capture_output=True, cwd=root, timeout=120)

    pg(str(bin_dir / "initdb"), "-D", str(data), "-U", "nas", "--auth=trust", "--no-sync")
    pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(logfile), "-w", "-o",
       f"-k {root} -h 127.0.0.1 -p {port} -c fsync=off", "start")
    try:
        pg(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "nas", "nas")
        yield f"postgresql://nas@127.0.0.1:{port}/nas"
    finally:
        pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
