"""What a copy is asked to do, and where the two databases are."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from app.db.transfer import pg
from app.db.transfer.report import Finding, TransferError
from app.db.transfer.schema import Table
from app.urls import asyncpg_dsn, database, redact

if TYPE_CHECKING:
    import asyncpg


class Rules(Protocol):
    """Business invariants a service supplies for its own schema; the copier knows none."""

    def applies(self, target: dict[str, Table]) -> bool:
        """Whether the target's existing schema is the one these rules are about."""

    async def check(
        self, source: sqlite3.Connection, conn: asyncpg.Connection, schema: str
    ) -> list[Finding]:
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


def sqlite_path(url: str) -> Path:
    try:
        file = database(url)
    except ValueError:
        file = None
    if not file or file == ":memory:":
        raise TransferError(f"{redact(url)}: a SQLite file is needed")
    return Path(file)


def backend(url: str) -> str:
    """The kind of database a URL names: its scheme, without a +driver."""
    scheme = urlsplit(url).scheme
    if not scheme:
        raise TransferError("not a database URL")
    return scheme.split("+")[0]


async def pg_connect(url: str) -> asyncpg.Connection:
    try:
        return await pg.connect(asyncpg_dsn(url))
    except Exception as exc:
        raise TransferError(f"cannot reach {redact(url)}: {type(exc).__name__}") from exc
