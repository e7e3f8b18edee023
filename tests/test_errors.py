"""One taxonomy: real constraint failures of both backends, and the answer each gets."""

from __future__ import annotations

import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from app import errors
from app.db import errors as db_errors
from app.db.router import DatabaseRouter

ROLE = "client"
CASES = [
    # (statement, SQLSTATE, HTTP status, the generic detail)
    (
        "INSERT INTO users (email, email_key, name, unified_role, location_id, is_active, "
        f"trial_active) VALUES ('{{new}}', '{{new}}', 'x', '{ROLE}', 2000000000, true, false)",
        db_errors.FOREIGN_KEY_VIOLATION,
        422,
        "a referenced row does not exist",
    ),
    (
        "INSERT INTO users (email, email_key, name, unified_role, is_active, trial_active) "
        "VALUES ('{new}', '{new}', 'x', 'wizard', true, false)",
        db_errors.CHECK_VIOLATION,
        422,
        "a value is outside its allowed range",
    ),
    (
        "INSERT INTO users (email, email_key, name, unified_role, is_active, trial_active) "
        f"VALUES ('{{new}}', '{{new}}', NULL, '{ROLE}', true, false)",
        db_errors.NOT_NULL_VIOLATION,
        422,
        "a required value is missing",
    ),
    (
        "INSERT INTO users (email, email_key, name, unified_role, is_active, trial_active) "
        f"SELECT email, email_key, 'x', '{ROLE}', true, false FROM users "
        "WHERE email = '{email}'",
        db_errors.UNIQUE_VIOLATION,
        409,
        "a row with these values already exists",
    ),
]


async def _failure(router: DatabaseRouter, statement: str) -> sa_exc.IntegrityError:
    session = router.session("write")
    try:
        await session.execute(text(statement))
    except sa_exc.IntegrityError as exc:
        return exc
    finally:
        await session.rollback()
        await session.close()
    raise AssertionError(f"no constraint refused {statement}")


async def test_constraint_failures_are_named_and_mapped_once(app: FastAPI) -> None:
    router: DatabaseRouter = app.state.db
    session = router.session("write")
    email = f"taxonomy-{id(session)}@example.test"
    await session.execute(
        text(
            "INSERT INTO users (email, email_key, name, unified_role, is_active, trial_active) "
            f"VALUES ('{email}', '{email}', 'x', '{ROLE}', true, false)"
        )
    )
    await session.commit()
    await session.close()
    for statement, code, status, generic in CASES:
        new = f"new-{code}-{email}"
        exc = await _failure(router, statement.format(email=email, new=new))
        assert db_errors.violation(exc) == code, statement
        assert db_errors.failure(exc) == "constraint"
        error = errors.constraint_error(exc)
        assert (error.status, error.detail) == (status, generic)
        worded = errors.constraint_error(exc, foreign_key="F", unique="U", check="C", not_null="N")
        assert worded.detail in "FUCN"
        assert worded.status == status
        # The catch-all answers an unworded constraint failure as the client's error.
        response = errors.database_response(exc, wait=1)
        assert response.status_code == status
        body = orjson.loads(bytes(response.body))
        assert body["detail"] == generic
        assert email not in response.body.decode()


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_busy_and_unavailable_are_503s(app: FastAPI) -> None:
    router: DatabaseRouter = app.state.db
    session = router.session("write")
    try:
        await session.execute(text("SET LOCAL statement_timeout = 10"))
        with pytest.raises(sa_exc.DBAPIError) as raised:
            await session.execute(text("SELECT pg_sleep(1)"))
    finally:
        await session.rollback()
        await session.close()
    assert db_errors.failure(raised.value) == "busy"
    response = errors.database_response(raised.value, wait=2)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
