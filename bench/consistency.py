"""The cost of the replicas' content checks: the hot reads with the checks off and on.

    uv run python bench/consistency.py [--scale 1] [--runs 3] [--duration 8]

Runs bench/run.py (scenario a, one worker, default pools, no 10k scenario) in turn with
REPLICA_CONSISTENCY_INTERVAL_SECONDS=0 (off), the default (30 s) and 1 s (thirty times
the default's work), `--runs` times each, interleaved so drift hits all alike, and
prints req/s, p99 and CPU ms per request of the service per endpoint: median and range.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"off": "0", "default (30 s)": "30", "every 1 s": "1"}


def _rows(report: str) -> dict[str, tuple[float, float, float]]:
    """endpoint -> (req/s, p99 ms, CPU ms/req) of the service's rows in a run.py table."""
    found: dict[str, tuple[float, float, float]] = {}
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 13 or cells[1] != "service":
            continue
        try:
            rate = float(cells[5].replace(",", ""))
            p99, cpu = float(cells[9].replace(",", "")), float(cells[12])
        except ValueError:
            continue
        found[cells[3]] = (rate, p99, cpu)
    return found


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="1")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", default="8")
    args = p.parse_args()
    results: dict[str, list[dict[str, tuple[float, float, float]]]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            for name, interval in VARIANTS.items():
                out = Path(tmp) / f"{run}-{interval}.md"
                env = {**os.environ, "REPLICA_CONSISTENCY_INTERVAL_SECONDS": interval}
                cmd = [sys.executable, str(ROOT / "bench" / "run.py"), "--scale", args.scale]
                cmd += ["--duration", args.duration, "--workers", "1", "--pools", "defaults"]
                cmd += ["--skip-c10k", "--skip-seed-if-cached", "--output", str(out)]
                print(f"run {run + 1}/{args.runs}: checks {name}", file=sys.stderr, flush=True)
                subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
                results[name].append(_rows(out.read_text()))
    endpoints = sorted({e for runs in results.values() for r in runs for e in r})
    print("| endpoint | checks | req/s median (range) | p99 ms median (range) | CPU ms/req |")
    print("|---|---|---|---|---|")
    for endpoint in endpoints:
        for name, runs in results.items():
            got = [r[endpoint] for r in runs if endpoint in r]
            if not got:
                continue
            rates, p99s, cpus = ([g[i] for g in got] for i in range(3))
            print(
                f"| {endpoint} | {name} | {statistics.median(rates):,.0f} "
                f"({min(rates):,.0f}-{max(rates):,.0f}) | {statistics.median(p99s):.1f} "
                f"({min(p99s):.1f}-{max(p99s):.1f}) | {statistics.median(cpus):.2f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
