"""Start-up of `serve`: liveness while the service loads, workers slower to start than
uvicorn's health check, and the schema check that spares Alembic on a restart.

Slowness is real time spent in the process, put there by a `sitecustomize` module that
only these tests place on PYTHONPATH (nothing in the service can be made to wait):
- SLOW_WORKER_START: every worker process uvicorn spawns sleeps that long as its
  interpreter starts, before any of uvicorn's code runs (a worker on a CPU-starved machine).
- SLOW_SERVICE_IMPORT: importing `app.main` takes that much longer (the service loading).
- BROKEN_SERVICE_IMPORT: importing `app.main` fails.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from alembic.script import ScriptDirectory

from app.db.migrate import alembic_config, downgrade, upgrade
from app.db.schema_head import at_head, head, root
from tests.test_edges import Server, launch, sqlite_env, wait_port
from tests.test_health import stop

SITECUSTOMIZE = """
import os, sys, time
from pathlib import Path

_worker = Path("/proc/self/cmdline").read_bytes().endswith(b"--multiprocessing-fork\\0")
if _worker and os.environ.get("SLOW_WORKER_START"):
    marks = Path(os.environ["SLOW_MARKS"])
    (marks / f"worker-{os.getpid()}").write_text("")
    time.sleep(float(os.environ["SLOW_WORKER_START"]))

if os.environ.get("SLOW_SERVICE_IMPORT") or os.environ.get("BROKEN_SERVICE_IMPORT"):
    import importlib.abc

    class _Slow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "app.main":
                time.sleep(float(os.environ.get("SLOW_SERVICE_IMPORT") or 0))
                if os.environ.get("BROKEN_SERVICE_IMPORT"):
                    raise ImportError(os.environ["BROKEN_SERVICE_IMPORT"])
            return None

    sys.meta_path.insert(0, _Slow())
"""


@contextmanager
def slow_serve(tmp_path: Path, env: dict[str, str], *args: str) -> Iterator[Server]:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    marks = tmp_path / "marks"
    marks.mkdir(exist_ok=True)
    env = {**sqlite_env(tmp_path), "PYTHONPATH": str(site), "SLOW_MARKS": str(marks), **env}
    server = launch(tmp_path, env, *args)
    try:
        yield server
    finally:
        stop(server.proc)


def loaded_pids(server: Server) -> set[str]:
    return {
        line.rsplit("pid=", 1)[1].strip()
        for line in server.log.read_text().splitlines()
        if "service loaded" in line
    }


def wait_for(condition: str, check: Callable[[], bool], server: Server) -> None:
    """Waits until `check()` holds; fails when serve exits or after two minutes."""
    deadline = time.monotonic() + 120
    while not check():
        if server.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{condition}:\n{server.log.read_text()}")
        time.sleep(0.1)


def test_workers_slower_than_uvicorns_health_check_still_start(tmp_path: Path) -> None:
    """Each worker spends 7 s before it can answer uvicorn's ping (uvicorn's default
    timeout is 5 s, which replaced such workers again and again); all come up."""
    env = {"SLOW_WORKER_START": "7"}
    with slow_serve(tmp_path, env, "--workers", "2", "--no-access-log") as server:
        wait_for("two workers loaded", lambda: len(loaded_pids(server)) == 2, server)
        marks = {p.name for p in (tmp_path / "marks").iterdir()}
        assert marks == {f"worker-{pid}" for pid in loaded_pids(server)}
        response = httpx.get(f"{server.base}/api/v1/users", params={"limit": 1}, timeout=10)
        assert response.status_code == 200
        log = server.log.read_text()
    assert " died" not in log
    assert "failed to start" not in log


def test_liveness_answers_while_the_service_loads(tmp_path: Path) -> None:
    env = {"SLOW_SERVICE_IMPORT": "6"}
    with slow_serve(tmp_path, env) as server:
        wait_port(server)
        early = httpx.get(
            f"{server.base}/health/live", headers={"X-Request-ID": "early-1"}, timeout=10
        )
        assert "service loaded" not in server.log.read_text()  # answered in front of it
        # Any other request waits for the service, then gets the service's answer.
        waiting: Future[httpx.Response] = Future()
        threading.Thread(
            target=lambda: waiting.set_result(
                httpx.get(f"{server.base}/api/v1/users", params={"limit": 1}, timeout=120)
            ),
            daemon=True,
        ).start()
        assert waiting.result(timeout=120).status_code == 200
        assert loaded_pids(server)
        late = httpx.get(
            f"{server.base}/health/live", headers={"X-Request-ID": "early-1"}, timeout=10
        )
        assert httpx.get(f"{server.base}/health/ready", timeout=10).status_code == 200
        # A liveness query the service refuses is not answered in front of it.
        assert httpx.get(f"{server.base}/health/live?x=1", timeout=10).status_code == 422
    for response in (early, late):
        assert response.status_code == 200
        assert response.json() == {"status": "alive"}
    assert early.content == late.content
    kept = ("content-type", "content-length", "x-request-id")
    assert {k: early.headers.get(k) for k in kept} == {k: late.headers.get(k) for k in kept}
    assert early.headers["x-request-id"] == "early-1"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_service_that_fails_to_load_ends_serve(tmp_path: Path, workers: str) -> None:
    """As a failed start-up does in uvicorn: no worker restarted for ever, one line said."""
    env = {"BROKEN_SERVICE_IMPORT": "planted failure"}
    with slow_serve(tmp_path, env, "--workers", workers) as server:
        code = server.proc.wait(timeout=120)
    log = server.log.read_text()
    assert "the service failed to load: ImportError: planted failure" in log
    assert " died" not in log
    if workers == "1":
        assert code == 3  # uvicorn's start-up failure
    else:  # uvicorn's supervisor stops (and exits 0, as it does for any failed start-up)
        assert "failed to start, stopping the parent process" in log


# -- the schema check -------------------------------------------------------------------------


def test_the_head_read_from_the_files_is_alembics() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite://"))
    assert head(root() / "alembic" / "versions") == script.get_current_head()


def test_at_head_only_at_the_head(tmp_path: Path) -> None:
    path = tmp_path / "check.db"
    url = f"sqlite+aiosqlite:///{path}"
    assert not at_head(path)  # no file
    path.write_bytes(b"not a database, not even empty")
    assert not at_head(path)
    path.unlink()
    sqlite3.connect(path).close()
    assert not at_head(path)  # no alembic_version
    upgrade(url)
    assert at_head(path)
    script = ScriptDirectory.from_config(alembic_config(url))
    down = script.get_revision(script.get_current_head() or "").down_revision
    assert isinstance(down, str)
    downgrade(url, down)
    assert not at_head(path)


def test_serve_upgrades_a_file_behind_the_head(tmp_path: Path) -> None:
    path = tmp_path / "edges.db"  # sqlite_env's file
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url)
    script = ScriptDirectory.from_config(alembic_config(url))
    wanted = script.get_current_head()
    down = script.get_revision(wanted or "").down_revision
    assert isinstance(down, str)
    downgrade(url, down)
    server = launch(tmp_path, sqlite_env(tmp_path))
    try:
        wait_port(server)
    finally:
        stop(server.proc)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(wanted,)]


@pytest.mark.parametrize("text", ['revision = "x"\n', "down_revision = None\n"])
def test_a_version_file_read_otherwise_means_no_head(tmp_path: Path, text: str) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "0001_a.py").write_text('revision: str = "a"\ndown_revision = None\n')
    (versions / "0002_b.py").write_text('revision: str = "b"\ndown_revision = "a"\n')
    assert head(versions) == "b"
    (versions / "0003_c.py").write_text(text)  # one of the two lines missing
    assert head(versions) is None


# What `serve` imports before its port opens, and what each of `db copy`'s spawned workers
# imports again with the CLI (app/cli.py): none of it may pull in the heavy libraries.
_BEFORE_THE_PORT = (
    "app.cli, app.config, app.logs, app.adapters.uvicorn_http, app.db.schema_head, uvicorn"
)


def test_serve_and_the_cli_import_no_sqlalchemy_or_alembic() -> None:
    code = (
        f"import sys, {_BEFORE_THE_PORT}\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert loaded & {"sqlalchemy", "alembic", "fastapi", "rich"} == set()
    assert "uvicorn" in loaded  # the probe itself ran


def test_the_cli_alone_reads_no_settings() -> None:
    code = "import sys, app.cli\nprint(' '.join(sorted(sys.modules)))"
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert "app.cli" in loaded
    assert loaded & {"app.config", "pydantic_settings", "uvicorn", "app.redaction"} == set()
