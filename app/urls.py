"""Database URLs read and shown without SQLAlchemy's URL class: `db copy` reads and shows
URLs on its critical path, where importing SQLAlchemy took 0.57 s at the start and again
at the end. The rules are SQLAlchemy's (tests/test_urls.py holds them against it)."""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

# Query parameters that carry a password (asyncpg and libpq read both); a passfile's
# path is no secret, its contents are never read here.
SECRET_PARAMETERS = frozenset({"password", "sslpassword"})


def redact(url: str) -> str:
    """The URL with its passwords shown as ***; a URL that cannot be read is not shown.

    The password is whatever lies between the first ':' after '//' and the last '@' (as
    SQLAlchemy reads it, it may hold '/', '?' or ':'), and the value of each password
    parameter in the query string after it; erring, this hides too much."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        return "<a URL that cannot be read>"
    at, colon = rest.rfind("@"), rest.find(":")
    if 0 <= colon < at:
        rest = f"{rest[:colon]}:***{rest[at:]}"
    head, question, query = rest[max(at, 0) :].partition("?")
    if question:
        shown = []
        for pair in query.split("&"):
            key, equals, _value = pair.partition("=")
            secret = equals and unquote(key).strip().lower() in SECRET_PARAMETERS
            shown.append(f"{key}=***" if secret else pair)
        rest = f"{rest[: max(at, 0)]}{head}?{'&'.join(shown)}"
    return f"{scheme}://{rest}"


def database(url: str) -> str | None:
    """The database part (for SQLite, the file), percent-decoded; None when there is none."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        raise ValueError("not a database URL")
    _netloc, slash, path = rest.partition("/")
    return unquote(path.split("?", 1)[0]) if slash else None


def asyncpg_dsn(url: str) -> str:
    """A postgresql[+driver]:// URL as asyncpg reads it: no driver, sslmode for ssl."""
    parts = urlsplit(url)
    query = [("sslmode" if k == "ssl" else k, v) for k, v in parse_qsl(parts.query, True)]
    return urlunsplit(parts._replace(scheme="postgresql", query=urlencode(query)))
