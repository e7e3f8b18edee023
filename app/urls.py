"""Database URLs read and shown without SQLAlchemy's URL class: `db copy` reads and shows
URLs before its workers start and in its closing line, and `serve` reads its settings
before it opens its port, so neither should wait for SQLAlchemy's import (see app/cli.py
for its cost). The rules are SQLAlchemy's (tests/test_urls.py holds them against it)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlencode, urlsplit, urlunsplit

# sqlalchemy.engine.url._parse_url's pattern.
_URL = re.compile(
    r"""
        (?P<name>[\w\+]+)://
        (?:
            (?P<username>[^:/]*)
            (?::(?P<password>[^@]*))?
        @)?
        (?:
            (?:
                \[(?P<ipv6host>[^/\?]+)\] |
                (?P<ipv4host>[^/:\?]+)
            )?
            (?::(?P<port>[^/\?]*))?
        )?
        (?:/(?P<database>[^\?]*))?
        (?:\?(?P<query>.*))?
    """,
    re.X,
)


# The schemes the service serves, and the driver each is served with.
SERVED_SCHEMES = {
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgres+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}
POSTGRES_SCHEMES = {k: v for k, v in SERVED_SCHEMES.items() if v == "postgresql+asyncpg"}
_SHOWABLE_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,40}")


class UnservedScheme(ValueError):
    """A database URL whose scheme the service cannot serve (mysql://, postgresql+psycopg2://)."""

    def __init__(self, scheme: str, accepted: Iterable[str] = SERVED_SCHEMES) -> None:
        super().__init__(scheme)
        self.scheme = scheme
        self.accepted = list(accepted)

    def told(self, name: str) -> str:
        """One line naming the setting and what it accepts; the scheme only if it is one."""
        shown = f"{self.scheme}://" if _SHOWABLE_SCHEME.fullmatch(self.scheme) else "a scheme"
        accepted = ", ".join(f"{s}://" for s in self.accepted)
        return f"{name} uses {shown}, which this service cannot serve; it accepts {accepted}"


def backend(url: str) -> str:
    """The backend name (`postgresql` of `postgresql+asyncpg://...`); ValueError if unread."""
    match = _URL.match(url)
    if match is None:
        raise ValueError("not a database URL")
    return match["name"].split("+")[0]


def async_url(url: str, served: Mapping[str, str] = SERVED_SCHEMES) -> str:
    """The URL with the asyncio driver of its scheme, written out as SQLAlchemy's
    `render_as_string(hide_password=False)` would; UnservedScheme for a scheme not in
    `served`, ValueError if unread."""
    match = _URL.match(url)
    if match is None:
        raise ValueError("not a database URL")
    driver = served.get(match["name"].lower())
    if driver is None:
        raise UnservedScheme(match["name"], served)
    name = driver.split("+")[0]
    text = driver + "://"
    if match["username"] is not None:
        text += quote(unquote(match["username"]), safe=" +")
        if match["password"] is not None:
            text += ":" + quote(unquote(match["password"]), safe=" +")
        text += "@"
    host = match["ipv4host"] or match["ipv6host"]
    if host is not None:
        text += f"[{host}]" if ":" in host else host
    if match["port"] is not None:
        text += f":{int(match['port'])}"  # int("") fails as SQLAlchemy's does
    if match["database"] is not None:
        text += "/" + quote(unquote(match["database"]), safe=" +/")
    return text + _query(match["query"], name)


def _query(text: str | None, name: str) -> str:
    query: dict[str, list[str]] = {}
    for key, value in parse_qsl(text or ""):
        query.setdefault(key, []).append(value)
    if name == "postgresql" and "sslmode" in query:
        # asyncpg calls it ssl; libpq's sslmode values are accepted unchanged.
        query["ssl"] = query.pop("sslmode")
    pairs = [f"{quote_plus(k)}={quote_plus(v)}" for k in sorted(query) for v in query[k]]
    return "?" + "&".join(pairs) if pairs else ""


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
        at = colon + 4  # where the '@' now is: the query is read after it
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


def password_and_query(url: str) -> tuple[str | None, list[tuple[str, str]]]:
    """A URL's password and its query's pairs, percent-decoded as make_url reads them;
    ValueError if unread."""
    match = _URL.match(url)
    if match is None:
        raise ValueError("not a database URL")
    password = match["password"]
    return (unquote(password) if password is not None else None), parse_qsl(match["query"] or "")
