"""Schema changes are refused while a live sync runs: the other side would never get them."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from app.db.live.sides import LiveDatabase
from app.urls import redact


class SchemaChangeRefused(RuntimeError):
    pass


async def _sync_revision(url: str) -> tuple[bool, str | None]:
    """(whether `url` is one side of a live sync, its schema revision)."""
    side = LiveDatabase(url)
    try:
        if not await side.installed():
            return False, None
        async with side.engine.connect() as conn:
            return True, await conn.scalar(text("SELECT version_num FROM alembic_version"))
    finally:
        await side.dispose()


def refuse_during_sync(url: str, target: str | None) -> None:
    """Raise when `url` is one side of a live sync and would move to another revision.

    `target` is the revision id the change ends at; the same revision (serve's upgrade
    to head at start-up) passes. Called outside any running event loop.
    """
    synced, current = asyncio.run(_sync_revision(url))
    if synced and current != target:
        raise SchemaChangeRefused(
            f"{redact(url)} is one side of a live sync (db sync): a schema change now would "
            "reach only this side and break the copy. Finish with db cutover, stop the sync, "
            "run bookedbarber db sync --remove, then migrate both databases."
        )
