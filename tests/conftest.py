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
    import nas.latency.profiling

    module = helpers.fake_graphs_module()
    monkeypatch.setattr(nas.latency.profiling, "graphs", module)
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


class PostgresServer:
    """A PostgreSQL server the tests started (see `postgres_server`); `stop()` and `start()` take it down and
    bring it back on the same port, for the tests of a database lost mid-search."""

    def __init__(self, bin_dir: Path, root: Path, as_user: list[str], port: int):
        self.bin_dir, self.root, self.as_user, self.port = bin_dir, root, as_user, port
        self.data, self.logfile = root / "data", root / "server.log"
        self.url = f"postgresql://nas@127.0.0.1:{port}/nas"

    def pg(self, *argv: str) -> None:
        subprocess.run(self.as_user + [str(self.bin_dir / argv[0]), *argv[1:]], check=True, capture_output=True,
                       cwd=self.root, timeout=120)

    def start(self) -> None:
        self.pg("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-w", "-o",
                f"-k {self.root} -h 127.0.0.1 -p {self.port} -c fsync=off", "start")

    def stop(self, mode: str = "fast") -> None:
        self.pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")


@pytest.fixture(scope="session")
def postgres_server():
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
    server = PostgresServer(bin_dir, root, as_user, port)
    server.pg("initdb", "-D", str(server.data), "-U", "nas", "--auth=trust", "--no-sync")
    server.start()
    try:
        server.pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "nas", "nas")
        yield server
    finally:
        try:
            server.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # a test left it stopped
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(postgres_server):
    return postgres_server.url
