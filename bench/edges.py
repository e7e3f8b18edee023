"""The process's edges, measured on a real `bookedbarber serve` of a checkout.

    uv run --frozen python bench/edges.py                      # this checkout
    mkdir /tmp/before && git archive REV | tar -x -C /tmp/before
    uv run --frozen python bench/edges.py --root /tmp/before   # another revision

Prints, as JSON: the worker's RSS before, at the peak of and after an unauthenticated
200 MB request body; how long a client that stops halfway through its headers, and one
that stops halfway through its body, is held; how long /health/live takes to answer
from the process's start while the primary accepts TCP and never answers (replica
refusing, replica hanging); how many secret values the outputs of a matrix of bad
configurations and failing commands hold; and the pool and INSERT series on SQLite.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent.parent))

from tests import pgcluster
from tests.test_edges import (
    MIB,
    TOKEN,
    junk,
    launch,
    post_stream,
    read_response,
    request_head,
    silent_server,
    status_of,
    wait_port,
)
from tests.test_health import stop
from tests.test_secrets import BAD_CONFIGURATIONS, SECRET_ENV, SECRETS, _url


def big_body(root: Path, tmp: Path) -> dict[str, Any]:
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'rss.db'}", "API_TOKENS": TOKEN}
    server = launch(tmp, env, "--no-access-log", root=root)
    try:
        wait_port(server)
        with httpx.Client(base_url=server.base, timeout=10) as http:
            for _ in range(50):
                http.post("/api/v1/users", content=b"{")
        baseline = server.rss_kib()
        peak, done = baseline, threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(0.02):
                peak = max(peak, server.rss_kib())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        size = 200 * MIB
        response, seconds = post_stream(
            server.port, request_head("/api/v1/users", length=size), junk(size)
        )
        time.sleep(2)
        done.set()
        sampler.join()
        return {
            "status": status_of(response),
            "seconds_to_answer": round(seconds, 2),
            "rss_mb_before": round(baseline / 1024, 1),
            "rss_mb_peak": round(peak / 1024, 1),
            "rss_mb_2s_after": round(server.rss_kib() / 1024, 1),
        }
    finally:
        stop(server.proc)


def slow_clients(root: Path, tmp: Path, cap: float) -> dict[str, Any]:
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'slow.db'}"}
    server = launch(tmp, env, "--no-access-log", root=root)
    try:
        wait_port(server)
        held = {}
        starts = {
            "headers": b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ",
            "body": request_head("/api/v1/users", length=100) + b'{"name": ',
        }
        for kind, start in starts.items():
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.settimeout(cap)
            opened = time.monotonic()
            sock.sendall(start)
            response = read_response(sock)
            seconds = time.monotonic() - opened
            sock.close()
            held[kind] = {
                "status": status_of(response),
                "seconds_held": round(seconds, 1) if seconds < cap else f">{cap:g} (gave up)",
            }
        return held
    finally:
        stop(server.proc)


def liveness(root: Path, tmp: Path) -> dict[str, Any]:
    result = {}
    for replica in ("refusing", "hanging"):
        with silent_server() as primary_port, silent_server() as replica_port:
            port = replica_port if replica == "hanging" else pgcluster.free_port()
            env = {"DATABASE_URL": _url(primary_port), "REPLICA_URLS": _url(port)}
            server = launch(tmp, env, "--no-access-log", root=root)
            try:
                opened = wait_port(server, 120) - server.started
                while True:
                    try:
                        if httpx.get(f"{server.base}/health/live", timeout=60).status_code == 200:
                            break
                    except httpx.TransportError:
                        time.sleep(0.02)
                live = time.monotonic() - server.started
            finally:
                stop(server.proc)
            result[f"replica {replica}"] = {
                "port_open_s": round(opened, 2),
                "live_200_s": round(live, 2),
            }
    return result


def pool_and_queries(root: Path, tmp: Path) -> dict[str, Any]:
    """SQLite, POOL_SIZE 20: the pool series, and the INSERT counts of 12 users created
    by 24 POSTs (every other one a taken email, answered 409)."""
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'metrics.db'}", "POOL_SIZE": "20"}
    server = launch(tmp, env, "--no-access-log", root=root)
    try:
        wait_port(server)
        with httpx.Client(base_url=server.base, timeout=10) as http:
            for i in range(24):
                email = f"user-{i // 2}@example.test"
                http.post("/api/v1/users", json={"email": email, "name": "Metrics"})
            scrape = http.get("/metrics").text
    finally:
        stop(server.proc)
    wanted = ("database_connection_pool_", 'database_queries_total{operation="INSERT"')
    return {"series": [line for line in scrape.splitlines() if line.startswith(wanted)]}


def secrets(root: Path) -> dict[str, Any]:
    closed = pgcluster.free_port()
    runs: list[tuple[dict[str, str], tuple[str, ...]]] = [
        (env, ("db", "upgrade")) for env in BAD_CONFIGURATIONS.values()
    ]
    runs += [
        ({}, ("db", "upgrade", "--url", _url(closed))),
        ({}, ("db", "upgrade", "--url", _url("port"))),
        ({"DATABASE_URL": _url(closed)}, ("db", "upgrade")),
    ]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REPLICA_"))}
    found = tracebacks = 0
    for env, args in runs:
        res = subprocess.run(
            [sys.executable, "-m", "app", *args],
            cwd=root,
            env=clean | SECRET_ENV | env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        output = res.stdout + res.stderr
        found += sum(output.count(secret) for secret in SECRETS)
        tracebacks += "Traceback" in output
    return {"runs": len(runs), "secret_occurrences": found, "tracebacks": tracebacks}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, default=Path(__file__).parent.parent)
    parser.add_argument("--cap", type=float, default=60.0, help="seconds to wait on a slow client")
    args = parser.parse_args()
    root = args.root.resolve()
    with tempfile.TemporaryDirectory(prefix="bb-edges-") as name:
        tmp = Path(name)
        report = {
            "root": str(root),
            "big_body": big_body(root, tmp),
            "slow_clients": slow_clients(root, tmp, args.cap),
            "liveness_hanging_primary": liveness(root, tmp),
            "secrets": secrets(root),
            "pool_and_queries": pool_and_queries(root, tmp),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
