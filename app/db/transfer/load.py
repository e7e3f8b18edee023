"""Rows converted for the other side, and the progress shown while they move."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from app.db.transfer.report import TransferError, describe
from app.db.transfer.types import Type, Unfit
from app.db.transfer.values import Options, to_python, to_sqlite


def convert_rows(
    table: str,
    types: list[tuple[str, Type]],
    batch: list[tuple[Any, ...]],
    nkeys: int,
    opts: Options,
    *,
    target: bool,
) -> list[tuple[Any, ...]]:
    """Each row's values (after its nkeys key values) as the target column takes them."""
    make = to_python if target else to_sqlite
    funcs = [make(t, opts) for _n, t in types]
    out: list[tuple[Any, ...]] = []
    for row in batch:
        values = list(row[nkeys:])
        for i, func in enumerate(funcs):
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
