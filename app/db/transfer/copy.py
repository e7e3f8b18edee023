"""db copy: SQLite -> PostgreSQL through a staging schema, and PostgreSQL -> SQLite back."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table as RichTable
from sqlalchemy.engine import make_url

from app.config import redact
from app.db.transfer import lite, pg
from app.db.transfer.schema import Column, Table, load_order, quote
from app.db.transfer.types import Options, Type, Unfit, to_python, to_sqlite
from app.db.transfer.verify import Check, Side, compare

ACTIVE = ("pending", "confirmed", "in_progress")
LITE_PROGRESS = "_bookedbarber_transfer_progress"


class TransferError(Exception):
    """Refused or failed; the message names what and where, never a password."""


@dataclass
class CopyOptions:
    truncate: bool = False
    round_money: bool = False
    strip_nul: bool = False
    batch_size: int = 10_000


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    actions: dict[str, str] = field(default_factory=dict)
    rows_copied: int = 0
    kept_schema: str | None = None

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def _plain_pg(url: str) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if "ssl" in parsed.query:
        query = dict(parsed.query)
        query["sslmode"] = query.pop("ssl")
        parsed = parsed.set(query=query)
    return parsed.render_as_string(hide_password=False)


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise TransferError(f"{redact(url)}: a SQLite file is needed")
    return Path(database)


def _backend(url: str) -> str:
    try:
        return make_url(url).get_backend_name()
    except Exception as exc:
        raise TransferError("not a database URL") from exc


async def _pg_connect(url: str) -> Any:
    try:
        return await pg.connect(_plain_pg(url))
    except Exception as exc:
        raise TransferError(f"cannot reach {redact(url)}: {type(exc).__name__}") from exc


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _key(row: tuple[Any, ...], nkeys: int) -> str:
    key = row[:nkeys]
    return _describe(key[0] if nkeys == 1 else key)


def _converters(
    table: str, pairs: list[tuple[str, Type]], make: Callable[[Type, Options], Any], opts: Options
) -> Callable[[tuple[Any, ...], int], tuple[Any, ...]]:
    funcs = [make(t, opts) for _n, t in pairs]

    def convert(row: tuple[Any, ...], nkeys: int) -> tuple[Any, ...]:
        out: list[Any] = []
        for i, func in enumerate(funcs):
            value = row[nkeys + i]
            if value is None:
                out.append(None)
                continue
            try:
                out.append(func(value))
            except Unfit as exc:
                raise TransferError(
                    f"{table}.{pairs[i][0]} at key {_key(row, nkeys)}: value "
                    f"{_describe(value)} does not fit {pairs[i][1].pg()}: {exc}"
                ) from None
        return tuple(out)

    return convert


def _json_key(values: tuple[Any, ...]) -> str:
    return json.dumps([v if not isinstance(v, bytes) else v.hex() for v in values])


@contextmanager
def _progress(console: Console) -> Iterator[Progress]:
    with Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        yield progress


# ----------------------------------------------------------------- planning


def _widen(conn: sqlite3.Connection, table: Table, opts: CopyOptions, report: Report) -> list[str]:
    """Choose target types that hold every value exactly; return refusals."""
    problems: list[str] = []
    stats = lite.column_stats(conn, table)
    for column in table.columns:
        s = stats[column.name]
        t = column.type
        q = quote(column.name)
        new: Type | None = None
        if s.nul and not opts.strip_nul:
            keys = lite.sample_keys(conn, table, f"instr(CAST({q} AS BLOB), x'00') > 0")
            problems.append(
                f"{table.name}.{column.name}: {s.nul} values hold NUL bytes, which PostgreSQL "
                f"text cannot store (keys {keys}); --strip-nul stores them without"
            )
        elif s.nul:
            keys = lite.sample_keys(conn, table, f"instr(CAST({q} AS BLOB), x'00') > 0")
            report.notes.append(
                f"{table.name}.{column.name}: NUL bytes removed from {s.nul} values (keys {keys})"
            )
        if t.kind == "int8":
            if s.non_integer_text or s.blob:
                new = Type("text")
            elif s.fractional:
                new = Type("numeric")
        elif t.kind == "numeric" and t.precision is not None and s.unfit_numeric:
            if not opts.round_money:
                new = Type("numeric")
        elif t.kind == "varchar" and t.length is not None and s.max_length > t.length:
            new = Type("text")
        elif t.kind == "any":
            if s.text or s.blob:
                new = Type("bytea") if not s.text else Type("text")
            else:
                new = Type("numeric") if s.fractional or not s.integer else Type("int8")
            if s.text and s.blob:
                problems.append(f"{table.name}.{column.name}: mixes text and binary values")
        if new is not None and new != t:
            if t.kind != "any":
                report.notes.append(
                    f"{table.name}.{column.name}: declared {column.declared}, holds values that "
                    f"do not fit {t.pg()}; created as {new.pg()} to keep them exact"
                )
            column.type = new
    return problems


def _fill_problems(
    conn: sqlite3.Connection, source: Table, target: Table, opts: CopyOptions
) -> list[str]:
    """Filling an existing table: every source column needs a home and every value must fit."""
    problems: list[str] = []
    for column in source.columns:
        if target.column(column.name) is None:
            problems.append(f"{source.name}.{column.name}: the target table has no such column")
    for column in target.columns:
        if column.not_null and not column.has_default and source.column(column.name) is None:
            problems.append(
                f"{source.name}.{column.name}: NOT NULL in the target, missing in the source"
            )
    stats = lite.column_stats(conn, source)
    for column in source.columns:
        other = target.column(column.name)
        if other is None:
            continue
        t = other.type
        s = stats[column.name]
        q = quote(column.name)
        where = None
        if t.kind == "varchar" and t.length is not None and s.max_length > t.length:
            where = f"length({q}) > {t.length}"
        elif t.kind in ("int2", "int4", "int8") and s.fractional:
            where = f"typeof({q}) = 'real' AND {q} <> CAST({q} AS INTEGER)"
        elif t.kind == "numeric" and t.precision is not None and not opts.round_money:
            scale = t.scale or 0
            where = (
                f"typeof({q}) IN ('integer', 'real') AND (round({q}, {scale}) <> {q} "
                f"OR abs({q}) >= 1e{t.precision - scale})"
            )
        if where is None:
            continue
        keys = lite.sample_keys(conn, source, where, 1)
        if keys:
            cols = ", ".join(quote(k) for k in source.primary_key or ["rowid"])
            value = conn.execute(
                f"SELECT {q} FROM {quote(source.name)} WHERE ({cols}) = ("
                + ", ".join("?" for _ in (source.primary_key or ["rowid"]))
                + ")",
                keys[0] if isinstance(keys[0], tuple) else (keys[0],),
            ).fetchone()[0]
            problems.append(
                f"{source.name}.{column.name} at key {_describe(keys[0])}: value "
                f"{_describe(value)} does not fit {t.pg()} (the existing target column)"
            )
    return problems


# ------------------------------------------------------- SQLite -> PostgreSQL


async def _state(conn: Any) -> dict[str, str] | None:
    exists = await conn.fetchval("SELECT to_regclass($1)", f"{pg.STATE}.state")
    if exists is None:
        return None
    rows = await conn.fetch(f"SELECT key, value FROM {pg.STATE}.state")
    return {r["key"]: r["value"] for r in rows}


async def _set_state(conn: Any, key: str, value: str) -> None:
    await conn.execute(
        f"INSERT INTO {pg.STATE}.state VALUES ($1, $2) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        key,
        value,
    )


async def _plan_pg(
    src: sqlite3.Connection,
    conn: Any,
    tables: dict[str, Table],
    opts: CopyOptions,
    report: Report,
    source_id: str,
) -> None:
    public = await pg.reflect(conn, "public")
    problems: list[str] = []
    for name, table in tables.items():
        existing = public.get(name)
        if existing is None:
            problems += _widen(src, table, opts, report)
            continue
        problems += _fill_problems(src, table, existing, opts)
        if not opts.truncate and await pg.count(conn, "public", name):
            problems.append(
                f"{name}: the target table already has rows (--truncate replaces them; "
                "the current schema is kept)"
            )
    for name, table in tables.items():
        if name not in public:
            continue
        for column in table.columns:
            stats = None
            if column.type.kind == "text":
                stats = lite.column_stats(src, table)[column.name]
            if stats and stats.nul and not opts.strip_nul:
                problems.append(f"{name}.{column.name}: values hold NUL bytes (--strip-nul)")
    if problems:
        raise TransferError("refused before copying any row:\n  " + "\n  ".join(problems))
    async with conn.transaction():
        await conn.execute(f"DROP SCHEMA IF EXISTS {pg.STAGING} CASCADE")
        await conn.execute(f"DROP SCHEMA IF EXISTS {pg.STATE} CASCADE")
        await conn.execute(f"CREATE SCHEMA {pg.STAGING}")
        await conn.execute(f"CREATE SCHEMA {pg.STATE}")
        await conn.execute(f"CREATE TABLE {pg.STATE}.state (key text PRIMARY KEY, value text)")
        await conn.execute(
            f"CREATE TABLE {pg.STATE}.progress (table_name text PRIMARY KEY, "
            "last_key jsonb, rows bigint NOT NULL DEFAULT 0, done boolean NOT NULL DEFAULT false)"
        )
        for name, table in tables.items():
            if name in public:
                await pg.stage_like(conn, name)
                action = "filled"
            else:
                await pg.create_table(conn, pg.STAGING, table)
                action = "created"
            await _set_state(conn, f"action:{name}", action)
            await conn.execute(f"INSERT INTO {pg.STATE}.progress (table_name) VALUES ($1)", name)
        # Tables only the target has (alembic_version, say) come along unchanged.
        for name in public:
            if name not in tables:
                await pg.stage_like(conn, name)
                await conn.execute(
                    f"INSERT INTO {pg.STAGING}.{quote(name)} SELECT * FROM public.{quote(name)}"
                )
                await _set_state(conn, f"action:{name}", "kept")
        await _set_state(conn, "source", source_id)
        await _set_state(conn, "options", json.dumps([opts.round_money, opts.strip_nul]))
        await _set_state(conn, "notes", json.dumps(report.notes))
        await _set_state(conn, "phase", "load")


async def _load_pg(
    src: sqlite3.Connection,
    conn: Any,
    tables: dict[str, Table],
    order: list[str],
    opts: CopyOptions,
    console: Console,
    report: Report,
) -> None:
    staged = await pg.reflect(conn, pg.STAGING)
    progress_rows = {
        r["table_name"]: r for r in await conn.fetch(f"SELECT * FROM {pg.STATE}.progress")
    }
    options = Options(opts.round_money, opts.strip_nul)
    with _progress(console) as bars:
        tasks = {
            name: bars.add_task(
                name,
                total=lite.count(src, name),
                completed=progress_rows[name]["rows"],
            )
            for name in order
        }
        for name in order:
            state = progress_rows[name]
            if state["done"]:
                continue
            table = tables[name]
            target = staged[name]
            columns = [c.name for c in table.columns]
            pairs = []
            for c in table.columns:
                other = target.column(c.name)
                assert other is not None
                pairs.append((other.name, other.type))
            convert = _converters(name, pairs, to_python, options)
            nkeys = len(lite.key_columns(table))
            after = json.loads(state["last_key"]) if state["last_key"] else None
            total = int(state["rows"])
            while True:
                batch = lite.read_batch(src, table, columns, after, opts.batch_size)
                records = [convert(row, nkeys) for row in batch]
                done = len(batch) < opts.batch_size
                last = batch[-1][:nkeys] if batch else None
                async with conn.transaction():
                    if records:
                        await conn.copy_records_to_table(
                            name,
                            records=records,
                            columns=[p[0] for p in pairs],
                            schema_name=pg.STAGING,
                        )
                    await conn.execute(
                        f"UPDATE {pg.STATE}.progress SET last_key = coalesce($2::jsonb, last_key), "
                        "rows = rows + $3, done = $4 WHERE table_name = $1",
                        name,
                        _json_key(last) if last else None,
                        len(records),
                        done,
                    )
                total += len(records)
                report.rows_copied += len(records)
                bars.update(tasks[name], completed=total)
                if done:
                    break
                after = list(batch[-1][:nkeys])
    if options.rounded:
        report.notes.append(f"rounded {len(options.rounded)} values (--round-money)")


async def _finish_pg(
    conn: Any, tables: dict[str, Table], actions: dict[str, str], report: Report
) -> None:
    """Keys, constraints and indexes after the data, as one transaction; then sequences."""
    staged = await pg.reflect(conn, pg.STAGING)
    async with conn.transaction():
        filled = [n for n, a in actions.items() if a != "created"]
        definitions = {n: await pg.public_definitions(conn, n) for n in filled}
        public = await pg.reflect(conn, "public")
        await conn.execute(f"SET LOCAL search_path = {pg.STAGING}, public")
        # Keys first, everywhere; foreign keys once every table has its keys.
        for foreign in (False, True):
            for name, (constraints, indexes) in definitions.items():
                fks = {fk.name: fk for fk in public[name].foreign_keys}
                for contype, cname, definition in constraints:
                    if (contype == "f") != foreign:
                        continue
                    suffix = ""
                    fk = fks.get(cname)
                    if fk is not None:
                        suffix = await _orphan_note(conn, staged[name], fk, report)
                    await conn.execute(
                        f"ALTER TABLE {pg.STAGING}.{quote(name)} ADD CONSTRAINT {quote(cname)} "
                        f"{definition}{suffix}"
                    )
                if not foreign:
                    for definition in indexes:
                        await conn.execute(definition)
        for name, action in actions.items():
            if action != "created":
                continue
            table = tables[name]
            qualified = f"{pg.STAGING}.{quote(name)}"
            if table.primary_key:
                cols = ", ".join(quote(c) for c in table.primary_key)
                await conn.execute(f"ALTER TABLE {qualified} ADD PRIMARY KEY ({cols})")
            for index in table.indexes:
                unique = "UNIQUE " if index.unique else ""
                await conn.execute(
                    f"CREATE {unique}INDEX {quote(index.name)} ON {qualified} "
                    f"({', '.join(quote(c) for c in index.columns)})"
                )
            for skipped in table.skipped_indexes:
                report.notes.append(
                    f"{name}: index {skipped} (partial or on expressions) not recreated"
                )
        for name, action in actions.items():
            if action != "created":
                continue
            for i, fk in enumerate(tables[name].foreign_keys):
                if fk.parent not in staged:
                    report.notes.append(f"{name}: foreign key to missing table {fk.parent} skipped")
                    continue
                suffix = await _orphan_note(conn, staged[name], fk, report)
                on_delete = (
                    f" ON DELETE {fk.on_delete}" if fk.on_delete not in (None, "NO ACTION") else ""
                )
                await conn.execute(
                    f"ALTER TABLE {pg.STAGING}.{quote(name)} ADD CONSTRAINT "
                    f"{quote(f'fk_{name}_{i}')[:63]} FOREIGN KEY "
                    f"({', '.join(quote(c) for c in fk.columns)}) REFERENCES "
                    f"{pg.STAGING}.{quote(fk.parent)} "
                    f"({', '.join(quote(c) for c in fk.parent_columns)}){on_delete}{suffix}"
                )
        for table in staged.values():
            await pg.reset_sequences(conn, pg.STAGING, table)
        await _set_state(conn, "phase", "loaded")
        await _set_state(conn, "notes", json.dumps(report.notes))


async def _orphan_note(conn: Any, table: Table, fk: Any, report: Report) -> str:
    n, sample = await pg.orphan_rows(conn, pg.STAGING, table, fk, table.primary_key)
    if not n:
        return ""
    report.notes.append(
        f"{table.name} ({', '.join(fk.columns)}) -> {fk.parent}: {n} orphaned rows kept "
        f"(keys {sample}); constraint added NOT VALID, so it guards new rows; clean them "
        "and run VALIDATE CONSTRAINT"
    )
    return " NOT VALID"


async def _invariants(src: sqlite3.Connection, conn: Any, names: set[str]) -> list[str]:
    """This service's own rules, checked on the staged data before it goes live."""
    failures: list[str] = []
    s = pg.STAGING
    if "appointments" in names:
        overlaps = await conn.fetch(
            f"""SELECT a.id, b.id FROM {s}.appointments a JOIN {s}.appointments b
            ON a.barber_id = b.barber_id AND a.id < b.id
            AND a.start_time < b.end_time AND b.start_time < a.end_time
            WHERE a.status = ANY($1) AND b.status = ANY($1) LIMIT 5""",
            list(ACTIVE),
        )
        if overlaps:
            failures.append(
                f"appointments: overlapping active bookings {[tuple(r) for r in overlaps]}"
            )
    if {"appointments", "users"} <= names:
        missing = await conn.fetch(
            f"SELECT a.id FROM {s}.appointments a LEFT JOIN {s}.users u ON u.id = a.user_id "
            "WHERE u.id IS NULL ORDER BY a.id LIMIT 5"
        )
        if missing:
            failures.append(f"appointments: user missing for ids {[r[0] for r in missing]}")
    if "payments" in names:
        source: dict[Any, Decimal] = {}
        convert = to_python(Type("numeric"), Options())
        for appointment, amount in src.execute(
            "SELECT appointment_id, amount FROM payments WHERE appointment_id IS NOT NULL"
        ):
            source[appointment] = source.get(appointment, Decimal(0)) + convert(amount)
        target = {
            r[0]: r[1]
            for r in await conn.fetch(
                f"SELECT appointment_id, sum(amount) FROM {s}.payments "
                "WHERE appointment_id IS NOT NULL GROUP BY 1"
            )
        }
        wrong = sorted(k for k in source.keys() | target.keys() if source.get(k) != target.get(k))
        if wrong:
            failures.append(f"payments: totals differ for appointments {wrong[:5]}")
    return failures


async def _swap(conn: Any, report: Report) -> None:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    kept = f"public_before_{stamp}"
    async with conn.transaction():
        extensions = await conn.fetch(
            "SELECT e.extname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
            "WHERE n.nspname = 'public'"
        )
        await conn.execute(f"ALTER SCHEMA public RENAME TO {kept}")
        await conn.execute(f"ALTER SCHEMA {pg.STAGING} RENAME TO public")
        for row in extensions:
            await conn.execute(f"ALTER EXTENSION {quote(row[0])} SET SCHEMA public")
        await conn.execute(f"DROP SCHEMA {pg.STATE} CASCADE")
    report.kept_schema = kept


async def _to_pg(source_url: str, target_url: str, opts: CopyOptions, console: Console) -> Report:
    path = _sqlite_path(source_url)
    if not path.exists():
        raise TransferError(f"no SQLite database at {path}")
    conn = await _pg_connect(target_url)
    src = lite.connect(path)
    report = Report()
    try:
        tables = lite.reflect(src)
        if await conn.fetchval("SELECT to_regclass('public.alembic_version')") is not None:
            # The target's migrations made its schema: its revision stays.
            tables.pop("alembic_version", None)
        order, cycles = load_order(tables)
        for cycle in cycles:
            report.notes.append(
                f"foreign-key cycle {' -> '.join(cycle)}: constraints added after the load"
            )
        source_id = str(path.resolve())
        state = await _state(conn)
        if state is not None and state.get("phase") in ("load", "loaded"):
            if state.get("source") != source_id:
                raise TransferError(
                    "the target holds an unfinished copy of another source; "
                    f"drop schemas {pg.STAGING} and {pg.STATE} to start over"
                )
            opts.round_money, opts.strip_nul = json.loads(state["options"])
            report.notes[:0] = json.loads(state.get("notes", "[]"))
            console.print(f"resuming the copy into {redact(target_url)}")
            # Types chosen at planning time live in the staged tables.
            staged = await pg.reflect(conn, pg.STAGING)
            for name, table in tables.items():
                for column in table.columns:
                    other = staged[name].column(column.name)
                    if other is not None:
                        column.type = other.type
        else:
            await _plan_pg(src, conn, tables, opts, report, source_id)
            state = await _state(conn)
            assert state is not None
        actions = {k[7:]: v for k, v in state.items() if k.startswith("action:")}
        report.actions = actions
        if state.get("phase") == "load":
            await _load_pg(src, conn, tables, order, opts, console, report)
            await _finish_pg(conn, tables, actions, report)
        staged = await pg.reflect(conn, pg.STAGING)
        options = Options(opts.round_money, opts.strip_nul)
        for name in order:
            report.checks.append(
                await compare(
                    Side(sqlite=src),
                    tables[name],
                    Side(pg=conn, schema=pg.STAGING),
                    staged[name],
                    options,
                )
            )
        failures = await _invariants(src, conn, set(tables))
        report.notes += failures
        if not report.ok or failures:
            raise _failed(report, f"the staged copy stays in schema {pg.STAGING}")
        await _swap(conn, report)
        return report
    finally:
        src.close()
        await conn.close()


def _failed(report: Report, where: str) -> TransferError:
    error = TransferError(f"verification failed; {where}")
    error.report = report  # type: ignore[attr-defined]
    return error


# ------------------------------------------------------- PostgreSQL -> SQLite


async def _to_sqlite(
    source_url: str, target_url: str, opts: CopyOptions, console: Console
) -> Report:
    path = _sqlite_path(target_url)
    conn = await _pg_connect(source_url)
    dst = lite.connect(path, create=True)
    report = Report()
    try:
        tables = await pg.reflect(conn, "public")
        order, _cycles = load_order(tables)
        resuming = (
            dst.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (LITE_PROGRESS,)).fetchone()
            is not None
        )
        existing = lite.reflect(dst)
        if not resuming:
            problems = []
            for name in order:
                if name in existing:
                    for column in tables[name].columns:
                        if existing[name].column(column.name) is None:
                            problems.append(
                                f"{name}.{column.name}: the target table has no such column"
                            )
                    if not opts.truncate and lite.count(dst, name):
                        problems.append(f"{name}: the target table already has rows (--truncate)")
            if problems:
                raise TransferError("refused before copying any row:\n  " + "\n  ".join(problems))
            dst.execute("BEGIN IMMEDIATE")
            dst.execute(
                f"CREATE TABLE {LITE_PROGRESS} (table_name TEXT PRIMARY KEY, last_key TEXT, "
                "rows INTEGER NOT NULL DEFAULT 0, done INTEGER NOT NULL DEFAULT 0)"
            )
            for name in order:
                if name in existing:
                    dst.execute(f"DELETE FROM {quote(name)}")
                    report.actions[name] = "filled"
                else:
                    lite.create_table(dst, tables[name])
                    report.actions[name] = "created"
                dst.execute(f"INSERT INTO {LITE_PROGRESS} (table_name) VALUES (?)", (name,))
            dst.execute("COMMIT")
            existing = lite.reflect(dst)
        else:
            console.print(f"resuming the copy into {path}")
        await _load_sqlite(conn, dst, tables, existing, order, opts, console, report)
        for name in order:
            table = tables[name]
            lite.create_indexes(dst, tables[name])
            report.notes += [
                f"{name}: index {i} (partial or on expressions) not recreated"
                for i in table.skipped_indexes
            ]
        for (child, parent), (n, sample) in lite.orphans(dst).items():
            report.notes.append(f"{child} -> {parent}: {n} orphaned rows kept (rowids {sample})")
        options = Options(opts.round_money, True)
        final = lite.reflect(dst)
        for name in order:
            report.checks.append(
                await compare(
                    Side(pg=conn, schema="public"),
                    tables[name],
                    Side(sqlite=dst),
                    final[name],
                    options,
                )
            )
        dst.execute(f"DROP TABLE {LITE_PROGRESS}")
        if not report.ok:
            raise _failed(report, f"the copy stays in {path}")
        return report
    finally:
        dst.close()
        await conn.close()


async def _load_sqlite(
    conn: Any,
    dst: sqlite3.Connection,
    tables: dict[str, Table],
    existing: dict[str, Table],
    order: list[str],
    opts: CopyOptions,
    console: Console,
    report: Report,
) -> None:
    options = Options(opts.round_money, opts.strip_nul)
    state = {
        r[0]: r
        for r in dst.execute(f"SELECT table_name, last_key, rows, done FROM {LITE_PROGRESS}")
    }
    with _progress(console) as bars:
        tasks = {
            name: bars.add_task(
                name, total=await pg.count(conn, "public", name), completed=state[name][2]
            )
            for name in order
        }
        for name in order:
            _n, last_key, rows, done = state[name]
            if done:
                continue
            table = tables[name]
            target = existing[name]
            pairs: list[tuple[str, Type]] = []
            for column in table.columns:
                other: Column | None = target.column(column.name)
                assert other is not None
                # The typed side decides: a PostgreSQL numeric goes to SQLite as text digits.
                pairs.append((other.name, column.type))
            convert = _converters(name, pairs, to_sqlite, options)
            nkeys = len(pg.key_columns(table))
            after = json.loads(last_key) if last_key else None
            columns = [c.name for c in table.columns]
            insert = (
                f"INSERT INTO {quote(name)} ({', '.join(quote(p[0]) for p in pairs)}) "
                f"VALUES ({', '.join('?' for _ in pairs)})"
            )
            while True:
                batch = await pg.read_batch(conn, "public", table, columns, after, opts.batch_size)
                finished = len(batch) < opts.batch_size
                last = batch[-1][:nkeys] if batch else None
                dst.execute("BEGIN IMMEDIATE")
                try:
                    dst.executemany(insert, (convert(row, nkeys) for row in batch))
                    dst.execute(
                        f"UPDATE {LITE_PROGRESS} SET last_key = coalesce(?, last_key), "
                        "rows = rows + ?, done = ? WHERE table_name = ?",
                        (_json_key(last) if last else None, len(batch), int(finished), name),
                    )
                    dst.execute("COMMIT")
                except BaseException:
                    dst.execute("ROLLBACK")
                    raise
                rows += len(batch)
                report.rows_copied += len(batch)
                bars.update(tasks[name], completed=rows)
                if finished:
                    break
                after = list(batch[-1][:nkeys])


# ------------------------------------------------------------------ entry points


async def copy(
    source_url: str, target_url: str, opts: CopyOptions, console: Console | None = None
) -> Report:
    console = console or Console(stderr=True)
    pair = (_backend(source_url), _backend(target_url))
    if pair == ("sqlite", "postgresql"):
        return await _to_pg(source_url, target_url, opts, console)
    if pair == ("postgresql", "sqlite"):
        return await _to_sqlite(source_url, target_url, opts, console)
    raise TransferError("copy goes from SQLite to PostgreSQL or from PostgreSQL to SQLite")


async def verify(source_url: str, target_url: str, opts: CopyOptions | None = None) -> Report:
    opts = opts or CopyOptions()
    options = Options(opts.round_money, True)
    pair = (_backend(source_url), _backend(target_url))
    if "sqlite" not in pair or "postgresql" not in pair:
        raise TransferError("verify compares a SQLite database with a PostgreSQL one")
    lite_url, pg_url = (source_url, target_url) if pair[0] == "sqlite" else (target_url, source_url)
    path = _sqlite_path(lite_url)
    if not path.exists():
        raise TransferError(f"no SQLite database at {path}")
    conn = await _pg_connect(pg_url)
    db = lite.connect(path)
    report = Report()
    try:
        lite_tables = lite.reflect(db)
        pg_tables = await pg.reflect(conn, "public")
        for name in sorted(lite_tables.keys() | pg_tables.keys()):
            if name not in lite_tables or name not in pg_tables:
                report.notes.append(f"{name}: exists on one side only")
                report.checks.append(Check(name, -1, -1, 0, 1))
                continue
            a, b = Side(sqlite=db), Side(pg=conn)
            ta, tb = lite_tables[name], pg_tables[name]
            if pair[0] == "sqlite":
                report.checks.append(await compare(a, ta, b, tb, options))
            else:
                report.checks.append(await compare(b, tb, a, ta, options))
        return report
    finally:
        db.close()
        await conn.close()


def render(report: Report, console: Console) -> None:
    table = RichTable(title="transfer report")
    for heading in ("table", "action", "source rows", "target rows", "checksum", "differing keys"):
        table.add_column(heading)
    for check in report.checks:
        table.add_row(
            check.table,
            report.actions.get(check.table, ""),
            f"{check.source_rows:,}",
            f"{check.target_rows:,}",
            "[green]match[/]" if check.ok else "[red]DIFFERS[/]",
            ", ".join(check.differing_keys),
        )
    console.print(table)
    for check in report.checks:
        if not check.ok:
            keys = "; ".join(check.differing_keys) or "(none sampled)"
            console.print(
                f"- {check.table}: {check.source_rows:,} rows vs {check.target_rows:,}, "
                f"content differs at keys: {keys}",
                markup=False,
                highlight=False,
            )
    for note in report.notes:
        console.print(f"- {note}", markup=False, highlight=False)
    if report.kept_schema:
        console.print(
            f"the previous schema is kept as {report.kept_schema}; to switch back: "
            f"BEGIN; ALTER SCHEMA public RENAME TO public_copied; "
            f"ALTER SCHEMA {report.kept_schema} RENAME TO public; COMMIT;",
            markup=False,
        )
