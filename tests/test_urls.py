"""app.urls reads URLs the way SQLAlchemy's make_url does, and never shows a password."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from app.cli import main
from app.config import ConfigError, Settings, load_settings
from app.urls import (
    SERVED_SCHEMES,
    UnservedScheme,
    async_url,
    asyncpg_dsn,
    backend,
    database,
    redact,
)
from tests.leaks import leaks, secret

SQLITE = [
    "sqlite:///foo.db",
    "sqlite:////tmp/x.db",
    "sqlite+aiosqlite:///./data/x y.db",
    "sqlite:///a%20b.db",
    "sqlite:///x.db?mode=ro",
    "sqlite://",
    "sqlite:///:memory:",
    "sqlite:///a#b.db",
    "sqlite:///dir/with%3Fquestion.db",
]
POSTGRES = [
    "postgresql+asyncpg://u:p%40ss@h:5/db?ssl=require",
    "postgresql://u:p@[::1]:5432/db",
    "postgresql://u@h/db",
    "postgresql://u:@h/db",
    "postgresql://h/db",
    "postgresql+asyncpg://app:s3cr:et@127.0.0.1:6432/bookedbarber?ssl=disable&x=1",
    "postgresql://u@[::1]:5432/db",
]
# Not valid URLs (the password should be percent-encoded), yet read by SQLAlchemy: the
# password must still never be shown.
LOOSE = ["postgresql://u:pa/ss@h/db", "postgresql://u:p?ss@h/db", "postgresql://u:a:b@h:1/db"]


@pytest.mark.parametrize("url", SQLITE + POSTGRES)
def test_database_part_as_sqlalchemy_reads_it(url: str) -> None:
    assert database(url) == make_url(url).database


@pytest.mark.parametrize("url", SQLITE + POSTGRES + LOOSE)
def test_redact_hides_the_password_and_nothing_else(url: str) -> None:
    """Read back, the shown URL is the same URL with *** for its password (the rest is
    shown as written, where SQLAlchemy would quote it anew)."""
    parsed = make_url(url)
    expected = parsed.set(password="***") if parsed.password is not None else parsed
    assert make_url(redact(url)) == expected


def test_redact_hides_a_typed_password_and_the_password_parameters_after_it() -> None:
    """A password written into the URL as typed (every character a URL encodes, '@' and
    ':' among them), then a password parameter: neither is shown, the rest is as written."""
    value, key = secret(), secret("key")
    query = f"ssl=require&sslpassword={quote(key, safe='')}&x=1"
    shown = redact(f"postgresql://app:{value}@db.example:5432/bookedbarber?{query}")
    assert leaks(shown, value, key) == []
    assert (
        shown == "postgresql://app:***@db.example:5432/bookedbarber?ssl=require&sslpassword=***&x=1"
    )
    assert redact("postgresql://u:longer-than-three@h/db?password=x") == (
        "postgresql://u:***@h/db?password=***"
    )


def test_unreadable_url_is_not_shown() -> None:
    assert "secret" not in redact("secret-without-a-scheme")


@pytest.mark.parametrize("url", POSTGRES)
def test_asyncpg_dsn_keeps_every_part(url: str) -> None:
    expected = make_url(url).set(drivername="postgresql")
    if "ssl" in expected.query:
        query = dict(expected.query)
        query["sslmode"] = query.pop("ssl")
        expected = expected.set(query=query)
    assert make_url(asyncpg_dsn(url)) == expected


# -- the schemes the service serves -----------------------------------------------------------

SERVED = {
    "postgresql://u:p@h/db": "postgresql+asyncpg://u:p@h/db",
    "postgres://u:p@h/db": "postgresql+asyncpg://u:p@h/db",
    "postgres+asyncpg://u:p@h/db?sslmode=require": "postgresql+asyncpg://u:p@h/db?ssl=require",
    "postgresql+asyncpg://u:p@h/db": "postgresql+asyncpg://u:p@h/db",
    "sqlite:///x.db": "sqlite+aiosqlite:///x.db",
    "sqlite+aiosqlite:///x.db": "sqlite+aiosqlite:///x.db",
}
UNSERVED = [
    "mysql://u:{pw}@h/db",
    "mysql+pymysql://u:{pw}@h/db",
    "postgresql+psycopg2://u:{pw}@h/db",
    "postgresql+psycopg://u:{pw}@h/db",
    "oracle://u:{pw}@h/db",
    "sqlite+pysqlite:///{pw}.db",
]
ACCEPTED = (
    "postgresql://, postgresql+asyncpg://, postgres://, postgres+asyncpg://, sqlite://, "
    "sqlite+aiosqlite://"
)


@pytest.mark.parametrize("url", sorted(SERVED))
def test_served_schemes_get_their_asyncio_driver(url: str) -> None:
    assert make_url(Settings(database_url=url).primary_url) == make_url(SERVED[url])


@pytest.mark.parametrize("template", UNSERVED)
@pytest.mark.parametrize(
    "variable", ["DATABASE_URL", "REPLICA_URLS", "ANALYTICS_DATABASE_URL", "MIGRATION_TARGET_URL"]
)
def test_unserved_schemes_are_refused_in_one_line_naming_the_variable(
    template: str, variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = secret()
    url = template.format(pw=quote(password, safe=""))
    for name in ("DATABASE_URL", "REPLICA_URLS", "ANALYTICS_DATABASE_URL", "MIGRATION_TARGET_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv(variable, url)
    with pytest.raises(ConfigError) as refused:
        load_settings()
    line = str(refused.value)
    scheme = url.split("://")[0]
    only_postgres = variable != "DATABASE_URL"
    accepted = ACCEPTED.rsplit(", sqlite://", 1)[0] if only_postgres else ACCEPTED
    assert line == (
        f"invalid configuration: {variable} uses {scheme}://, which this service cannot "
        f"serve; it accepts {accepted}"
    )
    assert leaks(line, password) == []


def test_replicas_analytics_and_a_migration_target_are_postgresql(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in ("REPLICA_URLS", "ANALYTICS_DATABASE_URL", "MIGRATION_TARGET_URL"):
        monkeypatch.setenv("DATABASE_URL", "postgresql://u@h/db")
        monkeypatch.setenv(variable, "sqlite:///x.db")
        with pytest.raises(ConfigError, match=f"^invalid configuration: {variable} uses sqlite://"):
            load_settings()
        monkeypatch.delenv(variable)


def test_an_unserved_url_option_is_one_line() -> None:
    password = secret()
    url = f"mysql://u:{quote(password, safe='')}@h/db"
    result = CliRunner().invoke(main, ["db", "upgrade", "--url", url])
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: --url uses mysql://, which this service cannot serve; it accepts {ACCEPTED}"
    )
    assert leaks(result.output, password) == []


@pytest.mark.parametrize("command", ["copy", "verify"])
def test_copy_and_verify_refuse_an_unserved_url_as_serve_does(command: str, tmp_path: Path) -> None:
    password = secret()
    unserved = f"mysql://u:{quote(password, safe='')}@h/db"
    target = tmp_path / "x.db"
    for args, name in (
        ([unserved, f"sqlite:///{target}"], "SOURCE_URL"),
        ([f"sqlite:///{target}", unserved], "TARGET_URL"),
    ):
        result = CliRunner().invoke(main, ["db", command, *args])
        assert result.exit_code == 1
        assert result.output.strip() == (
            f"Error: {name} uses mysql://, which this service cannot serve; it accepts {ACCEPTED}"
        )
        assert leaks(result.output, password) == []
    assert not target.exists()


# -- the settings' URLs, as SQLAlchemy writes them ----------------------------------------------


def _sqlalchemy_async_url(url: str) -> tuple[str, str]:
    """What app.config's async_url returned when it used SQLAlchemy's URL class."""
    parsed = make_url(url)
    name = parsed.get_backend_name()
    if name == "postgresql" and parsed.drivername != "postgresql+asyncpg":
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif name == "sqlite" and parsed.drivername != "sqlite+aiosqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    if name == "postgresql" and "sslmode" in parsed.query:
        query = dict(parsed.query)
        query["ssl"] = query.pop("sslmode")
        parsed = parsed.set(query=query)
    return parsed.render_as_string(hide_password=False), name


@pytest.mark.parametrize("url", SQLITE + POSTGRES + LOOSE)
def test_async_url_as_sqlalchemy_writes_it(url: str) -> None:
    assert (async_url(url), backend(url)) == _sqlalchemy_async_url(url)


@settings(max_examples=3000, deadline=None)
@given(
    st.sampled_from(
        ["postgresql://", "postgresql+psycopg://", "sqlite:///", "sqlite://", "mysql+x://", ""]
    ),
    st.text(alphabet="ab:/@?&=%[]+#. 1_é\\", max_size=30),
)
def test_async_url_agrees_with_sqlalchemy_on_any_text(scheme: str, rest: str) -> None:
    """The same URL, or a refusal where SQLAlchemy refuses (unreadable, a bad port)."""
    url = scheme + rest
    try:
        expected: tuple[str, str] | None = _sqlalchemy_async_url(url)
    except Exception:
        expected = None
    if expected is None:  # unread, or read as a scheme the service does not serve
        with pytest.raises(ValueError, match=r"^(not a database URL|invalid literal|[\w+]+$)"):
            async_url(url)
    elif make_url(url).drivername.lower() not in SERVED_SCHEMES:
        with pytest.raises(UnservedScheme):
            async_url(url)
    else:
        assert (async_url(url), backend(url)) == expected
