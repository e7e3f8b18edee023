"""app.urls reads URLs the way SQLAlchemy's make_url does, and never shows a password."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from app.urls import async_url, asyncpg_dsn, backend, database, redact

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
    if expected is None:
        with pytest.raises(ValueError, match=r"^(not a database URL|invalid literal)"):
            async_url(url)
    else:
        assert (async_url(url), backend(url)) == expected
