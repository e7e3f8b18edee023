"""Secrets out of text that leaves the process: error lines, tracebacks.

Messages are written not to hold values in the first place; this is the second line
of defence for text made by libraries (a driver's error, an Alembic message): URL
passwords of any URL, and the values of every configured secret, are replaced.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from urllib.parse import quote

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from app.db.errors import is_connection_error, sqlstate

HIDDEN = "***"
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][\w+.-]*://[^:/@\s]*:)[^@\s]*@")
_URL_VARIABLES = ("DATABASE_URL", "REPLICA_URLS", "ANALYTICS_DATABASE_URL")


def _url_passwords(text: str) -> Iterable[str]:
    for part in text.split(","):
        try:
            password = make_url(part.strip()).password
        except Exception:  # noqa: S112 (not a URL: nothing to take from it)
            continue
        if password:
            yield str(password)


def known_secrets() -> set[str]:
    """Every secret value this process was given, by environment or command line."""
    env = {k.upper(): v for k, v in os.environ.items()}
    found = {t.strip() for t in env.get("API_TOKENS", "").split(",")}
    found.add(env.get("POSTGRES_PASSWORD", ""))
    for name in _URL_VARIABLES:
        found.update(_url_passwords(env.get(name, "")))
    for arg in sys.argv[1:]:
        found.update(_url_passwords(arg.removeprefix("--url=")))
    found |= {quote(s, safe="") for s in found}
    return {s for s in found if s}


def scrub(text: str, secrets: Iterable[str] | None = None) -> str:
    text = _URL_PASSWORD.sub(rf"\g<head>{HIDDEN}@", text)
    for secret in sorted(known_secrets() if secrets is None else secrets, key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    return text


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _cause(exc: BaseException) -> BaseException:
    """The driver's own exception under SQLAlchemy's and its adapter's wrappers."""
    seen = {id(exc)}
    while True:
        inner = getattr(exc, "orig", None) or exc.__cause__
        if not isinstance(inner, BaseException) or id(inner) in seen:
            return exc
        seen.add(id(inner))
        exc = inner


def failure(exc: BaseException) -> str:
    """One line saying what went wrong, for a command's user; no secret in it."""
    if isinstance(exc, sa_exc.ArgumentError):
        line = "the database URL is not valid"
    elif is_connection_error(exc):
        line = f"cannot reach the database ({_first_line(_cause(exc))})"
    elif isinstance(exc, sa_exc.DBAPIError):
        code = sqlstate(exc)
        state = f", SQLSTATE {code}" if code else ""
        line = f"the database refused ({_first_line(_cause(exc))}{state})"
    else:
        line = _first_line(exc)
    return scrub(line)
