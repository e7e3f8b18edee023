"""Classify database failures by SQLSTATE and exception type, never by message text.

The one taxonomy of the service's database errors: app/errors.py turns each kind
into an HTTP answer, repositories ask `violation()` which constraint said no.
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy import exc as sa_exc

UNIQUE_VIOLATION = "23505"
FOREIGN_KEY_VIOLATION = "23503"
CHECK_VIOLATION = "23514"
NOT_NULL_VIOLATION = "23502"
EXCLUSION_VIOLATION = "23P01"
SERIALIZATION_FAILURE = "40001"
DEADLOCK_DETECTED = "40P01"
LOCK_NOT_AVAILABLE = "55P03"
QUERY_CANCELED = "57014"  # statement_timeout
INVALID_PASSWORD = "28P01"  # noqa: S105 (a SQLSTATE)
INVALID_AUTHORIZATION = "28000"  # no pg_hba.conf entry, a role that may not log in
INVALID_CATALOG_NAME = "3D000"  # no such database
INSUFFICIENT_PRIVILEGE = "42501"
# The database cannot serve now: class 08 (connection exception), 57P01-57P03 (shutdown,
# cannot connect now), 55000 (the database is not accepting connections: ALLOW_CONNECTIONS
# false; also "recovery is in progress" on a standby), 53300 (too many connections),
# 25006 (read-only transaction: we reached a standby that is not the primary).
_UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "55000", "53300", "25006")
# Worth a retry a moment later: timeouts, lock waits, lost races.
BUSY_SQLSTATES = frozenset(
    {QUERY_CANCELED, LOCK_NOT_AVAILABLE, SERIALIZATION_FAILURE, DEADLOCK_DETECTED}
)

# SQLite's extended result codes for constraint failures, mapped to SQLSTATEs.
_SQLITE_CONSTRAINTS = {
    275: CHECK_VIOLATION,  # SQLITE_CONSTRAINT_CHECK
    787: FOREIGN_KEY_VIOLATION,  # SQLITE_CONSTRAINT_FOREIGNKEY
    1299: NOT_NULL_VIOLATION,  # SQLITE_CONSTRAINT_NOTNULL
    1555: UNIQUE_VIOLATION,  # SQLITE_CONSTRAINT_PRIMARYKEY
    2067: UNIQUE_VIOLATION,  # SQLITE_CONSTRAINT_UNIQUE
}

Failure = Literal["pool_timeout", "refused", "connection", "busy", "constraint"]
# The database will not take this login: fixed only by whoever runs it (a password, a
# grant, a database to create), not by a retry a moment later.
Refusal = Literal["login_refused", "no_such_database", "no_connect_privilege"]
REFUSALS: tuple[Refusal, ...] = ("login_refused", "no_such_database", "no_connect_privilege")
_REFUSED_SQLSTATES: dict[str, Refusal] = {
    INVALID_PASSWORD: "login_refused",
    INVALID_AUTHORIZATION: "login_refused",
    INVALID_CATALOG_NAME: "no_such_database",
}


class Refused(Exception):
    """A database refused the service's connection (raised by app/db/access.py, the
    driver's own exception as its cause). Its text is the reason, nothing more."""

    def __init__(self, reason: Refusal, code: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sqlstate = code


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a DBAPI error, looked up through SQLAlchemy's and the adapter's wrappers."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(code, str) and code:
            return code
        current = getattr(current, "orig", None) or current.__cause__
    return None


def constraint_name(exc: BaseException) -> str | None:
    """The name of the constraint a DBAPI error reports (asyncpg's constraint_name)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        name = getattr(current, "constraint_name", None)
        if isinstance(name, str) and name:
            return name
        current = getattr(current, "orig", None) or current.__cause__
    return None


def violation(exc: BaseException) -> str | None:
    """The SQLSTATE of a constraint failure on either backend."""
    code = sqlstate(exc)
    if code is not None:
        return code
    orig = getattr(exc, "orig", None)
    return _SQLITE_CONSTRAINTS.get(getattr(orig, "sqlite_errorcode", -1))


def refusal(exc: BaseException, *, connecting: bool = False) -> Refusal | None:
    """Why the database refuses the service's connections, or None when it does not.

    42501 (no CONNECT privilege on the database) counts only for an exception raised
    while `connecting`: on a statement it is a missing grant, a bug of ours."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, Refused):
            return current.reason
        current = getattr(current, "orig", None) or current.__cause__
    code = sqlstate(exc)
    if code is None:
        return None
    if connecting and code == INSUFFICIENT_PRIVILEGE:
        return "no_connect_privilege"
    return _REFUSED_SQLSTATES.get(code)


def is_connection_error(exc: BaseException) -> bool:
    """The database cannot serve now: unreachable, refusing connections, or it dropped ours."""
    if isinstance(exc, sa_exc.TimeoutError):
        return False  # pool exhaustion: the database itself is fine
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, OSError | TimeoutError | ConnectionError):
        return True
    code = sqlstate(exc)
    if code is not None:
        return code.startswith(_UNAVAILABLE_SQLSTATES)
    cause = exc.__cause__ or getattr(exc, "orig", None)
    return cause is not None and cause is not exc and is_connection_error(cause)


def failure(exc: BaseException) -> Failure | None:
    """What kind of database failure `exc` is, or None when it is none the service expects."""
    if isinstance(exc, sa_exc.TimeoutError):
        return "pool_timeout"
    if refusal(exc) is not None:
        return "refused"
    if is_connection_error(exc):
        return "connection"
    if isinstance(exc, sa_exc.IntegrityError):
        return "constraint"
    if sqlstate(exc) in BUSY_SQLSTATES:
        return "busy"
    return None
