"""db copy: SQLite -> PostgreSQL through a staging schema, or PostgreSQL -> SQLite back."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.db.transfer.options import CopyOptions, backend
from app.db.transfer.report import Report, TransferError
from app.db.transfer.to_pg import to_pg
from app.db.transfer.to_sqlite import to_sqlite

if TYPE_CHECKING:
    from rich.console import Console


async def copy(
    source_url: str, target_url: str, opts: CopyOptions, console: Console | None = None
) -> Report:
    if console is None:
        from rich.console import Console

        console = Console(stderr=True)
    pair = (backend(source_url), backend(target_url))
    if pair == ("sqlite", "postgresql"):
        return await to_pg(source_url, target_url, opts, console)
    if pair == ("postgresql", "sqlite"):
        return await to_sqlite(source_url, target_url, opts, console)
    raise TransferError("copy goes from SQLite to PostgreSQL or from PostgreSQL to SQLite")
