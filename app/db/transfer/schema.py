"""Tables as both sides describe them, and the order to load them in."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from app.db.transfer.types import Type

PG_NAME_BYTES = 63


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def shorten(name: str) -> str:
    """A PostgreSQL identifier for name: unchanged when it fits, else cut plus a stable hash."""
    raw = name.encode()
    if len(raw) <= PG_NAME_BYTES:
        return name
    digest = hashlib.sha1(raw, usedforsecurity=False).hexdigest()[:8]
    return raw[: PG_NAME_BYTES - 9].decode(errors="ignore") + "_" + digest


@dataclass
class Column:
    name: str
    type: Type
    not_null: bool = False
    has_default: bool = False
    declared: str = ""
    default: str | None = None  # the expression as its own side wrote it
    clean: bool = False  # the probe found every value fit as SQL wrote it (no Python needed)


@dataclass
class ForeignKey:
    columns: list[str]
    parent: str
    parent_columns: list[str]
    name: str | None = None
    on_delete: str | None = None


@dataclass
class Index:
    name: str
    columns: list[str]
    unique: bool
    definition: str | None = None  # PostgreSQL's own CREATE INDEX, when copied as is


@dataclass
class Table:
    name: str
    columns: list[Column]
    primary_key: list[str] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    indexes: list[Index] = field(default_factory=list)
    # SQLite rowid tables are read in rowid order; others in key order.
    rowid: bool = False
    skipped_indexes: list[str] = field(default_factory=list)
    uniques: list[Index] = field(default_factory=list)  # UNIQUE constraints, by name
    pk_name: str | None = None

    def column(self, name: str) -> Column | None:
        for column in self.columns:
            if column.name == name:
                return column
        lowered = name.lower()
        for column in self.columns:
            if column.name.lower() == lowered:
                return column
        return None


def load_order(tables: dict[str, Table]) -> tuple[list[str], list[list[str]]]:
    """Parents before children; each foreign-key cycle (self-references aside) reported."""
    order: list[str] = []
    state: dict[str, int] = {}
    cycles: list[list[str]] = []
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for fk in tables[name].foreign_keys:
            parent = fk.parent
            if parent == name or parent not in tables:
                continue
            if state.get(parent) == 1:
                cycles.append([*path[path.index(parent) :], parent])
            elif parent not in state:
                visit(parent)
        path.pop()
        state[name] = 2
        order.append(name)

    for name in sorted(tables):
        if name not in state:
            visit(name)
    return order, cycles
