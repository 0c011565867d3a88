"""Wall-clock figures the unit tests used to assert on a shared machine, printed here against their goals.

    python benchmarks/bench_startup.py [--repeats 3]

- `nas --help`: the time of a fresh process (goal < 1 s; heavy imports stay inside the handlers).
- enumerating the subbillion space (ArchBatch of every config, cache cleared first; goal: seconds).
- sampling 100 configs of subbillion (goal: seconds).
The predictor's throughput has its own benchmark (bench_predict_throughput.py). Medians of --repeats runs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GOALS_S = {"nas --help": 1.0, "enumerate subbillion": 10.0, "sample 100 of subbillion": 10.0}


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from nas.spaces import _ENUM_CACHE, load_space

    space = load_space("subbillion")

    def enumerate_fresh():
        _ENUM_CACHE.pop(space.fingerprint, None)
        space.enumerate()

    figures = {
        "nas --help": timed(lambda: subprocess.run([sys.executable, "-m", "nas", "--help"], check=True,
                                                   capture_output=True), args.repeats),
        "enumerate subbillion": timed(enumerate_fresh, args.repeats),
        "sample 100 of subbillion": timed(lambda: space.sample(100, seed=1), args.repeats),
    }
    for name, seconds in figures.items():
        verdict = "MET" if seconds < GOALS_S[name] else "MISSED"
        print(f"{name:<26} {seconds:7.3f} s  (goal < {GOALS_S[name]:g} s: {verdict})")


if __name__ == "__main__":
    sys.exit(main())
