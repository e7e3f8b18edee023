"""Whether a database takes the service's connections: told once per change, not per request.

A database that refuses this login (wrong role or password, no such database, no
CONNECT privilege) refuses every new connection of every path alike, the ORM's and the
lanes' (both connect through the engine's pool), so the refusal is seen where each
connection is made: the engine's do_connect. There it becomes `Refused` (answered 503
by app/errors.py, told as its reason by the health probes), and the first refusal and
the first connection taken after it are each logged once.

While a database refuses, a new connection is tried at most once per
REFUSED_RETRY_SECONDS; the others fail at once with the last refusal. A busy service
would otherwise send PostgreSQL a login (and its log a FATAL line) per request.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import event
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry

from app.db.errors import Refusal, Refused, refusal, sqlstate

log = logging.getLogger(__name__)

REFUSED_RETRY_SECONDS = 1.0


class Access:
    """One database's answer to the service's last connection attempt."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.refused: Refusal | None = None
        self.tried = False  # a connection attempt was answered, either way
        self._sqlstate: str | None = None
        self._refused_at = 0.0

    def state(self) -> dict[str, str | None]:
        status = "refused" if self.refused else "connected" if self.tried else "not_tried"
        return {"status": status, "reason": self.refused}

    def refuse(self, reason: Refusal, code: str | None) -> None:
        if reason != self.refused:
            log.error(
                "database refuses the service's connections",
                extra={"database": self.database, "reason": reason, "sqlstate": code},
            )
        self.refused, self.tried, self._sqlstate = reason, True, code
        self._refused_at = time.monotonic()

    def refusing(self) -> Refused | None:
        """The last refusal, while it is too recent to ask the database again; None lets
        the caller ask (and holds off the others for another period meanwhile)."""
        if self.refused is None:
            return None
        now = time.monotonic()
        if now - self._refused_at >= REFUSED_RETRY_SECONDS:
            self._refused_at = now
            return None
        return Refused(self.refused, self._sqlstate)

    def accept(self) -> None:
        if self.refused is not None:
            log.warning(
                "database takes the service's connections again",
                extra={"database": self.database, "was": self.refused},
            )
        self.refused, self.tried = None, True

    def watch(self, engine: AsyncEngine) -> None:
        """Every new connection of `engine` (and of its execution_options copies)."""
        if engine.dialect.name != "postgresql":
            return  # SQLite has no logins to refuse

        def connect(
            dialect: Dialect,
            _record: ConnectionPoolEntry,
            cargs: list[object],
            cparams: dict[str, object],
        ) -> DBAPIConnection:
            if (refused := self.refusing()) is not None:
                raise refused
            try:
                connection = dialect.connect(*cargs, **cparams)
            except Exception as exc:
                reason = refusal(exc, connecting=True)
                if reason is None:
                    # Down or unreachable now, which is reported as such: no refusal to repeat.
                    self.refused = None
                    raise
                code = sqlstate(exc)
                self.refuse(reason, code)
                raise Refused(reason, code) from exc
            self.accept()
            return connection

        event.listen(engine.sync_engine, "do_connect", connect)
