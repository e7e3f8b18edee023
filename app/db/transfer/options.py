"""What a copy is asked to do, and where the two databases are."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from app.db.transfer import pg
from app.db.transfer.report import Finding, TransferError
from app.db.transfer.schema import Table
from app.urls import redact

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

# SQLAlchemy (for its URL parser) is imported where a URL is read, not with this
# package: the copy's worker processes import the package and never read a URL
# (SQLAlchemy and the settings module cost 0.55 s of each worker's start).


def _url(url: str) -> URL:
    from sqlalchemy.engine import make_url

    return make_url(url)


class Rules(Protocol):
    """Business invariants a service supplies for its own schema; the copier knows none."""

    def applies(self, target: dict[str, Table]) -> bool:
        """Whether the target's existing schema is the one these rules are about."""

    async def check(self, source: sqlite3.Connection, conn: Any, schema: str) -> list[Finding]:
        """Failures found in the staged copy (schema) against the source."""


@dataclass
class CopyOptions:
    truncate: bool = False
    round_money: bool = False
    strip_nul: bool = False
    batch_size: int = 10_000
    strict: bool = False
    rules: Rules | None = None
    jobs: int = 2  # tables loaded and verified at once


def plain_pg(url: str) -> str:
    parsed = _url(url).set(drivername="postgresql")
    if "ssl" in parsed.query:
        query = dict(parsed.query)
        query["sslmode"] = query.pop("ssl")
        parsed = parsed.set(query=query)
    return parsed.render_as_string(hide_password=False)


def sqlite_path(url: str) -> Path:
    database = _url(url).database
    if not database or database == ":memory:":
        raise TransferError(f"{redact(url)}: a SQLite file is needed")
    return Path(database)


def backend(url: str) -> str:
    """The kind of database a URL names: its scheme, without a +driver."""
    scheme = urlsplit(url).scheme
    if not scheme:
        raise TransferError("not a database URL")
    return scheme.split("+")[0]


async def pg_connect(url: str) -> Any:
    try:
        return await pg.connect(plain_pg(url))
    except Exception as exc:
        raise TransferError(f"cannot reach {redact(url)}: {type(exc).__name__}") from exc
