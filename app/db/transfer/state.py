"""The copy's record in the target (phase, options, findings): what a stopped copy resumes from."""

from __future__ import annotations

import json
from typing import Any

from app.db.transfer import pg
from app.db.transfer.options import CopyOptions
from app.db.transfer.report import Finding, Report
from app.db.transfer.schema import Table


async def read_state(conn: Any) -> dict[str, str] | None:
    if await conn.fetchval("SELECT to_regclass($1)", f"{pg.STATE}.state") is None:
        return None
    rows = await conn.fetch(f"SELECT key, value FROM {pg.STATE}.state")
    return {r["key"]: r["value"] for r in rows}


async def set_state(conn: Any, key: str, value: str) -> None:
    await conn.execute(
        f"INSERT INTO {pg.STATE}.state VALUES ($1, $2) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        key,
        value,
    )


async def resume(
    conn: Any, state: dict[str, str], tables: dict[str, Table], opts: CopyOptions, report: Report
) -> bool:
    """Take back an unfinished copy's options, findings and planned types; True if rules apply."""
    opts.round_money, opts.strip_nul, opts.strict, rules = json.loads(state["options"])
    report.findings[:0] = [Finding(**f) for f in json.loads(state["findings"])]
    report.resumed = True
    # A copy an earlier version began keeps no checksums: verify computes them afresh.
    await conn.execute(
        f"ALTER TABLE {pg.STATE}.progress ADD COLUMN IF NOT EXISTS digest numeric NOT NULL "
        "DEFAULT 0, ADD COLUMN IF NOT EXISTS staged_rows bigint, "
        "ADD COLUMN IF NOT EXISTS staged_digest numeric"
    )
    # Types chosen at planning time live in the staged tables.
    staged = await pg.reflect(conn, pg.STAGING)
    for name, table in tables.items():
        clean = set(json.loads(state.get(f"clean:{name}", "[]")))
        for column in table.columns:
            column.clean = column.name in clean
            other = staged[name].column(column.name)
            if other is not None:
                column.type = other.type
    return bool(rules)
