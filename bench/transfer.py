"""Benchmark: `bookedbarber db copy` against pgloader on the messy backend-shaped SQLite file.

    uv run python bench/transfer.py [--rows 1000000,3000000] [--jobs 2] [--prefetch 10000]
        [--only-pgloader | --skip-pgloader]

Builds the 33-table fixture of tests/messy_sqlite.py (every one-off oddity included),
starts its own PostgreSQL (tests/pgcluster.py), installs pgloader with apt-get when
missing, runs each tool in its own process, then judges both results with the same
independent value-by-value checker (tests/transfer_checker.py): rows lost, rows changed,
tables missing, and rows per second both over the file's rows and over the rows that
arrived unchanged. Then the copy's way back (PostgreSQL -> SQLite, into a new file) of
what the copy loaded, judged by the same checker against the original file.

Per run, from the kernel: wall time; CPU seconds (user + system) of the tool's every
process (getrusage of the waited-for children: the copy's workers included), and those
of the PostgreSQL server (its processes' /proc counters, before and after); peak RSS of
the biggest process, and the peak of the sum of the RSS of all the tool's processes
(sampled every 50 ms). A shared machine makes wall times noisy; CPU seconds and memory
are the steady figures. pgloader runs with `prefetch rows` set (--prefetch; 0 keeps its
default, which runs out of heap at 3M rows).

pgloader runs twice. First as a user would start it, command line only: there the first
value PostgreSQL refuses ends that table's COPY (one error, no rows: appointments is lost
whole), exit code 0 all the same. Then tuned, with the load file LOAD_FILE: `on error
resume next` (a refused batch is retried without the refused rows) and CAST rules for
the columns whose values the declared type refuses, written from what the first run's log
names. What no setting saves: text that is not UTF-8 ends the table's read (client_notes
from that row on), an infinite REAL is written as Lisp syntax, text stops at a NUL.
--only-pgloader runs just the two pgloader runs; --skip-pgloader just the copy's two
(there pgloader need not be installed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import pgcluster  # noqa: E402
from tests.messy_sqlite import add_oddities, build_backend  # noqa: E402
from tests.transfer_checker import compare  # noqa: E402

# Rows per appointment in build_backend: appointments, payments, audit logs, notifications.
ROWS_PER_APPOINTMENT = 2.75
FIXED_ROWS = 1_100
CLOCK = os.sysconf("SC_CLK_TCK")


def _tree(root: int) -> list[int]:
    """root and every process descending from it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _rss_kib(pid: int) -> tuple[int, int]:
    """The process's resident memory now and at its peak (VmRSS, VmHWM), in KiB."""
    found = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                found[line[:5]] = int(line.split()[1])
    except OSError:
        pass
    return found.get("VmRSS", 0), found.get("VmHWM", 0)


def server_cpu(postmaster: int | None) -> float:
    """CPU seconds PostgreSQL has used so far: the postmaster with its ended children, and
    the children still running."""
    if postmaster is None:
        return 0.0
    ticks = 0
    for pid in _tree(postmaster):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
        if pid == postmaster:
            ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK


@dataclass
class Measured:
    seconds: float
    code: int
    cpu: float  # the tool's processes, user + system
    server_cpu: float  # PostgreSQL's
    peak_rss: int  # KiB, the biggest process (its own peak, sampled)
    peak_sum: int  # KiB, the peak of the sum over the tool's processes


def measured(cmd: list[str], log: Path, postmaster: int | None) -> Measured:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server = server_cpu(postmaster)
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        peak_sum = peak_one = 0
        while proc.poll() is None:
            now = [_rss_kib(pid) for pid in _tree(proc.pid)]
            peak_sum = max(peak_sum, sum(rss for rss, _peak in now))
            peak_one = max(peak_one, *(peak for _rss, peak in now))
            time.sleep(0.05)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Measured(
        elapsed,
        proc.returncode,
        cpu,
        server_cpu(postmaster) - server,
        peak_one,
        peak_sum,
    )


def ensure_pgloader() -> str:
    found = shutil.which("pgloader")
    if found:
        return found
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "pgloader"], check=True
    )
    return shutil.which("pgloader") or "/usr/bin/pgloader"


# pgloader tuned to load every table: the file, the database and prefetch rows filled in.
LOAD_FILE = """LOAD DATABASE FROM sqlite://{source} INTO {target}
WITH prefetch rows = {prefetch}, on error resume next
CAST column organizations.settings to text,
     column users.preferences to text,
     column services.duration_minutes to text,
     column product_variants.stock to numeric using float-to-string,
     column appointments.appointment_date to text,
     column appointments.created_at to text,
     column payouts.period_start to text,
     column orders.placed_at to text,
     column payments.amount to numeric drop typemod using float-to-string;
"""


# Tables autovacuum is due to VACUUM or ANALYZE (its default thresholds), in public.
DUE = """SELECT count(*) FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
WHERE s.schemaname = 'public'
  AND coalesce(c.reloptions::text, '') NOT LIKE '%autovacuum_enabled=false%'
  AND (s.n_ins_since_vacuum > 1000 + 0.2 * s.n_live_tup
       OR s.n_mod_since_analyze > 50 + 0.1 * s.n_live_tup)"""
BUSY = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"


async def _autovacuum_due(url: str) -> bool:
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        return bool(await conn.fetchval(DUE) or await conn.fetchval(BUSY))
    finally:
        await conn.close()


async def settle(url: str, databases: list[str], patience: float = 300.0) -> float:
    """Each tool starts from the same state: the fixture just written and the previous
    runs' data on disk, autovacuum done with what they loaded, PostgreSQL checkpointed,
    so no run pays for another's writes. Autovacuum VACUUMs and ANALYZEs millions of
    freshly loaded rows up to a minute (its naptime) after a load: not waited for, it
    would run during the next tool's run. Returns the seconds waited for it."""
    os.sync()
    started = time.perf_counter()
    for database in databases:
        while time.perf_counter() - started < patience:
            if not await _autovacuum_due(database):
                break
            await asyncio.sleep(1)
    admin = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        await admin.execute("CHECKPOINT")
    finally:
        await admin.close()
    os.sync()
    return time.perf_counter() - started


async def create(url: str, name: str) -> str:
    admin = await asyncpg.connect(url.replace("+asyncpg", "").rsplit("/", 1)[0] + "/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return url.rsplit("/", 1)[0] + "/" + name


HEADER = (
    "| tool | rows | seconds | CPU s | PostgreSQL CPU s | rows/s (file) "
    "| rows/s (loaded correctly) | peak RSS (biggest process) | peak RSS (all processes) "
    "| exit | rows lost | rows changed | load average (1 min, start -> end) |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def judged(tool: str, rows: int, run: Measured, lite: Path, url: str, load: str) -> str:
    """The run's line, with the checker's verdict on the SQLite file against PostgreSQL."""
    check = asyncio.run(compare(lite, url))
    correct = check.source_rows - check.lost - check.changed
    line = (
        f"| {tool} | {rows:,} | {run.seconds:.1f} | {run.cpu:.1f} | {run.server_cpu:.1f} | "
        f"{rows / run.seconds:,.0f} | {correct / run.seconds:,.0f} | "
        f"{run.peak_rss / 1024:.0f} MiB | {run.peak_sum / 1024:.0f} MiB | {run.code} | "
        f"{check.source_rows - check.target_rows:,} ({len(check.missing_tables)} tables "
        f"missing) | {check.changed:,} | {load} |"
    )
    print(line, flush=True)
    if check.samples:
        print("    e.g. " + "; ".join(check.samples[:3]))
    return line


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="1000000,3000000")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--prefetch", type=int, default=10_000, help="pgloader's prefetch rows")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--only-pgloader", action="store_true", help="skip the copy's runs")
    which.add_argument("--skip-pgloader", action="store_true", help="only the copy's runs")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bb-bench-"))
    pgloader = "pgloader" if args.skip_pgloader else ensure_pgloader()
    tuned = ["--with", f"prefetch rows = {args.prefetch}"] if args.prefetch else []
    cluster = pgcluster.start_cluster(replicas=0)
    postmaster = cluster.primary.pid
    lines = []
    try:
        base = cluster.primary.url()
        for wanted in (int(n) for n in args.rows.split(",")):
            source = work / f"backend-{wanted}.db"
            back = work / f"back-{wanted}.db"
            started = time.perf_counter()
            rows = build_backend(source, int((wanted - FIXED_ROWS) / ROWS_PER_APPOINTMENT))
            add_oddities(source)
            print(f"built {source.name}: {rows:,} rows in {time.perf_counter() - started:.0f}s")
            ours = asyncio.run(create(base, f"bench_ours_{wanted}"))
            theirs = asyncio.run(create(base, f"bench_pgloader_{wanted}")).replace("+asyncpg", "")
            tuned_db = asyncio.run(create(base, f"bench_pgloader_cast_{wanted}"))
            tuned_db = tuned_db.replace("+asyncpg", "")
            load_file = work / f"cast-{wanted}.load"
            load_file.write_text(
                LOAD_FILE.format(source=source, target=tuned_db, prefetch=args.prefetch or 100_000)
            )
            copy = [sys.executable, "-m", "app", "db", "copy"]
            jobs = ["--jobs", str(args.jobs)]
            # (tool, command, the SQLite file and the database the checker compares)
            runs = [
                (
                    "bookedbarber db copy (verification on)",
                    [*copy, f"sqlite:///{source}", ours, *jobs],
                    source,
                    ours,
                ),
                (
                    "pgloader (no verification)",
                    [pgloader, *tuned, f"sqlite://{source}", theirs],
                    source,
                    theirs,
                ),
                (
                    "pgloader, on error resume next + cast rules (no verification)",
                    [pgloader, str(load_file)],
                    source,
                    tuned_db,
                ),
                (
                    "bookedbarber db copy, PostgreSQL -> SQLite (verification on)",
                    [*copy, ours, f"sqlite:///{back}", *jobs],
                    back,
                    ours,
                ),
            ]
            if args.only_pgloader:
                runs = [run for run in runs if run[1][0] == pgloader]
            elif args.skip_pgloader:
                runs = [run for run in runs if run[1][0] != pgloader]
            for n, (tool, cmd, lite, url) in enumerate(runs):
                waited = asyncio.run(settle(base, [ours, theirs, tuned_db]))
                print(f"{tool}: started after {waited:.0f}s waiting for autovacuum", flush=True)
                before = os.getloadavg()[0]
                run = measured(cmd, work / f"run{n}-{wanted}.log", postmaster)
                load = f"{before:.1f} -> {os.getloadavg()[0]:.1f}"
                lines.append(judged(tool, rows, run, lite, url, load))
            source.unlink()
            back.unlink(missing_ok=True)
        print("\n" + HEADER)
        print("\n".join(lines))
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
