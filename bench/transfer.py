"""Benchmark: `bookedbarber db copy` against pgloader on one 1,000,000-row SQLite file.

    uv run python bench/transfer.py [--rows 1000000]

Starts its own PostgreSQL (tests/pgcluster.py), installs pgloader with apt-get when
missing, and prints rows per second and peak RSS of each tool's process.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import pgcluster  # noqa: E402
from tests.messy_sqlite import build_large  # noqa: E402

# Runs a command and reports its peak RSS (KiB) from the kernel's own accounting.
MEASURE = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def measured(cmd: list[str]) -> tuple[float, int, str]:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, *cmd], cwd=ROOT, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    rss = int(result.stderr.strip().splitlines()[-1])
    return elapsed, rss, result.stdout + result.stderr


def ensure_pgloader() -> str:
    found = shutil.which("pgloader")
    if found:
        return found
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "pgloader"], check=True
    )
    return shutil.which("pgloader") or "/usr/bin/pgloader"


async def create(url: str, name: str) -> str:
    admin = await asyncpg.connect(url.replace("+asyncpg", "").rsplit("/", 1)[0] + "/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return url.rsplit("/", 1)[0] + "/" + name


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bb-bench-"))
    source = work / "bench.db"
    started = time.perf_counter()
    build_large(source, args.rows)
    print(f"built {source} ({args.rows:,} bookings) in {time.perf_counter() - started:.1f}s")
    total = args.rows + 50
    pgloader = ensure_pgloader()
    cluster = pgcluster.start_cluster(replicas=0)
    try:
        base = cluster.primary.url()
        ours = asyncio.run(create(base, "bench_ours"))
        theirs = asyncio.run(create(base, "bench_pgloader")).replace("+asyncpg", "")
        results = []
        seconds, rss, _ = measured(
            [sys.executable, "-m", "app", "db", "copy", f"sqlite:///{source}", ours]
        )
        results.append(("bookedbarber db copy (incl. verify)", seconds, rss))
        seconds, rss, _ = measured(
            [sys.executable, "-m", "app", "db", "verify", f"sqlite:///{source}", ours]
        )
        results.append(("bookedbarber db verify (alone)", seconds, rss))
        seconds, rss, out = measured([pgloader, f"sqlite://{source}", theirs])
        results.append(("pgloader (no verify)", seconds, rss))
        (work / "pgloader.log").write_text(out)
        print(f"\n{'tool':<40}{'seconds':>10}{'rows/s':>12}{'peak RSS MiB':>15}")
        for name, secs, kib in results:
            print(f"{name:<40}{secs:>10.1f}{total / secs:>12,.0f}{kib / 1024:>15.0f}")
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
