"""Classify database failures by SQLSTATE and exception type, never by message text."""

from __future__ import annotations

from sqlalchemy import exc as sa_exc

# Class 08 (connection exception), 57P01-57P03 (shutdown, cannot connect now),
# 25006 (read-only transaction: we reached a standby that is not the primary).
_CONNECTION_SQLSTATES = ("08", "57P01", "57P02", "57P03", "25006")
UNIQUE_VIOLATION = "23505"
FOREIGN_KEY_VIOLATION = "23503"
CHECK_VIOLATION = "23514"
NOT_NULL_VIOLATION = "23502"
EXCLUSION_VIOLATION = "23P01"
SERIALIZATION_FAILURE = "40001"
DEADLOCK_DETECTED = "40P01"
LOCK_NOT_AVAILABLE = "55P03"
QUERY_CANCELED = "57014"  # statement_timeout


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


def sqlite_constraint(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    return type(orig).__name__ == "IntegrityError"


def is_connection_error(exc: BaseException) -> bool:
    """The database could not be reached or dropped the connection."""
    if isinstance(exc, sa_exc.TimeoutError):
        return False  # pool exhaustion: the database itself is fine
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, OSError | TimeoutError | ConnectionError):
        return True
    code = sqlstate(exc)
    if code is not None:
        return code.startswith(_CONNECTION_SQLSTATES)
    cause = exc.__cause__ or getattr(exc, "orig", None)
    return cause is not None and cause is not exc and is_connection_error(cause)
