"""Benchmark: `bookedbarber db copy` against pgloader on the messy backend-shaped SQLite file.

    uv run python bench/transfer.py [--rows 1000000,3000000] [--jobs 2]

Builds the 33-table fixture of tests/messy_sqlite.py (every one-off oddity included),
starts its own PostgreSQL (tests/pgcluster.py), installs pgloader with apt-get when
missing, runs each tool in its own process (wall time, exit code, peak RSS from the
kernel, the load average around it), then judges both results with the same independent
value-by-value checker (tests/transfer_checker.py): rows lost, rows changed, tables
missing, and rows per second both over the file's rows and over the rows that arrived
unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import os
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
from tests.messy_sqlite import add_oddities, build_backend  # noqa: E402
from tests.transfer_checker import compare  # noqa: E402

# Runs a command and reports its peak RSS (KiB) from the kernel's own accounting.
MEASURE = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)
# Rows per appointment in build_backend: appointments, payments, audit logs, notifications.
ROWS_PER_APPOINTMENT = 2.75
FIXED_ROWS = 1_100


def measured(cmd: list[str], log: Path) -> tuple[float, int, int]:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, *cmd], cwd=ROOT, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    log.write_text(result.stdout + result.stderr)
    rss = int(result.stderr.strip().splitlines()[-1])
    return elapsed, rss, result.returncode


def ensure_pgloader() -> str:
    found = shutil.which("pgloader")
    if found:
        return found
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "pgloader"], check=True
    )
    return shutil.which("pgloader") or "/usr/bin/pgloader"


async def settle(url: str) -> None:
    """Each tool starts from the same state: the fixture just written and the previous
    runs' data on disk, PostgreSQL checkpointed, so no run pays for another's writes."""
    os.sync()
    admin = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        await admin.execute("CHECKPOINT")
    finally:
        await admin.close()
    os.sync()


async def create(url: str, name: str) -> str:
    admin = await asyncpg.connect(url.replace("+asyncpg", "").rsplit("/", 1)[0] + "/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return url.rsplit("/", 1)[0] + "/" + name


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="1000000,3000000")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bb-bench-"))
    pgloader = ensure_pgloader()
    cluster = pgcluster.start_cluster(replicas=0)
    lines = []
    try:
        base = cluster.primary.url()
        for wanted in (int(n) for n in args.rows.split(",")):
            source = work / f"backend-{wanted}.db"
            started = time.perf_counter()
            rows = build_backend(source, int((wanted - FIXED_ROWS) / ROWS_PER_APPOINTMENT))
            add_oddities(source)
            print(f"built {source.name}: {rows:,} rows in {time.perf_counter() - started:.0f}s")
            ours = asyncio.run(create(base, f"bench_ours_{wanted}"))
            theirs = asyncio.run(create(base, f"bench_pgloader_{wanted}")).replace("+asyncpg", "")
            runs = [
                (
                    "bookedbarber db copy (verification on)",
                    [
                        sys.executable,
                        "-m",
                        "app",
                        "db",
                        "copy",
                        f"sqlite:///{source}",
                        ours,
                        "--jobs",
                        str(args.jobs),
                    ],
                    ours,
                ),
                ("pgloader (no verification)", [pgloader, f"sqlite://{source}", theirs], theirs),
            ]
            for tool, cmd, url in runs:
                asyncio.run(settle(base))
                before = os.getloadavg()[0]
                seconds, rss, code = measured(cmd, work / f"{tool.split()[0]}-{wanted}.log")
                load = f"{before:.1f} -> {os.getloadavg()[0]:.1f}"
                check = asyncio.run(compare(source, url))
                correct = check.source_rows - check.lost - check.changed
                line = (
                    f"| {tool} | {rows:,} | {seconds:.1f} | {rows / seconds:,.0f} | "
                    f"{correct / seconds:,.0f} | {rss / 1024:.0f} MiB | {code} | "
                    f"{check.source_rows - check.target_rows:,} "
                    f"({len(check.missing_tables)} tables missing) | {check.changed:,} | "
                    f"{load} |"
                )
                print(line, flush=True)
                if check.samples:
                    print("    e.g. " + "; ".join(check.samples[:3]))
                lines.append(line)
            source.unlink()
        print(
            "\n| tool | rows | seconds | rows/s (file) | rows/s (loaded correctly) | peak RSS "
            "| exit | rows lost | rows changed | load average (1 min, start -> end) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        print("\n".join(lines))
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
