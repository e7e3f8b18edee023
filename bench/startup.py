"""Start-up of `bookedbarber serve`, measured from the process's start.

    uv run --frozen python bench/startup.py                          # this checkout
    mkdir /tmp/before && git archive REV | tar -x -C /tmp/before
    uv run --frozen python bench/startup.py --root /tmp/before       # another revision

For 1 and 2 workers, on an idle machine and with every core busy (one CPU burner per
core, started and stopped here), starts `python -m app serve` of the checkout on a SQLite
file already at the schema's head (the usual restart) and prints, as JSON, the seconds
from the process's start to the first 200 of `GET /health/live` and of a real API read
(`GET /api/v1/users?limit=1`), the CPU time the serve process and its workers had used
by then (steadier than wall time on a shared machine: about what an idle one takes), and
how many workers uvicorn's supervisor replaced ("Child process ... died") meanwhile.
"Idle" is the machine as it is: the load average is printed beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent.parent))

from tests import pgcluster
from tests.test_health import stop


@contextmanager
def cpu_burners(count: int) -> Iterator[None]:
    """`count` processes spinning on a core each."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(0.5)
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and its living descendants."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(int(child)) for child in children)


def first_200(url: str, started: float, proc: subprocess.Popen[bytes], cap: float) -> float:
    """Seconds from `started` to the first 200 of GET `url` (a new connection each try)."""
    while time.monotonic() - started < cap:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"no 200 from {url} within {cap} s")


def one_start(root: Path, db: Path, workers: int, log: Path, cap: float) -> dict[str, Any]:
    port = pgcluster.free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("API_TOKENS", "ENVIRONMENT")},
        "DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "DEMO_SEED": "false",
    }
    with log.open("wb") as out:
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", str(port), "--workers", str(workers)],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    figures: dict[str, Any] = {}
    try:
        base = f"http://127.0.0.1:{port}"
        for key, path in (("live", "/health/live"), ("api", "/api/v1/users?limit=1")):
            figures[key] = round(first_200(base + path, started, proc, cap), 2)
            figures[f"cpu_{key}"] = round(cpu_seconds(proc.pid), 2)
        time.sleep(1.0)  # a worker replaced late still shows in the log
    except RuntimeError as exc:  # no 200 within the cap: the figures say so
        figures["failed"] = str(exc)
    finally:
        stop(proc)
    return {**figures, "workers_replaced": log.read_text(errors="replace").count(" died")}


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": len(runs)}
    for key in ("live", "api", "cpu_live", "cpu_api"):
        values = [run[key] for run in runs if key in run]
        if values:
            out[f"{key}_median"] = round(statistics.median(values), 2)
            out[f"{key}_max"] = max(values)
    out["failed"] = [run["failed"] for run in runs if "failed" in run]
    out["workers_replaced"] = sum(run["workers_replaced"] for run in runs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, default=Path(__file__).parent.parent)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--loads", default="idle,busy")
    parser.add_argument("--cap", type=float, default=90.0, help="seconds to wait for a 200")
    args = parser.parse_args()
    root = args.root.resolve()
    results: dict[str, Any] = {"root": str(root), "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        db = Path(tmp) / "startup.db"
        url = f"sqlite+aiosqlite:///{db}"
        subprocess.run(
            [sys.executable, "-m", "app", "db", "upgrade", "--url", url],
            cwd=root,
            check=True,
            capture_output=True,
        )
        for load in args.loads.split(","):
            burners = cpu_burners((os.cpu_count() or 1) if load == "busy" else 0)
            with burners:
                for workers in (int(w) for w in args.workers.split(",")):
                    runs = [
                        one_start(root, db, workers, Path(tmp) / f"serve-{i}.log", args.cap)
                        for i in range(args.runs)
                    ]
                    key = f"{load}, {workers} worker{'s' if workers > 1 else ''}"
                    results[key] = {**summary(runs), "load_average": os.getloadavg()[0]}
                    print(key, json.dumps(results[key]), file=sys.stderr, flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
