"""Whether a PostgreSQL database holds this service's own schema (app/db/models.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.db.models import Base
from app.db.schema_head import head, root

if TYPE_CHECKING:
    import asyncpg

    from app.db.transfer.schema import Table

# The migrations' stamp: a source without it holds no schema of the migrations.
SCHEMA_STAMP = "alembic_version"


async def service_schema(conn: asyncpg.Connection, tables: dict[str, Table]) -> bool:
    """Whether the source holds this service's schema at the migrations' head: stamped
    with the head, and every table of the models there with the same columns (a file of
    another application may carry an Alembic stamp too)."""
    if SCHEMA_STAMP not in tables:
        return False
    stamps = [r[0] for r in await conn.fetch(f"SELECT version_num FROM {SCHEMA_STAMP}")]
    if stamps != [head(root() / "alembic" / "versions")]:
        return False
    for model in Base.metadata.sorted_tables:
        found = tables.get(model.name)
        if found is None or {c.name for c in found.columns} != set(model.columns.keys()):
            return False
    return True
