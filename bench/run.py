"""Load benchmark: the service against a minimal raw-ASGI reference, on a real primary + replica.

    uv run python bench/run.py [--scale 1] [--duration 20] [--workers 1,2] [--connections 64]
                               [--skip-seed-if-cached] [--profile] [--explain]

Starts a PostgreSQL primary and streaming replica, migrates and seeds them (or restores a
cached seeded copy), starts the servers pinned to CPU 0 with wrk and PostgreSQL on CPU 1,
drives wrk with the Lua scripts in bench/lua/ (scenario c's user reads: bench/loadgen.c),
and writes bench/RESULTS.md. Every process it starts is stopped again, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import loadgen  # noqa: E402

from app.db.seed import Scale  # noqa: E402
from tests.pgcluster import (  # noqa: E402
    SUPERUSER,
    PgBouncer,
    PgCluster,
    PgNode,
    find_pg_bin,
    free_port,
    start_cluster,
    start_pgbouncer,
)

LUA = ROOT / "bench" / "lua"
# Scenario c reports the requests sent in this many first seconds apart: 10k new
# connections open then.
STORM_SECONDS = 5
PINNED = "servers on CPU 0; wrk and PostgreSQL on CPU 1; a service with several workers unpinned"
CACHE = Path(tempfile.gettempdir()) / "bookedbarber-bench"
NOFILE = 65536
# The reference's idle keep-alive: the service's default KEEP_ALIVE_TIMEOUT.
KEEP_ALIVE = 75
SIZED_POOLS = {
    "POOL_SIZE": "30",
    "MAX_OVERFLOW": "0",
    "REPLICA_POOL_SIZE": "30",
    "REPLICA_MAX_OVERFLOW": "0",
}
# --pools: "defaults" sets no pool variable (what a deployment that keeps them gets);
# "tuned" the reference's budget, 30 per database; "seed" the seed's 20 + 30 / 10 + 20;
# "pgbouncer" the defaults through a PgBouncer in transaction mode in front of each
# database, as a fleet of instances shares them (PgBouncerPair); "pgbouncer-prepared"
# the same through --pgbouncer-binary (1.21 or later) keeping prepared statements.
PGBOUNCER = "pgbouncer"
PGBOUNCER_PREPARED = "pgbouncer-prepared"
PGBOUNCER_PROFILES = (PGBOUNCER, PGBOUNCER_PREPARED)
POOL_PROFILES: dict[str, dict[str, str]] = {
    "defaults": {},
    "tuned": SIZED_POOLS,
    "seed": {
        "POOL_SIZE": "20",
        "MAX_OVERFLOW": "30",
        "REPLICA_POOL_SIZE": "10",
        "REPLICA_MAX_OVERFLOW": "20",
    },
    PGBOUNCER: {"PGBOUNCER": "true"},
    PGBOUNCER_PREPARED: {"PGBOUNCER": "true", "PGBOUNCER_PREPARED_STATEMENTS": "true"},
}
POOL_VARIABLES = (
    *SIZED_POOLS,
    "POOL_CONNECTION_BUDGET",
    "PGBOUNCER",
    "PGBOUNCER_PREPARED_STATEMENTS",
)
# PgBouncer's max_prepared_statements for the pgbouncer-prepared profile.
PGBOUNCER_MAX_PREPARED = 200
# Server connections per PgBouncer pool: what the direct service's default pool holds
# (DEFAULT_POOL_CAP), so both profiles give PostgreSQL the same connections.
PGBOUNCER_POOL_SIZE = 30


def service_name(pools: str) -> str:
    return "service" if pools == "defaults" else f"service, {pools}"


ENDPOINTS = ("user", "barber", "revenue", "write")
ENDPOINT_NAMES = {
    "user": "GET /users/{id}?include=appointments,payments,organizations",
    "barber": "GET /barbers/{id}/appointments (a week)",
    "revenue": "GET /locations/{id}/revenue (a month)",
    "write": "POST /appointments",
    "reads": "mixed reads (1/3 each)",
    "writes": "POST /appointments",
    "all": "90% reads / 10% writes",
}
# Each wrk run books in its own far-future 30 days (a run books a few days' half hours of
# every barber at most), so runs never collide: 1,000 runs within the booking horizon.
_WRITE_WINDOW_DAYS = 30
_write_base = iter(range(0, 1000))
BENCH_HORIZON_DAYS = 33_000


def _days_now() -> int:
    return (dt.datetime.now(dt.UTC).date() - dt.date(1970, 1, 1)).days


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- processes ---------------------------------------------------------------------------


def _raise_nofile() -> None:
    """As many open files as allowed: 10k sockets need more than the usual 1024."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
    except (ValueError, OSError):  # no CAP_SYS_RESOURCE, e.g. in a container: up to the hard cap
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass
class Processes:
    """Everything this run started, stopped by PID (and its own session) on the way out."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(
        self, args: list[str], env: dict[str, str] | None = None, log_path: Path | None = None
    ) -> subprocess.Popen[bytes]:
        out = log_path.open("wb") if log_path else subprocess.DEVNULL
        proc = subprocess.Popen(
            args,
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_raise_nofile,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # the session holds uvicorn's workers too
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)


def _on_sigterm(*_: object) -> None:
    raise KeyboardInterrupt


# -- database ----------------------------------------------------------------------------


SEEDED_AS = "frozen"  # how seed_cluster leaves the data: a change here seeds anew


def _cache_key(scale: float) -> str:
    digest = hashlib.sha256(SEEDED_AS.encode())
    sources = [ROOT / "app/db/seed.py", ROOT / "app/db/models.py"]
    for path in [*sources, *sorted((ROOT / "alembic/versions").glob("*.py"))]:
        digest.update(path.read_bytes())
    digest.update(str(find_pg_bin()).encode())
    return f"scale-{scale:g}-{digest.hexdigest()[:12]}"


def _set_port(node: PgNode) -> None:
    with (node.datadir / "postgresql.conf").open("a") as conf:
        conf.write(f"\nport = {node.port}\nunix_socket_directories = '{node.datadir}'\n")


def restore_cluster(cache: Path, work: Path) -> tuple[PgCluster, dict[str, Any]]:
    """A copy of the cached, seeded cluster on fresh ports (the cache stays pristine)."""
    meta = json.loads((cache / "meta.json").read_text())
    subprocess.run(["cp", "-a", str(cache), str(work)], check=True)
    bindir = find_pg_bin()
    primary = PgNode("primary", work / "primary", free_port(), bindir, SUPERUSER, meta["password"])
    replica = PgNode(
        "replica1", work / "replica1", free_port(), bindir, SUPERUSER, meta["password"]
    )
    for node in (primary, replica):
        _set_port(node)
    auto = replica.datadir / "postgresql.auto.conf"
    auto.write_text(re.sub(r"port=\d+", f"port={primary.port}", auto.read_text()))
    cluster = PgCluster(primary, [replica], work, "bookedbarber", [primary, replica])
    primary.start(timeout=120)
    replica.start(timeout=120)
    cluster.wait_streaming(replica, timeout=60)
    return cluster, meta


def seed_cluster(scale: float, work: Path, cache: Path) -> tuple[PgCluster, dict[str, Any]]:
    cluster = start_cluster(replicas=1, base_dir=work)
    primary, replica = cluster.primary, cluster.replicas[0]
    env = {**os.environ, "DATABASE_URL": primary.url()}
    log(f"seeding scale {scale:g} (migrations, COPY, ANALYZE)")
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "app", "db", "seed", "--demo", "--scale", f"{scale:g}"],
        env=env,
        cwd=ROOT,
        check=True,
    )
    # Frozen, as rows this old are in a running database: freezing is WAL-logged, so the
    # replica's pages carry it too. Hint bits are not: a replica made before the seed
    # would set them on each page's first read, dirtying it, and its backends would write
    # those pages out within the measured reads of every run (a tenth of PostgreSQL's CPU
    # in the 10,000-connection user reads).
    log(f"seeded in {time.monotonic() - started:.0f}s; VACUUM (FREEZE, ANALYZE)")
    primary.psql("VACUUM (FREEZE, ANALYZE)", timeout=1800)
    primary.psql("CHECKPOINT", timeout=600)
    cluster.wait_replica_caught_up(replica, timeout=600)
    meta = {"password": primary.password, "seeded_on": dt.datetime.now(dt.UTC).date().isoformat()}
    # Keep a clean copy: later runs restore it in seconds instead of seeding again.
    replica.stop("fast")
    primary.stop("fast")
    staging = cache.with_suffix(".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    subprocess.run(["cp", "-a", str(work), str(staging)], check=True)
    (staging / "meta.json").write_text(json.dumps(meta))
    (staging / "meta.json").chmod(0o600)
    shutil.rmtree(cache, ignore_errors=True)
    staging.rename(cache)
    primary.start(timeout=120)
    replica.start(timeout=120)
    cluster.wait_streaming(replica, timeout=60)
    return cluster, meta


def pin_postgres(cluster: PgCluster, cpus: str) -> None:
    """Pin every server process; backends forked later inherit the postmaster's mask."""
    for node in (cluster.primary, *cluster.replicas):
        pid = node.pid
        if pid is None:
            continue
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        for p in [str(pid), *children]:
            subprocess.run(["taskset", "-a", "-p", "-c", cpus, p], capture_output=True, check=False)


# -- servers -----------------------------------------------------------------------------


def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as res:  # noqa: S310 - our http URLs
            return res.status, res.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            if check():
                return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    workers: int
    log_path: Path
    tails: bool = False  # bench/tails.py: GET /_tails answers its histograms

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> list[int]:
        """uvicorn serves in its own process with one worker, else in spawned children."""
        if self.workers == 1:
            return [self.proc.pid]
        pids = []
        for child in (
            Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        ):
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
                pids.append(int(child))
        return pids


def rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class PgBouncerPair:
    """A PgBouncer (transaction mode) in front of the primary and one in front of the replica.

    A deployment that pools for a fleet of instances pools every database they reach:
    each instance's replica connections are as many as its primary ones, so the replicas
    sit behind their own PgBouncer too. Started on first use, on the database's CPUs.
    """

    def __init__(
        self,
        cluster: PgCluster,
        work: Path,
        cpus: str | None,
        binary: str | None = None,
        max_prepared_statements: int = 0,
    ) -> None:
        self.cluster, self.work, self.cpus = cluster, work, cpus
        self.binary, self.max_prepared_statements = binary, max_prepared_statements
        self.bouncers: list[PgBouncer] = []

    def urls(self) -> tuple[str, str]:
        if not self.bouncers:
            for node in (self.cluster.primary, self.cluster.replicas[0]):
                bouncer = start_pgbouncer(
                    node,
                    self.work,
                    pool_size=PGBOUNCER_POOL_SIZE,
                    binary=self.binary,
                    max_prepared_statements=self.max_prepared_statements,
                )
                self.bouncers.append(bouncer)
                if self.cpus:
                    pid = str(bouncer.proc.pid)
                    subprocess.run(
                        ["taskset", "-a", "-p", "-c", self.cpus, pid],
                        capture_output=True,
                        check=False,
                    )
                log(f"PgBouncer (transaction mode) on port {bouncer.port} for {node.name}")
        primary, replica = self.bouncers
        return primary.url(), replica.url()

    def stop(self) -> None:
        for bouncer in reversed(self.bouncers):
            bouncer.stop()
        self.bouncers.clear()


def start_service(
    procs: Processes,
    cluster: PgCluster,
    workers: int,
    cpus: str | None,
    out: Path,
    pools: str = "defaults",
    tails: bool = False,
    bouncers: dict[str, PgBouncerPair] | None = None,
) -> Server:
    port = free_port()
    primary, replica = str(cluster.primary.url()), str(cluster.replicas[0].url())
    if pools in PGBOUNCER_PROFILES:
        if bouncers is None:
            raise ValueError(f"the {pools} profile needs its PgBouncers")
        primary, replica = bouncers[pools].urls()
    env = {
        **os.environ,
        "DATABASE_URL": primary,
        "REPLICA_URLS": replica,
        "LOG_LEVEL": "warning",
        # Keep-alive and header deadlines stay the service's defaults: a 10k connection
        # thinks up to 2 x 10 s between requests, inside KEEP_ALIVE_TIMEOUT's 75 s.
        # Each wrk run books its own year (lua_args' base); the reference has no horizon.
        "BOOKING_HORIZON_DAYS": str(BENCH_HORIZON_DAYS),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    # The pools as the profile says, whatever the environment holds: "tuned" is the
    # reference's budget (30 per database, waiting beyond that); with the seed's 10 + 20
    # overflow on the replica a sustained 64 concurrent reads keep opening and closing
    # overflow connections (a SCRAM handshake and a backend fork each).
    for name in POOL_VARIABLES:
        env.pop(name, None)
    env.update(POOL_PROFILES[pools])
    if tails and workers == 1:
        args = [sys.executable, str(ROOT / "bench" / "tails.py"), "--port", str(port)]
    else:
        args = [sys.executable, "-m", "app", "serve", "--workers", str(workers)]
        args += ["--no-access-log", "--port", str(port)]
    if cpus:
        args = ["taskset", "-c", cpus, *args]
    log_path = out / f"service-{workers}w-{port}.log"
    name = service_name(pools)
    server = Server(name, procs.start(args, env, log_path), port, workers, log_path)
    server.tails = tails and workers == 1
    wait_ready(server)

    def replica_in_rotation() -> bool:
        _, body = http_get(server.url + "/metrics")
        return re.search(rb"^database_replica_in_rotation\{[^}]*\} 1\.0$", body, re.M) is not None

    # A replica joins the rotation only after REPLICA_RECOVERY_SECONDS of good probes.
    wait_until("the replica to join the read rotation", replica_in_rotation, 60)
    return server


def start_reference(
    procs: Processes,
    cluster: PgCluster,
    cpus: str | None,
    out: Path,
    reset: bool = True,
    workers: int = 1,
) -> Server:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": cluster.primary.url(driver="postgresql"),
        "REPLICA_URL": cluster.replicas[0].url(driver="postgresql"),
    }
    args = [sys.executable, str(ROOT / "bench" / "reference.py"), "--port", str(port)]
    args += ["--keep-alive", str(KEEP_ALIVE), "--workers", str(workers)]
    args += [] if reset else ["--no-pool-reset"]
    if cpus:
        args = ["taskset", "-c", cpus, *args]
    log_path = out / f"reference-{port}.log"
    name = "reference" if reset else NO_RESET
    server = Server(name, procs.start(args, env, log_path), port, workers, log_path)
    wait_ready(server)
    return server


def wait_ready(server: Server) -> None:
    def live() -> bool:
        if server.proc.poll() is not None:
            tail = server.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n{tail}")
        return http_get(server.url + "/health/live", timeout=2)[0] == 200

    wait_until(f"{server.name} on port {server.port}", live, 90)


# -- sampling while the load runs ----------------------------------------------------------

_GAUGE = re.compile(
    rb'^database_connection_pool_(size|checked_out)\{[^}]*?\bpool="([\w-]+)"[^}]*\} ([\d.e+-]+)$',
    re.M,
)
_TIMEOUTS = re.compile(rb"^database_pool_timeouts_total\{[^}]*\} ([\d.e+-]+)$", re.M)


@dataclass
class Sample:
    pool_peak: dict[str, float] = field(default_factory=dict)
    pool_size: dict[str, float] = field(default_factory=dict)
    pool_timeouts: float | None = None
    rss_peak: dict[int, float] = field(default_factory=dict)
    scraped: bool = False
    cpu_seconds: float = 0.0  # the workers' user + system time over the run
    sessions: int | None = None  # backend connections opened on both databases


def merged(parts: list[Result]) -> Result:
    """One server's slices of an endpoint as one result: requests, time, statuses, bytes,
    errors, CPU and sessions summed; each latency percentile the slices' own, weighted by
    their requests (wrk's Lua gives percentiles, not the histogram to merge), the maximum
    the largest; pool and RSS peaks the highest."""
    first = parts[0]
    found = Result(
        first.scenario,
        first.server,
        first.workers,
        first.endpoint,
        first.connections,
        _merged_stats([p.stats for p in parts]),
        _merged_sample([p.sample for p in parts]),
    )
    found.tails = parts[-1].tails
    return found


def _merged_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    stats: dict[str, Any] = {"statuses": {}}
    for part in parts:
        for key, value in part.items():
            if key == "statuses":
                for status, n in value.items():
                    stats["statuses"][status] = stats["statuses"].get(status, 0) + n
            elif key == "max_ms":
                stats[key] = max(stats.get(key, 0.0), value)
            elif not key.endswith("_ms"):
                stats[key] = stats.get(key, 0) + value
    weights = [int(p["requests"]) for p in parts]
    for key in (k for k in parts[0] if k.endswith("_ms") and k != "max_ms"):
        weighted = sum(p[key] * w for p, w in zip(parts, weights, strict=True))
        stats[key] = weighted / (sum(weights) or 1)
    return stats


def _merged_sample(parts: list[Sample]) -> Sample:
    sample = Sample(
        pool_size=dict(parts[0].pool_size),
        scraped=any(p.scraped for p in parts),
        cpu_seconds=sum(p.cpu_seconds for p in parts),
    )
    for part in parts:
        for role, peak in part.pool_peak.items():
            sample.pool_peak[role] = max(sample.pool_peak.get(role, 0.0), peak)
        for pid, rss in part.rss_peak.items():
            sample.rss_peak[pid] = max(sample.rss_peak.get(pid, 0.0), rss)
        if part.pool_timeouts is not None:  # a counter: its last value is its highest
            sample.pool_timeouts = max(sample.pool_timeouts or 0.0, part.pool_timeouts)
        if part.sessions is not None:
            sample.sessions = (sample.sessions or 0) + part.sessions
    return sample


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (/proc/PID/stat), in seconds."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


# What each node logs during a run, kept with the run's logs (`keep_server_logs`): a
# statement the replica held (log_min_duration_statement), lock waits, a standby's
# replay waiting on its queries, autovacuum's work and checkpoints, with millisecond times.
DIAGNOSTIC_LOGGING: dict[str, str | int] = {
    "log_line_prefix": "%m [%p] %b ",
    "log_min_duration_statement": 250,
    "log_lock_waits": "on",
    "deadlock_timeout": "100ms",
    "log_recovery_conflict_waits": "on",
    "log_autovacuum_min_duration": 0,
    "log_checkpoints": "on",
}


def diagnostic_logging(cluster: PgCluster) -> None:
    for node in (cluster.primary, *cluster.replicas):
        node._append_conf(DIAGNOSTIC_LOGGING)
        node.psql("SELECT pg_reload_conf()")


def keep_server_logs(cluster: PgCluster, out: Path) -> None:
    for node in (cluster.primary, *cluster.replicas):
        with contextlib.suppress(OSError):
            shutil.copyfile(node.logfile, out / f"postgres-{node.name}.log")


@contextlib.contextmanager
def cpu_series(path: Path) -> Iterator[None]:
    """Each CPU's busy, system, steal and iowait shares per second (/proc/stat) to a TSV:
    whether a stall was the machine's (steal, a full CPU) or one process's."""
    stop = threading.Event()

    def read() -> dict[str, list[int]]:
        lines = Path("/proc/stat").read_text().splitlines()
        return {
            f[0]: [int(v) for v in f[1:9]]
            for f in (line.split() for line in lines)
            if f[0].startswith("cpu") and f[0] != "cpu"
        }

    def loop() -> None:
        with path.open("w") as tsv:
            tsv.write("t_s\tcpu\tbusy_pct\tsystem_pct\tsteal_pct\tiowait_pct\n")
            start, before = time.monotonic(), read()
            while not stop.wait(1.0):
                now = read()
                for cpu, fields in now.items():
                    d = [a - b for a, b in zip(fields, before.get(cpu, fields), strict=True)]
                    total = sum(d) or 1
                    _user, _nice, system, idle, iowait, _irq, _soft, steal = d
                    busy = total - idle - iowait
                    tsv.write(
                        f"{time.monotonic() - start:.1f}\t{cpu}\t{100 * busy / total:.0f}"
                        f"\t{100 * system / total:.0f}\t{100 * steal / total:.0f}"
                        f"\t{100 * iowait / total:.0f}\n"
                    )
                tsv.flush()
                before = now

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def sessions_opened(cluster: PgCluster) -> int:
    """Sessions ever opened on the primary and the replica (pg_stat_database, PG 14+)."""
    total = 0
    for node in (cluster.primary, *cluster.replicas):
        out = node.psql("SELECT coalesce(sum(sessions), 0) FROM pg_stat_database")
        total += int(out.strip() or 0)
    return total


@contextlib.contextmanager
def sampling(server: Server, metrics: bool, cluster: PgCluster | None = None) -> Iterator[Sample]:
    sample, stop = Sample(), threading.Event()
    pids = server.worker_pids()
    cpu_before = cpu_seconds(pids)
    sessions_before = sessions_opened(cluster) if cluster is not None else None

    def scrape() -> None:
        if metrics:
            with contextlib.suppress(OSError):
                status, body = http_get(server.url + "/metrics", timeout=5)
                if status == 200:
                    for name, role, value in _GAUGE.findall(body):
                        r, v = role.decode(), float(value)
                        if name == b"size":
                            sample.pool_size[r] = v
                        else:
                            sample.pool_peak[r] = max(sample.pool_peak.get(r, 0.0), v)
                    timeouts = [float(v) for v in _TIMEOUTS.findall(body)]
                    sample.pool_timeouts = sum(timeouts)
                    sample.scraped = True
        with contextlib.suppress(OSError):
            for pid in server.worker_pids():
                sample.rss_peak[pid] = max(sample.rss_peak.get(pid, 0.0), rss_mb(pid))

    def loop() -> None:
        while not stop.wait(1.0):
            scrape()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield sample
    finally:
        stop.set()
        thread.join()
        scrape()
        sample.cpu_seconds = cpu_seconds(pids) - cpu_before
        if cluster is not None and sessions_before is not None:
            time.sleep(1.0)  # backends report their session counts within a second
            with contextlib.suppress(Exception):
                sample.sessions = sessions_opened(cluster) - sessions_before


# -- load --------------------------------------------------------------------------------


@dataclass
class Result:
    scenario: str
    server: str
    workers: int
    endpoint: str
    connections: int
    stats: dict[str, Any]
    sample: Sample
    target_rps: float | None = None
    tails: dict[str, Any] = field(default_factory=dict)
    client: str = "wrk"
    client_cpu_ms: float | None = None  # the load client's CPU per response, warm-up included

    @property
    def rps(self) -> float:
        return float(self.stats["requests"]) / (float(self.stats["duration_us"]) / 1e6)

    def count(self, predicate: Callable[[int], bool]) -> int:
        return sum(n for s, n in self.stats["statuses"].items() if predicate(int(s)))

    @property
    def cpu_ms(self) -> float:
        """The server's CPU time per request served."""
        return 1000 * self.sample.cpu_seconds / max(1, int(self.stats["requests"]))

    @property
    def bytes_per_response(self) -> str:
        """Bytes wrk read per response, status line and headers included."""
        if "bytes" not in self.stats or not self.stats["requests"]:
            return "?"
        return f"{int(self.stats['bytes']) / int(self.stats['requests']):,.0f}"

    @property
    def conflicts(self) -> int:
        return self.count(lambda s: s == 409)

    @property
    def non_2xx(self) -> int:
        return self.count(lambda s: not 200 <= s < 300 and s != 409)

    @property
    def socket_errors(self) -> int:
        return sum(int(self.stats[k]) for k in ("connect", "read", "write", "timeout"))


@dataclass
class Bench:
    args: argparse.Namespace
    cluster: PgCluster
    size: Scale
    today: int
    out: Path
    wrk_cpus: str | None
    storms: list[str] = field(default_factory=list)

    def lua_args(self, extra: dict[str, Any]) -> list[str]:
        users = self.size.barbers + self.size.locations + self.size.clients
        base = {
            "seed": self.args.seed,
            "users": users,
            "clients_from": self.size.barbers + self.size.locations + 1,
            "barbers": self.size.barbers,
            "locations": self.size.locations,
            "today": self.today,
            # A month ahead (past the demo's bookings), _WRITE_WINDOW_DAYS further per wrk
            # run; the service runs with BOOKING_HORIZON_DAYS to match.
            "base": (max(self.today, _days_now()) + 32 + next(_write_base) * _WRITE_WINDOW_DAYS)
            * 86_400,
        }
        return [f"{k}={v}" for k, v in {**base, **extra}.items()]

    def wrk(
        self,
        server: Server,
        script: str,
        connections: int,
        duration: int,
        threads: int = 1,
        extra: dict[str, Any] | None = None,
    ) -> subprocess.Popen[str]:
        args = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s"]
        args += ["--timeout", "10s", "-s", str(LUA / f"{script}.lua"), server.url, "--"]
        args += self.lua_args(extra or {})
        return self.client(args)

    def client(self, args: list[str]) -> subprocess.Popen[str]:
        """A load client, pinned where the clients run, its output read by `collect`."""
        if self.wrk_cpus:
            args = ["taskset", "-c", self.wrk_cpus, *args]
        return subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=_raise_nofile,
        )

    @staticmethod
    def collect(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        for line in output.splitlines():
            if line.startswith("BENCH_JSON "):
                stats: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
                return stats
        raise RuntimeError(f"wrk printed no summary (rc={proc.returncode}):\n{output[-2000:]}")

    def loadgen(self, load: loadgen.Load) -> subprocess.Popen[str]:
        """bench/loadgen.c for scenario c's user reads, where wrk would run."""
        return self.client(load.args(loadgen.build()))

    def closed_loop(
        self,
        scenario: str,
        server: Server,
        endpoint: str,
        duration: int | None = None,
        warm: bool = True,
    ) -> Result:
        c, d = self.args.connections, duration or self.args.duration
        if warm:
            self.collect(self.wrk(server, endpoint, c, self.args.warmup), self.args.warmup + 60)
        metrics = server.name.startswith("service")
        if server.tails and warm:
            http_get(server.url + "/_tails/reset")
        with sampling(server, metrics, self.cluster) as sample:
            stats = self.collect(self.wrk(server, endpoint, c, d), d + 60)
        result = Result(scenario, server.name, server.workers, endpoint, c, stats, sample)
        if server.tails:
            result.tails = json.loads(http_get(server.url + "/_tails")[1])
        log(
            f"  {server.name} {server.workers}w {endpoint}: {result.rps:,.0f} req/s, "
            f"p95 {stats['p95_ms']:.1f} ms, p99 {stats['p99_ms']:.1f} ms, "
            f"CPU {result.cpu_ms:.2f} ms/request, sessions opened {sample.sessions}, "
            f"statuses {stats['statuses']}"
        )
        return result

    def side_by_side(self, scenario: str, servers: list[Server], endpoint: str) -> list[Result]:
        """Each server's closed loop on one endpoint, for ratios between them.

        With --slices N the measured --duration is cut into N slices, and the servers take
        turns slice by slice (each one first in as many turns as the others), so that a
        neighbour's load on a shared machine falls on all of them alike instead of on
        whichever window it met. A server's slices make its one result (`merged`).
        """
        slices = self.args.slices
        if slices <= 1 or len(servers) == 1:
            return [self.closed_loop(scenario, s, endpoint) for s in servers]
        length = max(1, self.args.duration // slices)
        parts: dict[str, list[Result]] = {s.name: [] for s in servers}
        for i in range(slices):
            turn = servers[i % len(servers) :] + servers[: i % len(servers)]
            for server in turn:
                part = self.closed_loop(scenario, server, endpoint, length, warm=not i)
                parts[server.name].append(part)
        found = [merged(parts[s.name]) for s in servers]
        for r in found:
            log(
                f"  {r.server} {r.workers}w {endpoint}, {slices} slices: {r.rps:,.0f} req/s, "
                f"p99 {r.stats['p99_ms']:.1f} ms, CPU {r.cpu_ms:.2f} ms/request"
            )
        return found

    def many_connections(self, server: Server) -> list[Result]:
        """10k mostly idle keep-alive connections, each sending at a slow random rate.

        The readers offer --c10k-rate reads per second per worker process (the service's
        or the reference's); with --c10k-writers some connections book instead, as a
        second wrk process so each
        gets its own percentiles. By default (--c10k-mode steady) one wrk process per part
        runs the warm-up and the measured window on the same 10k connections; bench/lua/
        timed.lua times the requests and keeps the measured ones, and those sent in the
        first seconds (the 10k connections opening at once) go to `self.storms`. With
        --c10k-mode separate the warm-up is its own wrk process, as before: the measured
        run then opens 10k new connections while the warm-up's close. With --c10k-client
        loadgen (the default) the user reads run on bench/loadgen.c instead of wrk, with the
        same connections, pacing, windows and JSON, at a tenth of wrk's CPU per response.
        """
        total, writers = self.args.c10k_connections, self.args.c10k_writers
        interval = total / (self.args.c10k_rate * server.workers)
        parts = [(self.args.c10k_mix, total - writers)] + ([("writes", writers)] if writers else [])
        warm, d = self.args.c10k_warmup, self.args.c10k_duration
        steady = self.args.c10k_mode == "steady"
        tag = f"{server.name}-{server.workers}w-{self.args.c10k_mode}"

        def client_of(mix: str) -> str:
            return "loadgen" if self.args.c10k_client == "loadgen" and mix == "user" else "wrk"

        def launch(duration: int, timed: bool) -> list[subprocess.Popen[str]]:
            return [
                self.loadgen(
                    loadgen.Load(
                        server.port,
                        conns,
                        conns / interval,
                        warmup=warm if steady and timed else 0,
                        duration=d if timed else duration,
                        storm=min(STORM_SECONDS, warm if steady else d),
                        ids=self.size.barbers + self.size.locations + self.size.clients,
                        seed=self.args.seed,
                        series=self.out / f"c10k-{tag}-{mix}.tsv" if timed else None,
                    )
                )
                if client_of(mix) == "loadgen"
                else self.wrk(
                    server,
                    "mixed",
                    conns,
                    duration,
                    threads=self.args.c10k_threads,
                    extra={
                        "mix": mix,
                        "interval": interval * 1000,
                        "per_thread": conns // self.args.c10k_threads,
                    }
                    | (
                        {
                            "timed": 1,
                            "warm": warm if steady else 0,
                            "storm": min(STORM_SECONDS, warm if steady else d),
                            "series": self.out / f"c10k-{tag}-{mix}.tsv",
                        }
                        if timed
                        else {}
                    ),
                )
                for mix, conns in parts
            ]

        # wrk's own CPU (children's rusage once each is waited for): at 10k connections
        # it scans every pending delay timer of a thread on each event, on the CPU it
        # shares with PostgreSQL.
        client = resource.getrusage(resource.RUSAGE_CHILDREN)
        with cpu_series(self.out / f"c10k-{tag}-cpus.tsv"):
            if steady:
                procs = launch(warm + d, True)
                time.sleep(warm)
            else:
                for proc in launch(warm, False):
                    self.collect(proc, warm + 120)
                procs = launch(d, True)
            if server.tails:
                # Asked under load in steady mode: behind up to a second of queued requests.
                http_get(server.url + "/_tails/reset", timeout=60)
            with sampling(server, server.name.startswith("service"), self.cluster) as sample:
                stats = [self.collect(proc, d + 120) for proc in procs]
        tails = json.loads(http_get(server.url + "/_tails")[1]) if server.tails else {}
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        client_s = after.ru_utime + after.ru_stime - client.ru_utime - client.ru_stime
        wrk_parts = [
            st for (mix, _), st in zip(parts, stats, strict=True) if client_of(mix) == "wrk"
        ]
        wrk_s = client_s - sum(float(st.get("cpu_s", 0)) for st in stats)
        wrk_responses = sum(sum(st["statuses"].values()) for st in wrk_parts)
        results = []
        for (mix, conns), st in zip(parts, stats, strict=True):
            r = Result(
                f"c: {total:,} connections",
                server.name,
                server.workers,
                mix,
                conns,
                st,
                sample,
                target_rps=conns / interval,
                tails=tails,
                client=client_of(mix),
            )
            if r.client == "loadgen":
                r.client_cpu_ms = float(st["cpu_ms_per_response_all"])
                (self.out / f"c10k-{tag}-{mix}.json").write_text(json.dumps(st, indent=1))
            elif wrk_parts:  # wrk's processes together: children's rusage, less loadgen's
                r.client_cpu_ms = 1000 * wrk_s / max(1, wrk_responses)
            log(
                f"  {server.name} {server.workers}w {total:,} conns/{mix}: {r.rps:,.0f} req/s "
                f"(offered ~{r.target_rps:,.0f}), p95 {st['p95_ms']:.1f} ms, "
                f"p99 {st['p99_ms']:.1f} ms, statuses {st['statuses']}, "
                f"socket errors {r.socket_errors}, unpaired {st.get('unpaired', '-')}, "
                f"server CPU {r.cpu_ms:.2f} ms/request, {r.client} CPU "
                f"{r.client_cpu_ms or 0:.3f} ms/response (warm-up included)" + _loadgen_line(st)
            )
            self.storms.append(_storm_line(server, mix, st, self.args.c10k_mode))
            log("  " + self.storms[-1])
            results.append(r)
        return results


def _loadgen_line(st: dict[str, Any]) -> str:
    """loadgen's extras: its CPU in the measured window, latency from the scheduled send."""
    if "scheduled" not in st:
        return ""
    s, lag = st["scheduled"], st["send_lag"]
    return (
        f", measured window {float(st['cpu_ms_per_response']):.3f} ms/response; socket errors "
        f"connect {st['connect']}, read {st['read']}, write {st['write']}, timeout "
        f"{st['timeout']}; from the "
        f"scheduled send p99 {s['p99_ms']:.1f} ms, max {s['max_ms']:.0f} ms (send lag p99 "
        f"{lag['p99_ms']:.2f} ms), idle closes {st['idle_closed']}, skipped {st['skipped']}"
    )


def _storm_line(server: Server, mix: str, st: dict[str, Any], mode: str) -> str:
    """The requests sent in the first seconds: while 10k connections open at once."""
    s = st["storm"]
    when = "of the warm-up" if mode == "steady" else "of the measured run"
    return (
        f"{server.name} {server.workers}w {mix}: the first {s['duration_us'] / 1e6:g} s "
        f"{when}: {s['requests']:,} requests, p50 {s['p50_ms']:.1f} ms, p99 "
        f"{s['p99_ms']:.1f} ms, max {s['max_ms']:.0f} ms"
    )


# -- checks, profile, explain ------------------------------------------------------------


def compare_shapes(service: Server, reference: Server, size: Scale, today: int) -> list[str]:
    """The reference must answer the same JSON as the service, or the comparison is moot."""
    day = dt.date(1970, 1, 1) + dt.timedelta(days=today)
    week = f"start={day}&end={day + dt.timedelta(days=6)}"
    past = day - dt.timedelta(days=120)
    month_start = past.replace(day=1)
    month_end = (month_start + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
    client = size.barbers + size.locations + 7
    paths = [
        f"/api/v1/users/{client}?include=appointments,payments,organizations",
        "/api/v1/users/3?include=appointments,payments,organizations",
        f"/api/v1/barbers/5/appointments?{week}",
        f"/api/v1/barbers/5/appointments?start={past}&end={past + dt.timedelta(days=13)}"
        "&status=completed&status=cancelled",
        f"/api/v1/locations/3/revenue?start={month_start}&end={month_end}",
    ]
    problems = []
    for path in paths:
        a, b = http_get(service.url + path), http_get(reference.url + path)
        if a[0] != 200 or b[0] != 200:
            problems.append(f"{path}: status {a[0]} vs {b[0]}")
        elif json.loads(a[1]) != json.loads(b[1]):
            problems.append(
                f"{path}: bodies differ\n  service:   {a[1][:300]!r}\n  reference: {b[1][:300]!r}"
            )
    return problems


def profile(bench: Bench, server: Server, out: Path, seconds: int = 15) -> str:
    """py-spy on the (single) worker while the mixed load runs; top frames by own time."""
    raw = out / "profile.txt"
    pid = server.worker_pids()[0]
    load = bench.wrk(
        server, "mixed", bench.args.connections, seconds + 8, extra={"mix": "all", "interval": 0}
    )
    time.sleep(3)
    spy = subprocess.run(
        [
            "uv",
            "run",
            "--with",
            "py-spy",
            "py-spy",
            "record",
            "--format",
            "raw",
            "--nonblocking",
            "-r",
            "200",
            "-d",
            str(seconds),
            "-o",
            str(raw),
            "--pid",
            str(pid),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    stats = bench.collect(load, seconds + 60)
    if spy.returncode != 0 or not raw.exists():
        return f"py-spy failed (rc={spy.returncode}): {spy.stderr.strip()[-500:]}"
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():  # a frame name with a line break in it
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f]
        total += n
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in {_short(f) for f in frames}:
            inclusive[f] = inclusive.get(f, 0) + n
    own_short: dict[str, int] = {}
    for f, n in own.items():
        own_short[_short(f)] = own_short.get(_short(f), 0) + n
    rps = stats["requests"] / (stats["duration_us"] / 1e6)
    lines = [
        f"{total} samples at 200 Hz of worker {pid}, mixed load at {rps:,.0f} req/s",
        "",
        "Top 10 by own time:",
        "",
    ]
    lines += [f"- {100 * n / total:5.1f}% {f}" for f, n in _top(own_short, 10)]
    lines += ["", "Top 25 by inclusive time (a frame and everything it called):", ""]
    lines += [f"- {100 * n / total:5.1f}% {f}" for f, n in _top(inclusive, 25)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    """'func (path/to/site-packages/pkg/mod.py:123)' -> 'func (pkg/mod.py)'."""
    m = re.match(r"^(.*) \((.*?)(?::\d+)?\)$", frame)
    if not m:
        return frame
    path = m[2]
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{m[1]} ({path})"


def _top(counts: dict[str, int], n: int) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda kv: -kv[1])[:n]


def explain(cluster: PgCluster, size: Scale, today: int) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of exactly the statements the service sends, on the replica.

    The three hot reads' statements (app/queries/reads.py).
    """
    import asyncio

    import asyncpg

    from app.queries import reads

    day = dt.date(1970, 1, 1) + dt.timedelta(days=today)
    month_start = (day - dt.timedelta(days=60)).replace(day=1)
    month_end = (month_start + dt.timedelta(days=32)).replace(day=1)
    client = size.barbers + size.locations + 1234
    since = dt.datetime.combine(month_start, dt.time(), dt.UTC)
    until = dt.datetime.combine(month_end, dt.time(), dt.UTC)
    relations = frozenset({"appointments", "payments", "organizations"})
    calls: list[tuple[str, str, tuple[Any, ...]]] = [
        (
            "GET /users/{id}?include=appointments,payments,organizations",
            reads.user_statement(relations).postgresql,
            (client,),
        ),
        (
            "GET /barbers/{id}/appointments (a week)",
            reads.SCHEDULE.postgresql,
            (17, day, day + dt.timedelta(days=6), "confirmed,in_progress"),
        ),
        (
            "GET /locations/{id}/revenue (a month)",
            reads.REVENUE.postgresql,
            (7, since, until),
        ),
    ]

    async def run() -> list[tuple[str, str, list[str]]]:
        conn = await asyncpg.connect(cluster.replicas[0].url(driver="postgresql"))
        try:
            return [
                (
                    name,
                    statement,
                    [
                        r[0]
                        for r in await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + statement, *args)
                    ],
                )
                for name, statement, args in calls
            ]
        finally:
            await conn.close()

    plans = asyncio.run(run())
    lines = []
    for name, statement, plan in plans:
        flat = " ".join(statement.split())
        scans = [re.sub(r"\s+\(cost.*", "", p.strip(" ->")) for p in plan if "Scan" in p]
        took = next((p for p in plan if p.startswith("Execution Time")), "?")
        lines.append(f"### {name}\n\n`{flat[:400]}`\n\n- scans: {'; '.join(scans)}\n- {took}\n")
        lines.append("```\n" + "\n".join(plan) + "\n```\n")
    return "\n".join(lines)


# -- report ------------------------------------------------------------------------------


def machine() -> str:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = subprocess.run(["free", "-g"], capture_output=True, text=True, check=False).stdout
    total = next((ln.split()[1] for ln in mem.splitlines() if ln.startswith("Mem:")), "?")
    pg = subprocess.run(
        [str(find_pg_bin() / "postgres"), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} CPUs (`nproc`), {cpu}, {total} GB RAM (`free -g`), "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}, {pg}; "
        f"load average at start {load[0]:.2f}"
    )


NO_RESET = "reference, no reset"


def _ms(v: float) -> str:
    return f"{v:.1f}" if v < 100 else f"{v:,.0f}"


def _pool(r: Result) -> str:
    s = r.sample
    if not r.server.startswith("service"):
        return "n/a"
    if not s.scraped:
        return "n/a"
    parts = [
        f"{role} {s.pool_peak.get(role, 0):.0f}/{s.pool_size.get(role, 0):.0f}"
        for role in sorted(s.pool_size)
    ]
    return ", ".join(parts) or "n/a"


def _rss(r: Result) -> str:
    return " / ".join(f"{v:.0f}" for v in r.sample.rss_peak.values()) or "?"


def _client(r: Result) -> str:
    return r.client + ("" if r.client_cpu_ms is None else f" ({r.client_cpu_ms:.3f})")


def table(results: list[Result]) -> str:
    head = (
        "| scenario | server | workers | endpoint | conns | req/s | p50 ms | p90 ms | p95 ms "
        "| p99 ms | p99.9 ms | max ms | CPU ms/req | bytes/resp | sessions opened | non-2xx "
        "| 409 | socket errors | pool peak checked-out/size | RSS MB per worker "
        "| client (CPU ms/resp) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for r in results:
        s = r.stats
        rate = f"{r.rps:,.0f}" + (f" (sent at ~{r.target_rps:,.0f})" if r.target_rps else "")
        rows.append(
            f"| {r.scenario} | {r.server} | {r.workers} | {ENDPOINT_NAMES[r.endpoint]} "
            f"| {r.connections:,} | {rate} | {_ms(s['p50_ms'])} | {_ms(s.get('p90_ms', 0))} "
            f"| {_ms(s['p95_ms'])} | {_ms(s['p99_ms'])} | {_ms(s.get('p999_ms', 0))} "
            f"| {_ms(s['max_ms'])} | {r.cpu_ms:.2f} | {r.bytes_per_response} "
            f"| {'?' if r.sample.sessions is None else r.sample.sessions} "
            f"| {r.non_2xx} | {r.conflicts} | {r.socket_errors} "
            f"| {_pool(r)} | {_rss(r)} | {_client(r)} |"
        )
    return head + "\n".join(rows) + "\n"


def tails_table(results: list[Result]) -> str:
    """Where the milliseconds of slow requests went (bench/tails.py), per run."""
    rows = [
        "| server | endpoint | wrk p99 ms | measure | count | p50 ms | p90 ms | p99 ms "
        "| p99.9 ms | max ms | total s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    walked: list[str] = []
    for r in results:
        for i, sample in enumerate(r.tails.get("heap", []), 1):
            kinds = ", ".join(f"{k} {n:,}" for k, n in list(sample["types"].items())[:12])
            walked.append(
                f"- {r.server} {r.endpoint}, full collection {i}: {sample['objects']:,} objects "
                f"walked ({sample['frozen']:,} frozen): {kinds}"
            )
        for measure, h in r.tails.items():
            if measure == "heap":
                continue
            rows.append(
                f"| {r.server} | {r.endpoint} | {_ms(r.stats['p99_ms'])} | {measure} "
                f"| {h['count']:,} | {h['p50']:.2f} | {h['p90']:.2f} | {h['p99']:.2f} "
                f"| {h['p99.9']:.2f} | {h['max']:.2f} | {h['total_ms'] / 1000:.2f} |"
            )
    return "\n".join([*rows, "", *walked]) + "\n"


def pgbouncer_targets(results: list[Result]) -> list[str]:
    """The service through PgBouncer against the same service connected directly."""
    lines: list[str] = []
    one_worker = {(r.server, r.endpoint): r for r in results if r.scenario.startswith("a")}
    pairs = [(service_name(p), e) for p in PGBOUNCER_PROFILES for e in ENDPOINTS]
    for pooled_name, endpoint in pairs:
        pooled, direct = (
            one_worker.get((pooled_name, endpoint)),
            one_worker.get(("service", endpoint)),
        )
        if pooled is None or direct is None:
            continue
        ratio = pooled.rps / direct.rps if direct.rps else 0.0
        lines.append(
            f"| {pooled_name}, {ENDPOINT_NAMES[endpoint]}: ≥ 80% of the service connected "
            f"directly | {pooled.rps:,.0f} vs {direct.rps:,.0f} = {100 * ratio:.0f}% "
            f"(p99 {_ms(pooled.stats['p99_ms'])} vs {_ms(direct.stats['p99_ms'])} ms) "
            f"| {'PASS' if ratio >= 0.8 else 'FAIL'} |"
        )
    return lines


# Endpoints held to the reference itself: (share of its req/s, p99 as a multiple of its
# p99); the others to 80 % and 2x.
AT_REFERENCE = {"barber": (1.0, 1.0), "revenue": (1.0, 1.0)}


def targets(results: list[Result]) -> str:
    def find(scenario: str, server: str, endpoint: str) -> Result | None:
        return next(
            (
                r
                for r in results
                if r.scenario.startswith(scenario) and r.server == server and r.endpoint == endpoint
            ),
            None,
        )

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    lines = ["| target | measured | verdict |", "|---|---|---|"]
    # Through PgBouncer the yardstick is the same service connected directly (below).
    pooled = {service_name(p) for p in PGBOUNCER_PROFILES}
    services = sorted(
        {
            r.server
            for r in results
            if r.server.startswith("service") and r.scenario[0] == "a" and r.server not in pooled
        }
    )
    for name in services:
        for endpoint in ("user", "barber", "revenue", "write"):
            svc, ref = find("a", name, endpoint), find("a", "reference", endpoint)
            if not (svc and ref):
                continue
            ratio = svc.rps / ref.rps if ref.rps else 0.0
            floor, p99_factor = AT_REFERENCE.get(endpoint, (0.8, 2.0))
            lines.append(
                f"| {name}, {ENDPOINT_NAMES[endpoint]}: ≥ {100 * floor:.0f}% of the reference's "
                f"req/s | {svc.rps:,.0f} vs {ref.rps:,.0f} = {100 * ratio:.0f}% "
                f"| {verdict(ratio >= floor)} |"
            )
            if endpoint != "write":
                mine, theirs = svc.stats["p99_ms"], ref.stats["p99_ms"]
                lines.append(
                    f"| {name}, {ENDPOINT_NAMES[endpoint]}: p99 ≤ {p99_factor:g} x the "
                    f"reference's | {_ms(mine)} vs {_ms(theirs)} ms "
                    f"| {verdict(mine <= p99_factor * theirs)} |"
                )
    lines += pgbouncer_targets(results)
    for endpoint in ("user", "barber", "revenue", "write"):
        svc, strict = find("a", "service", endpoint), find("a", NO_RESET, endpoint)
        if svc and strict:
            ratio = svc.rps / strict.rps if strict.rps else 0.0
            lines.append(
                f"| {ENDPOINT_NAMES[endpoint]}: vs the {NO_RESET} (for info) "
                f"| {svc.rps:,.0f} vs {strict.rps:,.0f} req/s = {100 * ratio:.0f}% | - |"
            )
    c10k = [r for r in results if r.scenario.startswith("c") and r.server.startswith("service")]
    for r in c10k:
        p99 = r.stats["p99_ms"]
        what = f"{r.workers} worker{'s' if r.workers > 1 else ''}, {ENDPOINT_NAMES[r.endpoint]}"
        offered = r.target_rps or 0.0
        lines.append(
            f"| {r.connections:,} connections, {what} offered ~{offered:,.0f}/s: served, "
            f"p99 < 100 ms | {r.rps:,.0f} req/s, p99 {_ms(p99)} ms "
            f"| {verdict(p99 < 100 and r.rps >= 0.95 * offered)} |"
        )
        errors = r.non_2xx + r.socket_errors
        lines.append(
            f"| {r.connections:,} connections, {what}: zero errors | {r.non_2xx} non-2xx, "
            f"{r.conflicts} 409, {r.socket_errors} socket errors "
            f"| {verdict(errors == 0 and r.conflicts == 0)} |"
        )
    if c10k:
        rss = max(c10k[0].sample.rss_peak.values(), default=0.0)
        lines.append(
            f"| 10k connections: RSS per worker < 250 MB | peak {rss:.0f} MB "
            f"| {verdict(0 < rss < 250)} |"
        )
    timeouts = [r.sample.pool_timeouts for r in results if r.sample.pool_timeouts is not None]
    if timeouts:
        lines.append(
            f"| no pool checkout timeouts | {max(timeouts):.0f} "
            f"(database_pool_timeouts_total) | {verdict(max(timeouts) == 0)} |"
        )
    return "\n".join(lines) + "\n"


# -- main --------------------------------------------------------------------------------


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    log("installing wrk with apt-get")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--duration", type=int, default=20, help="measured seconds per closed-loop run")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument(
        "--slices",
        type=int,
        default=1,
        help="cut each measured window of scenario a into this many slices, the service, "
        "the reference and the PgBouncer profiles taking turns slice by slice",
    )
    p.add_argument("--workers", default="1,2", help="service worker counts; 1 runs scenario a")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--endpoints", default=",".join(ENDPOINTS))
    p.add_argument("--c10k-connections", type=int, default=10_000)
    p.add_argument(
        "--c10k-rate", type=float, default=1000, help="reads/s offered per service worker"
    )
    p.add_argument(
        "--c10k-mix",
        default="user",
        choices=["user", "reads", "all"],
        help="what the readers ask: the user read, the three hot reads, or 10%% bookings too",
    )
    p.add_argument("--c10k-writers", type=int, default=0, help="connections that book instead")
    p.add_argument(
        "--c10k-client",
        choices=["loadgen", "wrk"],
        default="loadgen",
        help="the client of scenario c's user reads: bench/loadgen.c (open loop, epoll and a "
        "timer heap, compiled on first use) or wrk with bench/lua/timed.lua; other mixes and "
        "the writers always run wrk",
    )
    p.add_argument(
        "--c10k-threads",
        type=int,
        default=8,
        help="wrk threads: wrk scans every pending delay timer of a thread on each event, "
        "so 10k thinking connections on few threads make the client the bottleneck",
    )
    p.add_argument(
        "--c10k-mode",
        choices=["steady", "separate"],
        default="steady",
        help="steady: warm-up and measurement on the same connections (one wrk process, "
        "requests timed in Lua); separate: the measured run opens 10k new connections "
        "while the warm-up's close",
    )
    p.add_argument("--c10k-duration", type=int, default=30)
    p.add_argument("--c10k-warmup", type=int, default=15)
    p.add_argument("--c10k-workers", default="1,2", help="service worker counts for scenario c")
    p.add_argument(
        "--c10k-reference",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the reference through scenario c too, with each --c10k-workers count",
    )
    p.add_argument(
        "--pools",
        default="defaults,tuned",
        help="pool settings the 1-worker service runs with, in turn: "
        + ", ".join(POOL_PROFILES)
        + " (several workers and the 10k scenario use the first, connected directly; "
        "pgbouncer: the defaults through a PgBouncer in transaction mode the bench starts "
        "in front of the primary and one in front of the replica)",
    )
    p.add_argument(
        "--tails",
        action="store_true",
        help="run the 1-worker service under bench/tails.py and report where its tail goes",
    )
    p.add_argument(
        "--pgbouncer-binary",
        help="the PgBouncer (1.21 or later) the pgbouncer-prepared profile runs with "
        "max_prepared_statements; the machine's by default",
    )
    p.add_argument("--skip-c10k", action="store_true")
    p.add_argument("--only-c10k", action="store_true", help="scenario c alone (no a, no b)")
    p.add_argument("--skip-seed-if-cached", action="store_true")
    p.add_argument("--no-pin", action="store_true", help="let the scheduler place everything")
    p.add_argument("--profile", action="store_true", help="py-spy the 1-worker service")
    p.add_argument("--explain", action="store_true", help="EXPLAIN the hot reads on the replica")
    p.add_argument(
        "--strict-reference",
        action="store_true",
        help="also run the reference without asyncpg's per-release reset statement",
    )
    p.add_argument("--seed", type=int, default=1, help="wrk's random seed")
    p.add_argument("--output", type=Path, default=ROOT / "bench" / "RESULTS.md")
    return p.parse_args()


def _scenario_a(
    bench: Bench,
    procs: Processes,
    endpoints: list[str],
    server_cpus: str | None,
    results: list[Result],
    extras: list[str],
) -> None:
    """One worker each: the service with defaults, the reference and PgBouncer's profiles
    endpoint by endpoint; then the other profiles (and the reference's strict variant)."""
    profiles = [p for p in bench.args.pools.split(",") if p]
    # PgBouncer is the database side's: on its CPU.
    bouncers = {
        PGBOUNCER: PgBouncerPair(bench.cluster, bench.out, bench.wrk_cpus),
        PGBOUNCER_PREPARED: PgBouncerPair(
            bench.cluster,
            bench.out,
            bench.wrk_cpus,
            bench.args.pgbouncer_binary,
            PGBOUNCER_MAX_PREPARED,
        ),
    }
    try:
        _profiles(bench, procs, endpoints, server_cpus, results, extras, profiles, bouncers)
    finally:
        for pair in bouncers.values():
            pair.stop()


def _profiles(
    bench: Bench,
    procs: Processes,
    endpoints: list[str],
    server_cpus: str | None,
    results: list[Result],
    extras: list[str],
    profiles: list[str],
    bouncers: dict[str, PgBouncerPair],
) -> None:
    args, cluster, size, today, out = bench.args, bench.cluster, bench.size, bench.today, bench.out
    first = profiles[0]
    service = start_service(procs, cluster, 1, server_cpus, out, first, args.tails, bouncers)
    reference = start_reference(procs, cluster, server_cpus, out)
    problems = compare_shapes(service, reference, size, today)
    extras.append(
        "Response check (service vs reference, same requests): "
        + (
            "identical JSON for every sample."
            if not problems
            else "DIFFERENCES:\n\n" + "\n".join(f"- {p}" for p in problems)
        )
    )
    log(extras[-1])
    # The service against the reference, and through PgBouncer against direct, are ratios
    # of two runs: on a shared machine each endpoint of each is measured right after the
    # direct service's, all of them up. Minutes apart, the VM's neighbours moved the week's
    # ratio from 80 % to 149 % between runs of the same code.
    with_defaults = profiles[0] == "defaults"
    paired = [p for p in profiles if p in PGBOUNCER_PROFILES] if with_defaults else []
    if not with_defaults:
        procs.stop(reference.proc)
    for number, pools in enumerate(profiles):
        if pools in paired:
            continue
        if number:
            service = start_service(
                procs, cluster, 1, server_cpus, out, pools, args.tails, bouncers
            )
        beside = [service]
        if pools == "defaults":
            # The reference next to the service, then PgBouncer with prepared statements
            # (the pooler's target), then Debian's.
            beside.append(reference)
            beside += [
                start_service(procs, cluster, 1, server_cpus, out, p, False, bouncers)
                for p in sorted(paired, key=lambda p: p != PGBOUNCER_PREPARED)
            ]
        log(f"scenario a: 1 worker each, {' then '.join(s.name for s in beside)}")
        for e in endpoints:
            results.extend(bench.side_by_side("a: 64 conns", beside, e))
        for server in beside[1:]:
            procs.stop(server.proc)
        if args.profile and not number:
            log("profiling the service under the mixed load")
            try:
                found = profile(bench, service, out)
            except Exception as exc:  # a failed profile must not cost the measurements
                found = f"profiling failed: {exc!r}"
            extras.append("## Profile (py-spy, 1 worker)\n\n" + found)
        procs.stop(service.proc)
    if not with_defaults:
        _reference_alone(bench, procs, endpoints, server_cpus, results, reset=True)
    if args.strict_reference:
        _reference_alone(bench, procs, endpoints, server_cpus, results, reset=False)


def _reference_alone(
    bench: Bench,
    procs: Processes,
    endpoints: list[str],
    server_cpus: str | None,
    results: list[Result],
    reset: bool,
) -> None:
    log("scenario a: reference" + ("" if reset else " without asyncpg's reset on release"))
    reference = start_reference(procs, bench.cluster, server_cpus, bench.out, reset)
    for e in endpoints:
        results.append(bench.closed_loop("a: 64 conns", reference, e))
    procs.stop(reference.proc)


def _scenario_c(
    bench: Bench, procs: Processes, server_cpus: str | None, results: list[Result]
) -> None:
    """10k connections per worker count: the reference with as many processes, then the
    service."""
    args, cluster, out = bench.args, bench.cluster, bench.out
    for w in [int(w) for w in args.c10k_workers.split(",") if w]:
        cpus = server_cpus if w == 1 else None
        if args.c10k_reference:
            log(f"scenario c: {args.c10k_connections:,} connections, the reference, {w} workers")
            reference = start_reference(procs, cluster, cpus, out, workers=w)
            results.extend(bench.many_connections(reference))
            procs.stop(reference.proc)
        log(f"scenario c: {args.c10k_connections:,} connections, service, {w} workers")
        service = start_service(procs, cluster, w, cpus, out, tails=args.tails)
        results.extend(bench.many_connections(service))
        procs.stop(service.proc)


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _on_sigterm)
    _raise_nofile()
    ensure_wrk()
    workers = [int(w) for w in args.workers.split(",") if w]
    endpoints = [e for e in args.endpoints.split(",") if e]
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    server_cpus, other_cpus = ("0", "1") if pin else (None, None)
    started = time.monotonic()
    header = machine()
    command = "uv run python bench/run.py " + " ".join(sys.argv[1:])

    CACHE.mkdir(mode=0o755, exist_ok=True)
    cache = CACHE / _cache_key(args.scale)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=CACHE))
    work.chmod(0o755)
    work.rmdir()  # cp -a / start_cluster create it
    out = Path(tempfile.mkdtemp(prefix="logs-", dir=CACHE))
    procs = Processes()
    cluster: PgCluster | None = None
    results: list[Result] = []
    extras: list[str] = []
    try:
        if args.skip_seed_if_cached and (cache / "meta.json").exists():
            log(f"restoring the seeded cluster from {cache}")
            cluster, meta = restore_cluster(cache, work)
        else:
            cluster, meta = seed_cluster(args.scale, work, cache)
        diagnostic_logging(cluster)
        if pin:
            pin_postgres(cluster, "1")
        size = Scale.of(args.scale)
        today = (dt.date.fromisoformat(meta["seeded_on"]) - dt.date(1970, 1, 1)).days
        bench = Bench(args, cluster, size, today, out, other_cpus)

        if args.only_c10k:
            workers = []
        if 1 in workers:
            _scenario_a(bench, procs, endpoints, server_cpus, results, extras)
        for w in [w for w in workers if w != 1]:
            log(f"scenario b: service with {w} workers (not pinned)")
            service = start_service(procs, cluster, w, None, out)
            for e in endpoints:
                results.append(bench.closed_loop(f"b: {w} workers", service, e))
            procs.stop(service.proc)
        if not args.skip_c10k:
            _scenario_c(bench, procs, server_cpus, results)
        if bench.storms:
            extras.append(
                f"## {args.c10k_connections:,} new connections at once (scenario c, "
                f"--c10k-mode {args.c10k_mode}; time series in {out})\n\n"
                + "\n".join(f"- {line}" for line in bench.storms)
            )
        if args.explain:
            log("EXPLAIN (ANALYZE, BUFFERS) on the replica")
            extras.append(
                "## EXPLAIN (ANALYZE, BUFFERS) on the replica\n\n" + explain(cluster, size, today)
            )
    finally:
        procs.stop_all()
        if cluster is not None:
            cluster.stop(keep_files=True)
            keep_server_logs(cluster, out)
        shutil.rmtree(work, ignore_errors=True)

    elapsed = time.monotonic() - started
    report = (
        "# Benchmark results\n\n"
        f"Command: `{command}` ({elapsed / 60:.1f} min, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} "
        "UTC)\n\n"
        f"Machine: {header}\n\n"
        f"Placement: {PINNED if pin else 'unpinned'}. "
        f"Scale {args.scale:g} demo data; closed-loop runs: {args.connections} keep-alive "
        f"connections, {args.warmup} s warm-up, {args.duration} s measured"
        + (
            f" in {args.slices} slices of {max(1, args.duration // args.slices)} s, the "
            "servers compared taking turns slice by slice (a server's percentiles: its "
            "slices', weighted by their requests). "
            if args.slices > 1
            else ". "
        )
        + "Latencies from wrk (scenario c's user reads: bench/loadgen.c, from each request's "
        "write, as bench/lua/timed.lua times them); RSS is the peak VmRSS sampled each second; "
        "pool numbers are the "
        "peak `database_connection_pool_checked_out` against `database_connection_pool_size` "
        "(overflow allowed above it) scraped each second.\n\n"
        + table(results)
        + "\n## Targets\n\n"
        + targets(results)
        + (
            "\n## Where the tail comes from (bench/tails.py)\n\n" + tails_table(results)
            if any(r.tails for r in results)
            else ""
        )
        + "\n"
        + "\n\n".join(extras)
        + "\n"
    )
    args.output.write_text(report)
    print(report)
    log(f"server logs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
