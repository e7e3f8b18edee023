"""Response bodies from rows, shaped by the pydantic models of app/schemas.py alone.

A `Shape` is read off a model once: its fields in their order, each value taken from the
row's column of that name (behind a prefix for a nested model), converted as the model's
own JSON serializer says (money: the field's PlainSerializer), a nested model from its
prefixed columns (null when optional and its first column is NULL). `select_list` writes
the same columns for a statement, so a statement and its body cannot disagree on a field.
`body` writes the JSON as FastAPI writes the model: compact, UTF-8, timestamps in UTC
with `Z` and microseconds only when not zero.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import orjson
from pydantic import BaseModel, PlainSerializer

from app.db.statements import Statement

Row = Mapping[str, object]
Converter = Callable[[object], object]


def nested_model(annotation: object) -> tuple[type[BaseModel] | None, bool]:
    """(the model a field holds, whether it may be None); (None, _) for a plain value."""
    optional = False
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        annotation = args[0] if len(args) == 1 else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, optional
    return None, optional


def _is_list(annotation: object) -> bool:
    return any(typing.get_origin(arg) is list for arg in (annotation, *typing.get_args(annotation)))


def _converter(metadata: Sequence[object]) -> Converter | None:
    for item in metadata:
        if isinstance(item, PlainSerializer) and item.when_used in ("json", "always"):
            func: Converter = item.func  # type: ignore[assignment]
            return func
    return None


@dataclass(frozen=True)
class _Field:
    key: str
    column: str
    convert: Converter | None
    nested: Shape | None
    optional: bool


class Shape:
    """The JSON object of `model` from a row's columns named `prefix` + field name.

    Fields holding lists of models, and those named in `apart`, are left out (`apart`):
    each comes from a statement of its own and is added by the caller under its key.
    """

    def __init__(
        self, model: type[BaseModel], prefix: str = "", apart: Collection[str] = ()
    ) -> None:
        self.model = model
        self.prefix = prefix
        fields: list[_Field] = []
        lists: list[str] = []
        for name, info in model.model_fields.items():
            if name in apart or _is_list(info.annotation):
                lists.append(name)
                continue
            nested, optional = nested_model(info.annotation)
            shape = Shape(nested, f"{prefix}{name}__") if nested is not None else None
            convert = _converter(info.metadata)
            fields.append(_Field(name, prefix + name, convert, shape, optional))
        self._fields = tuple(fields)
        self.apart = tuple(lists)
        # The per-row work, flattened: one dict display in field order (a nested field's
        # slot holds its first column until it is replaced), then the few conversions.
        self._pairs = tuple(
            (f.key, f.nested.columns[0] if f.nested is not None else f.column) for f in fields
        )
        self._converted = tuple(
            (f.key, f.convert) for f in fields if f.convert is not None and f.nested is None
        )
        self._nested = tuple((f.key, f.nested, f.optional) for f in fields if f.nested is not None)

    @property
    def columns(self) -> tuple[str, ...]:
        """The row's column names this shape reads, nested ones included, in field order."""
        names: list[str] = []
        for field in self._fields:
            names += field.nested.columns if field.nested is not None else [field.column]
        return tuple(names)

    def fields(self) -> tuple[str, ...]:
        """The model's own (not nested) field names, in order."""
        return tuple(f.key for f in self._fields if f.nested is None)

    def nested(self) -> dict[str, Shape]:
        return {f.key: f.nested for f in self._fields if f.nested is not None}

    def __call__(self, row: Row) -> dict[str, object]:
        """The object of this row's columns."""
        out = {key: row[column] for key, column in self._pairs}
        for key, convert in self._converted:
            value = out[key]
            if value is not None:
                out[key] = convert(value)
        for key, shape, optional in self._nested:
            # An optional nested model (a LEFT JOIN's) is absent when its first column is.
            out[key] = None if optional and out[key] is None else shape(row)
        return out

    def rows(self, rows: Sequence[Row]) -> list[dict[str, object]]:
        return [self(row) for row in rows]


def select_list(alias: str, fields: Sequence[str], prefix: str = "") -> str:
    """`alias.field AS prefix+field, ...`: the columns a Shape with `prefix` reads."""
    if not prefix:
        return ", ".join(f"{alias}.{name}" for name in fields)
    return ", ".join(f"{alias}.{name} AS {prefix}{name}" for name in fields)


@dataclass(frozen=True)
class Document:
    """A response body read in one call of the handle (app/db/statements.py `document`).

    `rows`: the read's rows statement, `render` the body the Shapes write from its rows
    and the read's arguments (None: no parent), `parent` (its first argument) asked for
    only when there are no rows. `json`, where PostgreSQL writes the body for less of its
    own CPU than the rows cost it (the revenue's days; README, Performance): its statement
    whose one column `body` is the whole JSON text (NULL where the parent does not exist),
    written from the same Shapes by app/queries/json_sql.py. Without one, PostgreSQL
    returns the rows and the Shapes write the body, as on SQLite.
    """

    rows: Statement
    render: Callable[[Sequence[Row], tuple[object, ...]], bytes | None]
    parent: Statement | None = None
    json: Statement | None = None


def body(document: object) -> bytes:
    """The document as the API writes it (FastAPI's compact JSON of the model)."""
    return orjson.dumps(document, option=orjson.OPT_UTC_Z)
