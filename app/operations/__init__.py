"""Use cases: one function per operation, the same whatever the backend and the door.

Routes and lanes parse and authorize, then call one of these. Each runs its statements
through a `Statements` handle (app/db/statements.py), states the rules only code can
hold, and turns outcomes into app.errors. Each answers a `Written`: the result, and the
write's consistency token for the X-Consistency-Token header.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Generic, NamedTuple, TypeVar

from app.db.errors import violation
from app.errors import AppError

T = TypeVar("T")


class Written(NamedTuple, Generic[T]):
    value: T
    token: str | None  # the write's consistency token; None without replicas or on SQLite
    created: bool = True  # False: an earlier call's result (an idempotent retry)


def refusal(
    exc: BaseException, answers: Mapping[str, Callable[[], AppError | None]]
) -> AppError | None:
    """The client's error when a constraint refused the write (`answers` by SQLSTATE).

    None when the failure is not one the operation words: the caller re-raises it and
    app/errors.py answers it (503 for an unavailable or frozen database, and so on).
    """
    answer = answers.get(violation(exc) or "")
    return answer() if answer is not None else None
