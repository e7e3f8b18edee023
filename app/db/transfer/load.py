"""Rows converted for the other side, and the progress shown while they move."""

from __future__ import annotations

import gc
import sqlite3
from collections.abc import Callable, Iterator, Sequence, Set
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.db.transfer import fastpath, lite
from app.db.transfer.digest import all_fast
from app.db.transfer.report import TransferError, describe
from app.db.transfer.schema import Table, quote
from app.db.transfer.types import Type, Unfit
from app.db.transfer.values import Options, to_python, to_sqlite

if TYPE_CHECKING:
    from rich.console import Console


@contextmanager
def collector_paused() -> Iterator[None]:
    """The garbage collector off meanwhile (as it was, after): batches of rows hold no
    reference cycles, and its passes over each batch's hundred thousand objects cost a
    twentieth of a copy's CPU."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def convert_rows(
    table: str,
    types: list[tuple[str, Type]],
    batch: list[tuple[object, ...]],
    nkeys: int,
    opts: Options,
    *,
    target: bool,
    only: Sequence[int] | None = None,
) -> list[tuple[object, ...]]:
    """Each row's values (after its nkeys key values) as the target column takes them.

    only: the columns that need converting (by position); the others pass as they are."""
    make = to_python if target else to_sqlite
    wanted = range(len(types)) if only is None else only
    funcs = [(i, make(types[i][1], opts)) for i in wanted]
    if not funcs or not batch:
        return [tuple(row[nkeys:]) for row in batch]
    # A column at a time: the rows taken apart and put together again by zip(), each
    # converter called in one comprehension, with no list built per row.
    columns: list[Sequence[object]] = list(zip(*batch, strict=True))
    del columns[:nkeys]
    try:
        for i, func in funcs:
            columns[i] = [None if v is None else func(v) for v in columns[i]]
    except Unfit:
        pass  # found again row by row below, to name the first row that does not fit
    else:
        return list(zip(*columns, strict=True))
    out: list[tuple[object, ...]] = []
    for row in batch:
        values = list(row[nkeys:])
        for i, func in funcs:
            value = values[i]
            if value is None:
                continue
            try:
                values[i] = func(value)
            except Unfit as exc:
                key = row[0] if nkeys == 1 else row[:nkeys]
                raise TransferError(
                    f"{table}.{types[i][0]} at key {describe(key)}: value {describe(value)} "
                    f"does not fit {types[i][1].pg()}: {exc}"
                ) from None
        out.append(tuple(values))
    return out


@contextmanager
def progress(
    console: Console, totals: dict[str, int], done: dict[str, int]
) -> Iterator[Callable[[str, int], None]]:
    """A bar per table; yields advance(table, rows)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    ) as bars:
        tasks = {n: bars.add_task(n, total=totals[n], completed=done.get(n, 0)) for n in totals}

        def advance(name: str, rows: int) -> None:
            bars.update(tasks[name], advance=rows)

        yield advance


@dataclass
class Batch:
    """One key range of a SQLite table: COPY text SQLite built, and rows needing Python."""

    text: bytes
    fast_rows: int
    slow: list[tuple[object, ...]]  # (key values..., column values...)
    last: list[object] | None  # the range's last key; None when the table was empty past it
    done: bool
    digest: int = 0  # the sum of the fast rows' hashes (their digest text built by SQLite)


def read_split(
    conn: sqlite3.Connection,
    table: Table,
    types: list[tuple[str, Type]],
    after: list[object] | None,
    size: int,
    clean: Set[str] = frozenset(),
) -> Batch:
    """The next size rows after key `after`, split between the SQL and the Python path."""
    keys = lite.key_columns(table)
    key_sql = ", ".join("rowid" if k == "rowid" else quote(k) for k in keys)
    name = quote(table.name)
    marks = ", ".join("?" for _ in keys)
    start = f"({key_sql}) > ({marks})" if after is not None else "1"
    args = list(after or ())
    upper = conn.execute(
        f"SELECT {key_sql} FROM {name} WHERE {start} ORDER BY {key_sql} LIMIT 1 OFFSET ?",
        [*args, size - 1],
    ).fetchone()
    done = upper is None
    where = start if done else f"{start} AND ({key_sql}) <= ({marks})"
    bounds = args if done else [*args, *upper]
    condition = all_fast(types, clean)
    line = fastpath.joined([fastpath.copy_text(quote(c), t) for c, t in types], "\t")
    # The source's checksum comes from the same read: each row's digest text is built by
    # SQLite next to its COPY text (from the stored value, not from the COPY text), as
    # bytes: COPY takes them as they are, and so does the hash.
    texts = fastpath.joined([fastpath.digest_sqlite(quote(c), t) for c, t in types], fastpath.SEP)
    # One row back: the range's COPY text joined by SQLite, and the hashes summed as the
    # digest texts come (no row crosses into Python on its own).
    fast_rows, body, summed = conn.execute(
        f"SELECT count(*), CAST(group_concat(CAST({line} AS BLOB), x'0a') AS BLOB), "
        f"bb_sum(CAST({texts} AS BLOB)) FROM {name} WHERE {where} AND {condition}",
        bounds,
    ).fetchone()
    digest = int(summed.split()[1]) if summed else 0  # None: no fast row
    cols = ", ".join(quote(c) for c, _t in types)
    slow = []
    if done or fast_rows < size:  # a full range of fast rows has no slow ones
        slow = conn.execute(
            f"SELECT {key_sql}, {cols} FROM {name} WHERE {where} AND NOT ({condition}) "
            f"ORDER BY {key_sql}",
            bounds,
        ).fetchall()
    if done:
        last_row = conn.execute(
            f"SELECT {key_sql} FROM {name} ORDER BY {key_sql} DESC LIMIT 1"
        ).fetchone()
        last = list(last_row) if last_row else None
    else:
        last = list(upper)
    text = body + b"\n" if body else b""
    return Batch(text, fast_rows, slow, last, done, digest)
