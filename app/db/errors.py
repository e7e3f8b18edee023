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

Failure = Literal["pool_timeout", "connection", "busy", "constraint"]


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
    if is_connection_error(exc):
        return "connection"
    if isinstance(exc, sa_exc.IntegrityError):
        return "constraint"
    if sqlstate(exc) in BUSY_SQLSTATES:
        return "busy"
    return None
