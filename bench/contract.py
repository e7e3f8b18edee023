"""The HTTP contract checked by schemathesis, every check, on a real `bookedbarber serve`.

    uv run --frozen python bench/contract.py                        # this checkout
    mkdir /tmp/before && git archive REV | tar -x -C /tmp/before
    uv run --frozen python bench/contract.py --root /tmp/before     # another revision

Per backend (SQLite with the demo data `serve` seeds; PostgreSQL, a primary and a
streaming replica from tests/pgcluster.py with the same demo data, the lanes on), the
service runs with API_TOKENS set and `schemathesis run --checks all` is pointed at its
/openapi.json with that token. Every phase runs (examples, coverage, fuzzing, stateful),
bounded by --max-examples, with a fixed seed. Prints per backend the operations tested,
the test cases generated, those with a failure, and the unique failures by check, as
JSON; the schemathesis output and reports are kept under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent.parent))

from tests import pgcluster
from tests.test_edges import launch, wait_port
from tests.test_health import stop

TOKEN = "contract-token"
ROOT = Path(__file__).resolve().parent.parent
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


def db(root: Path, out: Path, *args: str) -> None:
    with (out / "db.log").open("ab") as log:
        command = [sys.executable, "-m", "app", "db", *args]
        subprocess.run(command, cwd=root, stdout=log, stderr=subprocess.STDOUT, check=True)


def schemathesis(base: str, out: Path, max_examples: int, seed: int) -> dict[str, Any]:
    reports = out / "reports"
    command = [
        str(SCHEMATHESIS),
        "run",
        f"{base}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(max_examples),
        "--seed",
        str(seed),
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--report",
        "json",
        "--report-dir",
        str(reports),
        "--no-color",
    ]
    with (out / "schemathesis.txt").open("wb") as log:
        subprocess.run(command, cwd=out, stdout=log, stderr=subprocess.STDOUT, timeout=1800)
    [report] = reports.glob("json-*.json")
    data = json.loads(report.read_text())
    return {
        "operations": data["operations"]["tested"],
        "cases": data["test_cases"]["generated"],
        "cases_with_failures": data["test_cases"]["with_failures"],
        "unique_failures": data["test_cases"]["unique_failures"],
        "errors": len(data["errors"]),
        "seconds": round(data["running_time"], 1),
        "failures": {
            f"{f['code']} {f['title']}": {"count": f["count"], "operations": f["operations"]}
            for f in data["failures"]
        },
    }


def run(backend: str, root: Path, out: Path, max_examples: int, seed: int) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    env = {"API_TOKENS": TOKEN}
    cluster = None
    if backend == "sqlite":
        # `serve` migrates a new file and seeds the small demo set.
        env |= {"DATABASE_URL": f"sqlite+aiosqlite:///{out / 'contract.db'}", "DEMO_SEED": "true"}
    else:
        cluster = pgcluster.start_cluster(replicas=1, base_dir=out / "pg")
    try:
        if cluster is not None:
            url = cluster.primary.url()
            db(root, out, "seed", "--demo", "--scale", "0.01", "--url", url)
            cluster.wait_replica_caught_up(cluster.replicas[0])
            env |= {"DATABASE_URL": url, "REPLICA_URLS": cluster.replicas[0].url()}
        server = launch(out, env, "--no-access-log", root=root)
        try:
            wait_port(server)
            return schemathesis(f"http://127.0.0.1:{server.port}", out, max_examples, seed)
        finally:
            stop(server.proc)
    finally:
        if cluster is not None:
            cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to serve")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--max-examples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="kept: logs and reports")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bookedbarber-contract-"))
    os.environ.pop("PYTHONPATH", None)
    results = {
        backend: run(backend, args.root.resolve(), out / backend, args.max_examples, args.seed)
        for backend in args.backends.split(",")
    }
    print(json.dumps({"root": str(args.root), "out": str(out), **results}, indent=2))


if __name__ == "__main__":
    main()
