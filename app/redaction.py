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
from pathlib import Path
from urllib.parse import quote, quote_plus

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from app.db.errors import is_connection_error, refusal, sqlstate
from app.urls import SECRET_PARAMETERS

HIDDEN = "***"
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][\w+.-]*://[^:/@\s]*:)[^@\s]*@")
# password=... and sslpassword=... in a query string or a key=value connection string.
_PARAMETER_PASSWORD = re.compile(r"(?i)(?P<head>\b(?:ssl)?password=)(?P<value>[^&\s]*)")
_URL_VARIABLES = ("DATABASE_URL", "REPLICA_URLS", "ANALYTICS_DATABASE_URL", "MIGRATION_TARGET_URL")
_PASSWORD_VARIABLES = ("POSTGRES_PASSWORD", "PGPASSWORD")


def _url_secrets(text: str) -> Iterable[str]:
    """The passwords of a URL or comma-separated URLs: userinfo, password parameters and
    the lines of a passfile parameter."""
    for part in {text, *text.split(",")}:
        try:
            url = make_url(part.strip())
        except Exception:  # noqa: S112 (not a URL: nothing to take from it)
            continue
        if url.password:
            yield str(url.password)
        for key, value in url.query.items():
            values = (value,) if isinstance(value, str) else value
            if key.lower() in SECRET_PARAMETERS:
                yield from values
            elif key.lower() == "passfile":
                for path in values:
                    yield from passfile_passwords(path)


def passfile_passwords(path: str | os.PathLike[str]) -> Iterable[str]:
    """The passwords a .pgpass file holds (host:port:database:user:password, \\ escapes)."""
    try:
        lines = Path(path).expanduser().read_text(errors="replace").splitlines()
    except OSError:
        return
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = re.split(r"(?<!\\):", line, maxsplit=4)
        if len(fields) == 5:
            yield fields[4].replace("\\:", ":").replace("\\\\", "\\")


def known_secrets() -> set[str]:
    """Every secret value this process was given, by environment or command line."""
    env = {k.upper(): v for k, v in os.environ.items()}
    found = {t.strip() for t in env.get("API_TOKENS", "").split(",")}
    found |= {env.get(name, "") for name in _PASSWORD_VARIABLES}
    for name in _URL_VARIABLES:
        found.update(_url_secrets(env.get(name, "")))
    # asyncpg reads the passfile PGPASSFILE names, else ~/.pgpass.
    found.update(passfile_passwords(env.get("PGPASSFILE") or "~/.pgpass"))
    for arg in sys.argv[1:]:
        found.update(_url_secrets(arg.partition("=")[2] if arg.startswith("--") else arg))
    found |= {form for s in found for form in (quote(s, safe=""), quote(s), quote_plus(s))}
    return {s for s in found if s}


def _hide_parameter(match: re.Match[str]) -> str:
    value = match["value"]
    if value == HIDDEN or value.startswith(f"{HIDDEN}:"):  # hidden already (app.urls.redact)
        return match[0]
    return f"{match['head']}{HIDDEN}"


def scrub(text: str, secrets: Iterable[str] | None = None) -> str:
    text = _URL_PASSWORD.sub(rf"\g<head>{HIDDEN}@", text)
    text = _PARAMETER_PASSWORD.sub(_hide_parameter, text)
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


def failure_line(exc: BaseException) -> str:
    """One line saying what went wrong, for a command's user; no secret in it."""
    if isinstance(exc, sa_exc.ArgumentError):
        line = "the database URL is not valid"
    elif (reason := refusal(exc)) is not None:
        code = sqlstate(exc)
        line = f"the database refuses this login: {reason} ({_first_line(_cause(exc))}"
        line += f", SQLSTATE {code})" if code else ")"
    elif is_connection_error(exc):
        line = f"cannot reach the database ({_first_line(_cause(exc))})"
    elif isinstance(exc, sa_exc.DBAPIError):
        code = sqlstate(exc)
        state = f", SQLSTATE {code}" if code else ""
        line = f"the database refused ({_first_line(_cause(exc))}{state})"
    else:
        line = _first_line(exc)
    return scrub(line)
