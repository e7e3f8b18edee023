"""Clients sending request headers for ever, against a real `bookedbarber serve`.

    uv run --frozen python bench/header_flood.py                         # this checkout
    uv run --frozen python bench/header_flood.py --command docker        # the image's CMD
    mkdir /tmp/before && git archive REV | tar -x -C /tmp/before
    uv run --frozen python bench/header_flood.py --root /tmp/before      # another revision

Each client connects, sends a request line and then `X-Pad: <8,000 bytes>` lines as fast
as it can; when the server answers or closes, it notes the status and starts again.
Prints, as JSON: the worker's RSS before, at the peak of and 2 s after the flood, the
answers the flood got, and a well-behaved client's `GET /health/live` meanwhile (answered,
slowest). `--command docker` runs the Dockerfile's command line (`bookedbarber serve
--no-access-log` with its ENVIRONMENT=production and DEMO_SEED=false) without docker.
A flood is stopped early when the worker passes `--rss-cap-mb` (the machine is shared).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shutil
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
from tests.test_edges import read_response, status_of
from tests.test_health import stop

TOKEN = "flood-token"
PAD = b"X-Pad: " + b"a" * 8000 + b"\r\n"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start(root: Path, tmp: Path, command: str) -> tuple[subprocess.Popen[bytes], int]:
    port = pgcluster.free_port()
    db = tmp / "flood.db"
    url = f"sqlite+aiosqlite:///{db}"
    clean = {k: v for k, v in os.environ.items() if k not in ("API_TOKENS", "ENVIRONMENT")}
    env = {**clean, "DATABASE_URL": url, "DEMO_SEED": "false", "PORT": str(port)}
    python = [sys.executable, "-m", "app"]
    subprocess.run([*python, "db", "upgrade", "--url", url], cwd=root, env=env, check=True)
    if command == "docker":
        # The image's ENV and CMD; bound to 127.0.0.1 here rather than 0.0.0.0.
        env |= {"ENVIRONMENT": "production", "API_TOKENS": TOKEN, "HOST": "127.0.0.1"}
        executable = shutil.which("bookedbarber", path=str(Path(sys.executable).parent))
        args = [executable or "bookedbarber", "serve", "--no-access-log"]
    else:
        args = [*python, "serve", "--port", str(port)]
    log = (tmp / "serve.log").open("wb")
    proc = subprocess.Popen(args, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while True:
        with contextlib.suppress(httpx.HTTPError):
            # 401 for the image's command line (production: tokens required).
            response = httpx.get(f"http://127.0.0.1:{port}/api/v1/users?limit=1", timeout=2)
            if response.status_code in (200, 401):
                return proc, port
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError((tmp / "serve.log").read_text())
        time.sleep(0.1)


COUNTING = threading.Lock()


def _read(sock: socket.socket, answer: list[bytes], done: threading.Event) -> None:
    with contextlib.suppress(OSError):  # closed by the sender after its wait
        answer.append(read_response(sock))
    done.set()


def flood(port: int, stop_at: threading.Event, answers: collections.Counter[str]) -> None:
    while not stop_at.is_set():
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError:
            with COUNTING:
                answers["connect failed"] += 1
            continue
        reader_done = threading.Event()
        answer: list[bytes] = []
        threading.Thread(target=_read, args=(sock, answer, reader_done), daemon=True).start()
        try:
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: flood\r\n")
            while not stop_at.is_set() and not reader_done.is_set():
                sock.sendall(PAD)
        except OSError:
            pass
        reader_done.wait(5)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        status = status_of(answer[0]) if answer else None
        with COUNTING:
            answers[str(status) if status else "closed, no answer"] += 1


def run(root: Path, clients: int, seconds: float, command: str, cap_mb: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp:
        proc, port = start(root, Path(tmp), command)
        try:
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, timeout=10) as http:
                for _ in range(50):
                    http.get("/health/live")
            before = rss_mb(proc.pid)
            peak, capped = before, False
            answers: collections.Counter[str] = collections.Counter()
            stop_at = threading.Event()
            threads = [
                threading.Thread(target=flood, args=(port, stop_at, answers), daemon=True)
                for _ in range(clients)
            ]
            for thread in threads:
                thread.start()
            probes: list[float] = []
            failures = 0
            ends = time.monotonic() + seconds
            with httpx.Client(base_url=base, timeout=10) as http:
                while time.monotonic() < ends:
                    peak = max(peak, rss_mb(proc.pid))
                    if peak > cap_mb:
                        capped = True
                        break
                    began = time.monotonic()
                    try:
                        ok = http.get("/health/live").status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    probes.append(time.monotonic() - began)
                    failures += not ok
                    time.sleep(0.05)
            stop_at.set()
            for thread in threads:
                thread.join(15)
            time.sleep(2)
            after = rss_mb(proc.pid)
        finally:
            stop(proc)
    return {
        "command": command,
        "clients": clients,
        "seconds": seconds,
        "stopped_at_rss_cap": capped,
        "rss_mb_before": round(before, 1),
        "rss_mb_peak": round(peak, 1),
        "rss_mb_2s_after": round(after, 1),
        "flood_answers": dict(answers),
        "health_live_probes": len(probes),
        "health_live_failed": failures,
        "health_live_slowest_s": round(max(probes), 3) if probes else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, default=Path(__file__).parent.parent)
    parser.add_argument("--clients", default="1,4,50")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--command", choices=["serve", "docker"], default="serve")
    parser.add_argument("--rss-cap-mb", type=float, default=1500.0)
    args = parser.parse_args()
    for clients in (int(c) for c in args.clients.split(",")):
        result = run(args.root.resolve(), clients, args.seconds, args.command, args.rss_cap_mb)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
