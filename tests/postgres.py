"""A throwaway PostgreSQL server on loopback, in a temporary folder, run as a non-root user (`nobody` when run as
root): the tests of many workers on one study (tests/conftest.py) and benchmarks/bench_workers.py start it."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's programs (pg_ctl on PATH, else Debian's newest), or None when not installed."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return candidates[-1].parent if candidates else None


class PostgresServer:
    """A server in `root`; `stop()` and `start()` take it down and bring it back on the same port (the tests of a
    database lost mid-search). `fsync`: off for the tests (speed), on for benchmarks (a commit costs what it
    costs on a real server)."""

    def __init__(self, bin_dir: Path, root: Path, as_user: list[str], port: int, fsync: bool = False):
        self.bin_dir, self.root, self.as_user, self.port, self.fsync = bin_dir, root, as_user, port, fsync
        self.data, self.logfile = root / "data", root / "server.log"
        self.url = f"postgresql://nas@127.0.0.1:{port}/nas"

    def pg(self, *argv: str) -> None:
        subprocess.run(self.as_user + [str(self.bin_dir / argv[0]), *argv[1:]], check=True, capture_output=True,
                       cwd=self.root, timeout=120)

    def start(self) -> None:
        options = f"-k {self.root} -h 127.0.0.1 -p {self.port}" + ("" if self.fsync else " -c fsync=off")
        self.pg("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-w", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self.pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")


@contextlib.contextmanager
def running_postgres(fsync: bool = False):
    """A started server with an empty database `nas` (role `nas`, trust authentication); stopped and removed
    afterwards. RuntimeError when PostgreSQL is not installed."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (pg_ctl not found); .ci/run installs Debian's postgresql "
                           "package")
    root = Path(tempfile.mkdtemp(prefix="nas-postgres-"))  # not under pytest's root-only folder: `nobody` runs it
    as_user: list[str] = []
    if os.geteuid() == 0:
        os.chown(root, pwd.getpwnam("nobody").pw_uid, -1)
        root.chmod(0o755)
        as_user = ["runuser", "-u", "nobody", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = PostgresServer(bin_dir, root, as_user, port, fsync)
    try:
        server.pg("initdb", "-D", str(server.data), "-U", "nas", "--auth=trust", "--no-sync")
        server.start()
        server.pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "nas", "nas")
        yield server
    finally:
        try:
            server.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # a test left it stopped (or it never started)
        shutil.rmtree(root, ignore_errors=True)
