"""CPU per request of a hot read, the service against the reference, PostgreSQL included.

    uv run python bench/read_cost.py [--scale 1] [--endpoints barber,revenue] [--rounds 3]
                                     [--duration 10] [--connections 16] [--against DIR]

Restores bench/run.py's cached seeded cluster (or seeds it), pins it to CPU 1 and each
server to CPU 0 as bench/run.py does, and drives each endpoint with wrk (closed loop)
against the service and the reference in turn, `--rounds` times. Per run it reads
user + system time from /proc of the server, of the replica's postmaster and its
backends (the reads' database; exited backends count through the postmaster's
children's times) and of the primary, and prints each per request, in microseconds, with
the least of the rounds (the machine is shared: requests/s would say more about the
neighbours than about the servers). `--against DIR` runs a second service from another
checkout (e.g. `git archive REV | tar -x -C DIR`) with this checkout's interpreter.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import run  # noqa: E402

from app.db.seed import Scale  # noqa: E402
from tests.pgcluster import PgCluster  # noqa: E402


def _ticks(pid: int, children: bool) -> int:
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(f) for f in fields[11 : 15 if children else 13])
    return 0


def tree_ticks(pid: int | None) -> int:
    """A postmaster's time, its live children's and (reaped) its exited children's."""
    if pid is None:
        return 0
    total = _ticks(pid, children=True)
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            total += _ticks(int(child), children=True)
    return total


def measure(
    bench: run.Bench, cluster: PgCluster, server: run.Server, endpoint: str
) -> dict[str, float]:
    c, d = bench.args.connections, bench.args.duration
    bench.collect(bench.wrk(server, endpoint, c, bench.args.warmup), bench.args.warmup + 60)
    pids = server.worker_pids()
    nodes = (cluster.replicas[0].pid, cluster.primary.pid)
    before = [sum(_ticks(p, False) for p in pids), *(tree_ticks(n) for n in nodes)]
    stats = bench.collect(bench.wrk(server, endpoint, c, d), d + 60)
    after = [sum(_ticks(p, False) for p in pids), *(tree_ticks(n) for n in nodes)]
    requests = stats["requests"]
    per = 1e6 / os.sysconf("SC_CLK_TCK") / max(requests, 1)
    app, replica, primary = ((a - b) * per for a, b in zip(after, before, strict=True))
    return {
        "rps": requests / d,
        "p99_ms": stats["p99_ms"],
        "app": app,
        "replica": replica,
        "primary": primary,
        "total": app + replica + primary,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--endpoints", default="barber,revenue")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--against", type=Path, help="another checkout's service, too")
    args = parser.parse_args()
    run._raise_nofile()
    run.CACHE.mkdir(mode=0o755, exist_ok=True)
    cache = run.CACHE / run._cache_key(args.scale)
    work = Path(tempfile.mkdtemp(prefix="cost-", dir=run.CACHE))
    work.chmod(0o755)
    work.rmdir()
    out = Path(tempfile.mkdtemp(prefix="cost-logs-", dir=run.CACHE))
    procs = run.Processes()
    cluster = None
    try:
        if (cache / "meta.json").exists():
            cluster, meta = run.restore_cluster(cache, work)
        else:
            cluster, meta = run.seed_cluster(args.scale, work, cache)
        run.pin_postgres(cluster, "1")
        today = (dt.date.fromisoformat(meta["seeded_on"]) - dt.date(1970, 1, 1)).days
        bench = run.Bench(args, cluster, Scale.of(args.scale), today, out, "1")
        servers = [run.start_service(procs, cluster, 1, "0", out)]
        if args.against is not None:
            root = run.ROOT
            run.ROOT = args.against.resolve()
            try:
                other = run.start_service(procs, cluster, 1, "0", out)
            finally:
                run.ROOT = root
            other.name = f"service {args.against.name}"
            servers.append(other)
        servers.append(run.start_reference(procs, cluster, "0", out))
        best: dict[tuple[str, str], dict[str, float]] = {}
        for endpoint in args.endpoints.split(","):
            for i in range(args.rounds):
                for server in servers:
                    r = measure(bench, cluster, server, endpoint)
                    key = (endpoint, server.name)
                    if key not in best or r["total"] < best[key]["total"]:
                        best[key] = r
                    print(
                        f"{endpoint:8} {server.name:24} round {i + 1}: {r['rps']:7,.0f} req/s "
                        f"p99 {r['p99_ms']:6.1f} ms  us/request: app {r['app']:5.0f} "
                        f"replica {r['replica']:5.0f} primary {r['primary']:4.0f} "
                        f"total {r['total']:5.0f}",
                        flush=True,
                    )
        print("\nleast total of the rounds, microseconds of CPU per request:")
        print(f"{'endpoint':8} {'server':24} {'app':>6} {'replica':>8} {'primary':>8} {'total':>6}")
        for (endpoint, name), r in best.items():
            print(
                f"{endpoint:8} {name:24} {r['app']:6.0f} {r['replica']:8.0f} "
                f"{r['primary']:8.0f} {r['total']:6.0f}"
            )
    finally:
        procs.stop_all()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
