"""No secret in any output: bad configurations, failing commands, a running service's answers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote, quote_plus

import httpx
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.engine import create_engine
from app.redaction import scrub
from app.urls import redact
from tests import factories, pgcluster
from tests.conftest import Postgres, make_settings
from tests.leaks import leaks, secret, token
from tests.test_edges import ROOT, running

PASSWORD = secret()
TOKEN = token()
SECRETS = (PASSWORD, TOKEN)
SECRET_ENV = {"API_TOKENS": f"other-token,{TOKEN}", "POSTGRES_PASSWORD": PASSWORD}
# The password as a URL's userinfo or path holds it.
ENCODED = quote(PASSWORD, safe="")


def _url(port: int | str, password: str = PASSWORD) -> str:
    return f"postgresql://app:{quote(password, safe='')}@127.0.0.1:{port}/bookedbarber"


BAD_CONFIGURATIONS: dict[str, dict[str, str]] = {
    "not an integer": {"POOL_SIZE": "many", "DATABASE_URL": _url(5432)},
    "production without tokens": {"ENVIRONMENT": "production", "API_TOKENS": ""},
    "composed URL, bad port": {"USE_POSTGRES": "true", "POSTGRES_PORT": "fivefourthreetwo"},
    "URL with a bad port": {"DATABASE_URL": _url("port")},
    "URL beyond parsing": {"DATABASE_URL": f"not a url {PASSWORD}@"},
    "bad replica URL": {"DATABASE_URL": _url(5432), "REPLICA_URLS": f"postgresql://:{ENCODED}@:x"},
    "replicas of SQLite": {"DATABASE_URL": "sqlite:///x.db", "REPLICA_URLS": _url(5432)},
    "bad analytics URL": {"DATABASE_URL": _url(5432), "ANALYTICS_DATABASE_URL": _url("x")},
    "unserved scheme": {"DATABASE_URL": f"mysql://app:{ENCODED}@127.0.0.1/bookedbarber"},
    "unserved replica scheme": {
        "DATABASE_URL": _url(5432),
        "REPLICA_URLS": f"{_url(5432)},sqlite:///{ENCODED}.db",
    },
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
    """Where the test's secrets and `secrets` show in `text`, in any form."""
    return leaks(text, *SECRETS, *secrets)


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
        "unserved URL option": (
            {},
            ("db", "seed", "--demo", "--url", f"mysql+pymysql://u:{ENCODED}@h/db"),
            PASSWORD,
        ),
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
    for name, (env, args, given) in _cli_failures(postgres).items():
        for debug in ((), ("--debug",)):
            code, output = _run(env, *debug, *args)
            assert code == 1, (name, output)
            found[f"{name} {debug}"] = hits(output, given)
            last = output.strip().splitlines()[-1]
            assert last.startswith("Error: "), (name, output)
            if not debug:
                assert output.strip() == last, (name, output)
            elif name in TRACEBACKS:
                assert "Traceback (most recent call last)" in output, (name, output)
    assert {name: h for name, h in found.items() if h} == {}


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_a_running_service_shows_no_secret(
    postgres: Postgres, tmp_path: Path, log_format: str
) -> None:
    real = make_url(postgres.primary_url)
    wrong = real.set(password=PASSWORD).render_as_string(hide_password=False)
    replica = make_url(postgres.replica_urls[0]).set(password=PASSWORD)
    plain = f"plain-{secrets.token_hex(8)}"  # a token X-Request-ID may carry as it is
    env = {
        "DATABASE_URL": wrong,
        "REPLICA_URLS": replica.render_as_string(hide_password=False),
        "CONNECT_TIMEOUT": "2",
        "LOG_FORMAT": log_format,
        "LOG_LEVEL": "debug",
        **SECRET_ENV,
        "API_TOKENS": f"{SECRET_ENV['API_TOKENS']},{plain}",
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
        # Secrets a client sends where the access line shows them: its request target, in
        # any encoding, and its request id.
        for value in (TOKEN, PASSWORD, plain):
            outputs.append(http.get("/api/v1/users", params={"q": value}, headers=auth).text)
            for encoded in (quote(value, safe=""), quote_plus(value), quote(value, safe="/:@")):
                outputs.append(http.get(f"/api/v1/users?token={encoded}").text)
                outputs.append(http.get(f"/api/v1/users/{encoded}").text)
        outputs.append(http.get("/api/v1/users/1", headers={**auth, "X-Request-ID": plain}).text)
    outputs.append(server.log.read_text(errors="replace"))
    assert [hits(text, plain) for text in outputs] == [[]] * len(outputs)
    assert "/api/v1/users?token=***" in outputs[-1]


def test_scrub_hides_url_passwords_and_known_values() -> None:
    text = f"postgresql+asyncpg://app:{ENCODED}@h/db and bearer {TOKEN} and {PASSWORD}"
    clean = scrub(text, [TOKEN, PASSWORD])
    assert hits(clean) == []
    assert clean.startswith("postgresql+asyncpg://app:***@h/db")


# -- every kind of secret, every command's failure ------------------------------------------


def _placed(placement: str, port: int, value: str, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """A URL (and environment) that hands `value` to the driver the way `placement` says."""
    base = f"postgresql://app_{placement.replace(' ', '_')}@127.0.0.1:{port}/bookedbarber"
    encoded = quote(value, safe="")
    if placement == "userinfo":
        return base.replace("@", f":{encoded}@", 1), {}
    if placement == "password parameter":
        return f"{base}?password={encoded}", {}
    if placement == "sslpassword parameter":
        return f"{base}?ssl=disable&sslpassword={encoded}", {}
    if placement == "PGPASSWORD":
        return base, {"PGPASSWORD": value}
    passfile = tmp_path / f"pgpass-{port}"
    escaped = value.replace("\\", "\\\\").replace(":", "\\:")
    passfile.write_text(f"*:*:*:*:{escaped}\n")
    passfile.chmod(0o600)
    return f"{base}?passfile={quote(str(passfile), safe='')}", {}


PLACEMENTS = ["userinfo", "password parameter", "sslpassword parameter", "PGPASSWORD", "passfile"]


@pytest.fixture(scope="module")
def source_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("source") / "source.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO things (name) VALUES ('a')")
    db.close()
    return f"sqlite:///{path}"


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_command_failures_show_no_secret_wherever_it_was_given(
    postgres: Postgres, source_file: str, tmp_path: Path, placement: str
) -> None:
    """Unreachable and refused (a login the cluster does not know), --debug or not."""
    value = secret()
    cluster = make_url(postgres.primary_url).port or 5432
    refused, env = _placed(placement, cluster, value, tmp_path)
    unreachable, _ = _placed(placement, pgcluster.free_port(), value, tmp_path)
    runs = [
        (env, ("db", "upgrade", "--url", refused)),
        (env | {"DATABASE_URL": unreachable}, ("--debug", "db", "upgrade")),
        (env | {"DATABASE_URL": refused}, ("db", "seed", "--demo", "--no-upgrade")),
        (env, ("db", "copy", source_file, refused)),
        (env, ("--debug", "db", "verify", source_file, unreachable)),
    ]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda run: _run(run[0], *run[1]), runs))
    for (_, args), (code, output) in zip(runs, results, strict=True):
        what = " ".join(a for a in args if "://" not in a)
        assert code == 1, what
        assert leaks(output, value) == [], what
        assert output.strip().splitlines()[-1].startswith("Error: "), what
        if "--debug" not in args:
            assert "Traceback" not in output, what


def test_scrub_hides_every_kind_of_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    values = [secret() for _ in PLACEMENTS]
    text = []
    for placement, value in zip(PLACEMENTS, values, strict=True):
        url, env = _placed(placement, 5432, value, tmp_path)
        for name, setting in env.items():
            monkeypatch.setenv(name, setting)
        monkeypatch.setattr(sys, "argv", [*sys.argv, url])
        text += [url, value, quote(value, safe=""), f"password={quote(value)}"]
    assert leaks(scrub(" and ".join(text)), *values) == []


def test_redact_hides_query_string_passwords() -> None:
    value = secret()
    for key in ("password", "sslpassword", "PASSWORD"):
        url = f"postgresql://u@127.0.0.1:1/x?ssl=disable&{key}={quote(value, safe='')}&a=b"
        shown = redact(url)
        assert leaks(shown, value) == [], key
        assert shown == f"postgresql://u@127.0.0.1:1/x?ssl=disable&{key}=***&a=b"


# -- the service ------------------------------------------------------------------------------


def test_a_service_whose_database_refuses_it_logs_once_and_shows_no_secret(
    postgres: Postgres, tmp_path: Path
) -> None:
    """A login the cluster does not know, its secrets given every way at once."""
    values = [secret() for _ in range(4)]
    port = make_url(postgres.primary_url).port or 5432
    primary, _ = _placed("password parameter", port, values[0], tmp_path)
    replica_port = make_url(postgres.replica_urls[0]).port or 5432
    replica, _ = _placed("userinfo", replica_port, values[1], tmp_path)
    analytics, _ = _placed("passfile", replica_port, values[2], tmp_path)
    env = {
        "DATABASE_URL": primary,
        "REPLICA_URLS": replica,
        "ANALYTICS_DATABASE_URL": analytics,
        "PGPASSWORD": values[3],
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "debug",
        **SECRET_ENV,
    }
    auth = {"Authorization": f"Bearer {TOKEN}"}
    outputs = []
    with running(tmp_path, env) as server, httpx.Client(base_url=server.base, timeout=30) as http:
        for _ in range(3):
            for path in (
                "/api/v1/users/1",
                "/api/v1/locations/1/revenue?start=2026-01-01&end=2026-01-31",
            ):
                response = http.get(path, headers=auth)
                assert response.status_code == 503, path
                assert response.headers["retry-after"], path
                outputs.append(response.text)
            response = http.get("/health/ready")
            deadline = time.monotonic() + 60  # "starting" until the first probe round ends
            while response.json().get("error") == "starting" and time.monotonic() < deadline:
                time.sleep(0.1)
                response = http.get("/health/ready")
            assert response.status_code == 503
            assert response.json()["primary"]["error"] == "login_refused"
            outputs.append(response.text)
            replicas = http.get("/health/replicas").json()
            assert [r["reason"] for r in replicas["replicas"]] == ["login_refused"]
            assert replicas["analytics"]["reason"] == "login_refused"
            outputs.append(str(replicas))
        outputs.append(http.get("/metrics").text)
    log = server.log.read_text(errors="replace")
    assert [leaks(text, *values, *SECRETS) for text in [*outputs, log]] == [[]] * (len(outputs) + 1)
    refusals = [line for line in log.splitlines() if "refuses the service" in line]
    # One line per database when its refusal began; none per request, no traceback.
    assert sorted(json.loads(line)["database"] for line in refusals) == [
        "analytics",
        "primary",
        "replica-0",
    ]
    assert "Traceback" not in log
    loud = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    loud = [line for line in loud if line["level"] in ("WARNING", "ERROR", "CRITICAL")]
    # The three refusals (the replica never joined rotation); nothing per request or probe.
    assert [line["message"] for line in loud] == ["database refuses the service's connections"] * 3


def test_a_service_that_cannot_reach_its_database_shows_no_secret(tmp_path: Path) -> None:
    values = [secret() for _ in range(3)]
    primary, _ = _placed("userinfo", pgcluster.free_port(), values[0], tmp_path)
    replica, _ = _placed("sslpassword parameter", pgcluster.free_port(), values[1], tmp_path)
    env = {
        "DATABASE_URL": primary,
        "REPLICA_URLS": replica,
        "PGPASSWORD": values[2],
        "CONNECT_TIMEOUT": "2",
        "LOG_FORMAT": "text",
        "LOG_LEVEL": "debug",
        **SECRET_ENV,
    }
    auth = {"Authorization": f"Bearer {TOKEN}"}
    outputs = []
    with running(tmp_path, env) as server, httpx.Client(base_url=server.base, timeout=30) as http:
        for path in ("/health/ready", "/health/db", "/health/replicas", "/metrics"):
            outputs.append(http.get(path).text)
        response = http.post("/api/v1/users", json={"name": "x"}, headers=auth)
        assert response.status_code in (422, 503)
        outputs.append(response.text)
        response = http.get("/api/v1/users/1", headers=auth)
        assert response.status_code == 503
        outputs.append(response.text)
    outputs.append(server.log.read_text(errors="replace"))
    assert [leaks(text, *values, *SECRETS) for text in outputs] == [[]] * len(outputs)


# -- the tests' own output --------------------------------------------------------------------

FAILING = """
from pathlib import Path

from tests import pgcluster
from tests.conftest import Postgres
from tests.leaks import secret
from tests.test_unavailable import Database

NODE = pgcluster.PgNode("p", Path("/nowhere"), 5, Path("/x"), "u", pgcluster.Hidden(PASSWORD))
PG = Postgres(NODE.url(), [NODE.url("other")])


def test_url_compared() -> None:
    assert NODE.url() == "postgresql+asyncpg://u:other@127.0.0.1:5/bookedbarber"


def test_password_compared() -> None:
    assert NODE.password == "something else"


def test_password_in_text() -> None:
    assert NODE.password not in f"a line that holds {NODE.password}"


def test_objects_shown(postgres_like: Postgres = PG) -> None:
    url = PG.with_database(PG.primary_url, "x")
    db = Database("x", "r", NODE.password, url, None)
    assert db is None and postgres_like is None


def test_generated_secret() -> None:
    value = secret()
    assert value == NODE.url()
"""


def test_a_failing_test_shows_no_test_password(tmp_path: Path) -> None:
    """Reprs, tracebacks, --showlocals and string diffs of a failing test: passwords as ***."""
    password = secret()
    test_file = tmp_path / "test_failing.py"
    test_file.write_text(FAILING.replace("PASSWORD", repr(str.__str__(password))))
    options = ["-p", "tests.conftest", "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml")]
    options += ["-vv", "-l", "--tb=long", "-p", "no:cacheprovider"]
    res = subprocess.run(
        [sys.executable, "-m", "pytest", *options, str(test_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = res.stdout + res.stderr
    assert res.returncode == 1
    assert re.findall(r"\d+ failed", output) == ["5 failed"]
    assert leaks(output, password) == []
    # The generated secret too: every test password starts with pw-.
    assert [m.start() for m in re.finditer("pw-", output)] == []
