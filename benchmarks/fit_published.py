"""Fit the described devices' analytic latency parameters to published measurements (`nas targets fit`), and
check the fit against the goals of issue 10: leave-one-model-out decode <= 20% and prefill <= 30% (median absolute
error of tokens/s) on every target with >= 4 rows.

    python benchmarks/fit_published.py                 # the same as `nas targets fit`, then the goals
    python benchmarks/fit_published.py --dry-run       # print only
    python benchmarks/fit_published.py --data F --out G
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nas.commands.targets import fit_report  # noqa: E402
from nas.core.errors import NasUserError  # noqa: E402
from nas.latency import published  # noqa: E402

DECODE_GOAL, PREFILL_GOAL = 20.0, 30.0


def goals(result: dict) -> list[str]:
    def verdict(s, goal):
        if s["median_abs_pct"] is None:
            return "no rows"
        if s.get("models", 2) < 2:
            return f"{s['median_abs_pct']:.1f}% (one architecture: not testable)"
        return f"{s['median_abs_pct']:.1f}% {'MET' if s['median_abs_pct'] <= goal else 'MISSED'}"

    lines = [f"goals: LOO decode <= {DECODE_GOAL:.0f}%, prefill <= {PREFILL_GOAL:.0f}% (median abs error of "
             "tokens/s) on every target with >= 4 rows"]
    for target, units in result["targets"].items():
        for unit, e in units.items():
            if not e.get("fitted") or e["n_rows"] < published.MIN_ROWS:
                continue
            d, p, base = e["loo"]["decode"], e["loo"]["prefill"], e["baseline"]
            bd, bp = base["decode"]["median_abs_pct"], base["prefill"]["median_abs_pct"]
            lines.append(f"  {target} ({unit}): decode {verdict(d, DECODE_GOAL)} (spec "
                         f"{bd if bd is not None else '-'}%), prefill {verdict(p, PREFILL_GOAL)} (spec "
                         f"{bp if bp is not None else '-'}%)")
    return lines


def main(argv=None) -> int | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="measurement file (default: latency_models/published.toml)")
    parser.add_argument("--out", help="fitted file to write (default: latency_models/published_fit.json)")
    parser.add_argument("--dry-run", action="store_true", help="print the fit, write nothing")
    args = parser.parse_args(argv)
    try:
        result = published.fit_published(published.load_published(args.data))
    except NasUserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(fit_report(result) + goals(result)))
    if not args.dry_run:
        print(f"\nwrote {published.write_fit(result, args.out)}")


if __name__ == "__main__":
    sys.exit(main())
