"""Secrets out of text that leaves the process: error lines, tracebacks.

Messages are written not to hold values in the first place; this is the second line
of defence for text made by libraries (a driver's error, an Alembic message): URL
passwords of any URL, and the values of every configured secret, are replaced.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import exc as sa_exc

from app.db.errors import is_connection_error, refusal, sqlstate
from app.masking import known_secrets, longest_first, mask


def scrub(text: str, secrets: Iterable[str] | None = None) -> str:
    """`text` as app/masking.py masks it: with `secrets`, else every known secret value."""
    return mask(text, known_secrets() if secrets is None else longest_first(secrets))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    head, items = lines[0], [line.strip() for line in lines[1:]]
    # A message that lists what to fix under its first line (a migration's refusal: the
    # accounts, the appointments), each item indented: the items on the same line.
    if head.endswith(":") and items and all(line.startswith("  ") for line in lines[1:]):
        head = f"{head} {'; '.join(items)}"
    return f"{type(exc).__name__}: {head}"


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
