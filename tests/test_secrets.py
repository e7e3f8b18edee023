"""No secret in any output: bad configurations, failing commands, a running service's answers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.engine import create_engine
from app.redaction import scrub
from tests import factories, pgcluster
from tests.conftest import Postgres, make_settings
from tests.test_edges import ROOT, running

PASSWORD = "pw-" + os.urandom(8).hex()
TOKEN = "tok-" + os.urandom(8).hex()
SECRETS = (PASSWORD, TOKEN)
SECRET_ENV = {"API_TOKENS": f"other-token,{TOKEN}", "POSTGRES_PASSWORD": PASSWORD}


def _url(port: int | str, password: str = PASSWORD) -> str:
    return f"postgresql://app:{password}@127.0.0.1:{port}/bookedbarber"


BAD_CONFIGURATIONS: dict[str, dict[str, str]] = {
    "not an integer": {"POOL_SIZE": "many", "DATABASE_URL": _url(5432)},
    "production without tokens": {"ENVIRONMENT": "production", "API_TOKENS": ""},
    "composed URL, bad port": {"USE_POSTGRES": "true", "POSTGRES_PORT": "fivefourthreetwo"},
    "URL with a bad port": {"DATABASE_URL": _url("port")},
    "URL beyond parsing": {"DATABASE_URL": f"not a url {PASSWORD}@"},
    "bad replica URL": {"DATABASE_URL": _url(5432), "REPLICA_URLS": f"postgresql://:{PASSWORD}@:x"},
    "replicas of SQLite": {"DATABASE_URL": "sqlite:///x.db", "REPLICA_URLS": _url(5432)},
    "bad analytics URL": {"DATABASE_URL": _url(5432), "ANALYTICS_DATABASE_URL": _url("x")},
    "unknown environment": {"ENVIRONMENT": "prod", "DATABASE_URL": _url(5432)},
    "unknown log format": {"LOG_FORMAT": "xml", "DATABASE_URL": _url(5432)},
    "negative timeout": {"HEADER_TIMEOUT": "-1", "DATABASE_URL": _url(5432)},
}


def _run(env: dict[str, str], *args: str) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REPLICA_"))}
    res = subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env=clean | SECRET_ENV | env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return res.returncode, res.stdout + res.stderr


def hits(text: str, *secrets: str) -> list[str]:
    return [s for s in (*SECRETS, *secrets) if s in text]


@pytest.mark.parametrize("name", sorted(BAD_CONFIGURATIONS))
@pytest.mark.parametrize("command", [("db", "upgrade"), ("serve",), ("--debug", "db", "upgrade")])
def test_bad_configuration_names_the_variable_never_the_value(
    name: str, command: tuple[str, ...]
) -> None:
    code, output = _run(BAD_CONFIGURATIONS[name], *command)
    assert code == 1, output
    assert hits(output) == [], (name, output)
    line = output.strip()
    assert line.startswith("Error: invalid configuration: "), output
    assert "\n" not in line, output  # one line, even with --debug: nothing failed beyond it


def _cli_failures(pg: Postgres) -> dict[str, tuple[dict[str, str], tuple[str, ...], str]]:
    """name: (environment, arguments, the secret it holds)."""
    real = make_url(pg.primary_url)
    real_password = str(real.password)
    wrong = real.set(password=PASSWORD).render_as_string(hide_password=False)
    closed = pgcluster.free_port()
    return {
        "unreachable": ({}, ("db", "upgrade", "--url", _url(closed)), PASSWORD),
        "unreachable from env": ({"DATABASE_URL": _url(closed)}, ("db", "upgrade"), PASSWORD),
        "wrong password": ({}, ("db", "upgrade", "--url", wrong), PASSWORD),
        "bad URL option": ({}, ("db", "upgrade", "--url", _url("port")), PASSWORD),
        "unparsable URL option": ({}, ("db", "upgrade", "--url", f"x{PASSWORD}@"), PASSWORD),
        "unknown revision": (
            {"DATABASE_URL": pg.primary_url},
            ("db", "upgrade", "--revision", "nonexistent"),
            real_password,
        ),
        "seed a full database": (
            {"DATABASE_URL": pg.primary_url},
            ("db", "seed", "--demo", "--no-upgrade"),
            real_password,
        ),
    }


async def _add_user(url: str) -> None:
    engine = create_engine(url, make_settings(url))
    try:
        async with AsyncSession(engine) as session:
            await factories.user(session)
            await session.commit()
    finally:
        await engine.dispose()


# Failures the command did not foresee; the others are plain messages, --debug or not.
TRACEBACKS = {"unreachable", "unreachable from env", "wrong password", "unknown revision"}


def test_cli_failures_are_one_line_without_secrets(postgres: Postgres) -> None:
    asyncio.run(_add_user(postgres.primary_url))  # seeding refuses a database with users
    found: dict[str, list[str]] = {}
    for name, (env, args, secret) in _cli_failures(postgres).items():
        for debug in ((), ("--debug",)):
            code, output = _run(env, *debug, *args)
            assert code == 1, (name, output)
            found[f"{name} {debug}"] = hits(output, secret)
            last = output.strip().splitlines()[-1]
            assert last.startswith("Error: "), (name, output)
            if not debug:
                assert output.strip() == last, (name, output)
            elif name in TRACEBACKS:
                assert "Traceback (most recent call last)" in output, (name, output)
    assert {name: h for name, h in found.items() if h} == {}


def test_a_running_service_shows_no_secret(postgres: Postgres, tmp_path: Path) -> None:
    real = make_url(postgres.primary_url)
    wrong = real.set(password=PASSWORD).render_as_string(hide_password=False)
    replica = make_url(postgres.replica_urls[0]).set(password=PASSWORD)
    env = {
        "DATABASE_URL": wrong,
        "REPLICA_URLS": replica.render_as_string(hide_password=False),
        "CONNECT_TIMEOUT": "2",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "debug",
        **SECRET_ENV,
    }
    outputs = []
    with running(tmp_path, env) as server, httpx.Client(base_url=server.base, timeout=10) as http:
        for path in ("/health/live", "/health/ready", "/health/db", "/health/replicas"):
            outputs.append(http.get(path).text)
        outputs.append(http.get("/health/integrity").text)
        outputs.append(http.get("/metrics").text)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        outputs.append(http.get("/api/v1/users/1", headers=auth).text)
        outputs.append(http.post("/api/v1/users", json={"name": "x"}, headers=auth).text)
        outputs.append(http.get("/api/v1/users/1").text)
        wrong_token = {"Authorization": f"Bearer {TOKEN[:-1]}"}
        outputs.append(http.get("/api/v1/users/1", headers=wrong_token).text)
    outputs.append(server.log.read_text(errors="replace"))
    assert [hits(text) for text in outputs] == [[]] * len(outputs)


def test_scrub_hides_url_passwords_and_known_values() -> None:
    text = f"postgresql+asyncpg://app:{PASSWORD}@h/db and bearer {TOKEN} and {PASSWORD}"
    clean = scrub(text, [TOKEN, PASSWORD])
    assert hits(clean) == []
    assert clean.startswith("postgresql+asyncpg://app:***@h/db")
