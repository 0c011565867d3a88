"""Wall time and peak memory of the default `nas search --target pixel8` (fresh folder, SQLite study, report).

Runs the command in a subprocess in an empty temporary folder (so runs/nas.db is new, as on a fresh install)
and reads the child's peak RSS from getrusage. Goals (issue "Search"): <= 60 s on the 2-core machine,
peak memory <= 4 GB. A second run in the same folder measures resuming a finished study.

    .venv/bin/python benchmarks/bench_search_default.py [extra nas search flags...]
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(cmd, cwd) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"nas search failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    return seconds, proc.returncode, proc.stdout


def main(argv: list[str]) -> None:
    cmd = [sys.executable, "-m", "nas", "search", "--target", "pixel8", "--no-progress", *argv]
    with tempfile.TemporaryDirectory() as tmp:
        seconds, _, out = run(cmd, tmp)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
        summary = out.splitlines()[:2]
        report = next((line for line in out.splitlines() if line.startswith("report: ")), "report: none")
        resume_seconds, _, _ = run(cmd, tmp)
    print(f"cpus: {os.cpu_count()}, load average at end: {os.getloadavg()[0]:.1f}")
    for line in summary:
        print(line)
    print(report)
    print(f"resume of the finished study: {resume_seconds:.1f} s")
    print(f"peak RSS: {peak_mb:.0f} MiB (goal <= 4096)")
    print(f"HEADLINE default `nas search --target pixel8`: {seconds:.1f} s wall (goal <= 60 s), "
          f"peak RSS {peak_mb:.0f} MiB")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
