"""The copy's record in the target (phase, options, findings): what a stopped copy resumes from."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from app.db.transfer import pg
from app.db.transfer.options import CopyOptions
from app.db.transfer.report import Finding, Report, TransferError
from app.db.transfer.schema import Table

if TYPE_CHECKING:
    import asyncpg


async def read_state(conn: asyncpg.Connection) -> dict[str, str] | None:
    if await conn.fetchval("SELECT to_regclass($1)", f"{pg.STATE}.state") is None:
        return None
    rows = await conn.fetch(f"SELECT key, value FROM {pg.STATE}.state")
    return {r["key"]: r["value"] for r in rows}


async def set_state(conn: asyncpg.Connection, key: str, value: str) -> None:
    await conn.execute(
        f"INSERT INTO {pg.STATE}.state VALUES ($1, $2) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        key,
        value,
    )


PROGRESS = (
    f"CREATE TABLE {pg.STATE}.progress (table_name text PRIMARY KEY, "
    "planned boolean NOT NULL DEFAULT false, clean jsonb, findings jsonb, last_key jsonb, "
    "rows bigint NOT NULL DEFAULT 0, done boolean NOT NULL DEFAULT false, "
    "digest numeric NOT NULL DEFAULT 0, staged_rows bigint, staged_digest numeric, "
    "keyed boolean NOT NULL DEFAULT false, key_findings jsonb)"
)


async def resume(
    conn: asyncpg.Connection,
    state: dict[str, str],
    tables: dict[str, Table],
    opts: CopyOptions,
    report: Report,
) -> bool:
    """Take back an unfinished copy's options and planned types; True if rules apply."""
    has_steps = await conn.fetchval(
        "SELECT 1 FROM pg_attribute WHERE attrelid = $1::regclass AND attname = 'keyed'",
        f"{pg.STATE}.progress",
    )
    if not has_steps:
        raise TransferError(
            "the target holds an unfinished copy begun by an earlier version of this tool; "
            f"drop schemas {pg.STAGING} and {pg.STATE} to start over"
        )
    opts.round_money, opts.strip_nul, opts.strict, rules = json.loads(state["options"])
    if state.get("phase") == "loaded":
        report.findings += [Finding(**f) for f in json.loads(state["findings"])]
    report.resumed = True
    # Types chosen by a table's probe live in its staged table.
    staged = await pg.reflect(conn, pg.STAGING)
    planned = await conn.fetch(f"SELECT table_name, clean FROM {pg.STATE}.progress WHERE planned")
    for row in planned:
        table = tables[row["table_name"]]
        clean = set(json.loads(row["clean"] or "[]"))
        for column in table.columns:
            column.clean = column.name in clean
            other = staged[table.name].column(column.name)
            if other is not None:
                column.type = other.type
    return bool(rules)
