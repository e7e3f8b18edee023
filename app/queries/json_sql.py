"""A Shape's JSON written by PostgreSQL: the SQL expression of a response body.

`json_object` reads the same pydantic model as the Python renderer (app/queries/shapes.py)
and writes, field by field in the model's order, SQL that builds the object as text:
compact, as FastAPI writes a model (`{"id":1,"name":"Ana"}`). PostgreSQL's
json_build_object and json_agg write `"id" : 1` and `}, \n {`, so objects and arrays are
put together as text, each value its cheapest way by its annotation: numbers and booleans
by their ::text, money by its serializer's scale and dates quoted, other text by
to_json (whose escapes are those of orjson). It writes the revenue's month
(app/queries/documents.py); the reads with timestamps are rendered from their rows, and a
model with one is refused here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal

from pydantic import PlainSerializer
from pydantic.fields import FieldInfo

from app.queries.shapes import Shape, nested_model


class Json(str):
    """An SQL expression whose text is already a JSON document (an object or an array)."""


class Plain(str):
    """An SQL expression whose ::text is its JSON: a number or a boolean (true, false)."""


class Quoted(str):
    """An SQL text expression that needs quotes and nothing escaped: times, money, dates."""


def _value(sql: str) -> str:
    # Each value its cheapest way: to_json (which looks up the type's output function on
    # every call) only for text that may need escapes.
    if isinstance(sql, Json):
        return f"coalesce({sql}, 'null')"
    if isinstance(sql, Plain):
        return f"coalesce(({sql})::text, 'null')"
    if isinstance(sql, Quoted):
        return f"coalesce('\"' || {sql} || '\"', 'null')"
    return f"coalesce(to_json({sql})::text, 'null')"


def obj(pairs: Iterable[tuple[str, str]]) -> Json:
    """A compact JSON object over (key, SQL expression) pairs, in their order."""
    parts: list[str] = []
    for i, (key, sql) in enumerate(pairs):
        assert key.isidentifier(), key
        parts += [f"'{',' if i else '{'}\"{key}\":'", _value(sql)]
    return Json("(" + " || ".join(parts) + " || '}')")


def array(element: Json, order: str) -> Json:
    """The aggregate: a compact JSON array of `element` in `order`, NULL over no rows."""
    return Json(f"'[' || string_agg({element}, ',' ORDER BY {order}) || ']'")


def _money_scale(info: FieldInfo) -> int | None:
    """The decimals a field's JSON serializer writes a Decimal with (money), else None."""
    for item in info.metadata:
        if isinstance(item, PlainSerializer) and item.when_used in ("json", "always"):
            written = str(item.func(Decimal(0)))  # type: ignore[call-arg]
            return len(written.partition(".")[2])
    return None


def _typed(info: FieldInfo, sql: str) -> str:
    """The field's value as _value writes its kind, read off the annotation."""
    scale = _money_scale(info)
    if scale is not None:
        return Quoted(f"round({sql}, {scale})::text")
    kinds = [a for a in (info.annotation, *getattr(info.annotation, "__args__", ())) if a]
    if dt.datetime in kinds:  # a Document with timestamps renders its rows (the user's, the week's)
        raise TypeError(f"{info.annotation}: PostgreSQL's JSON here writes no timestamps")
    if dt.date in kinds:
        return Quoted(f"({sql})::text")
    if int in kinds or bool in kinds:
        return Plain(sql)
    return sql


def json_object(
    shape: Shape, column: Callable[[str], str], apart: Mapping[str, Json] | None = None
) -> Json:
    """The object `shape` renders, from SQL: `column(name)` is the expression of the row's
    column `name` (as the Shape reads it, prefix included); `apart` the JSON of fields the
    Shape leaves out, placed in the model's order (those not given are omitted)."""
    nested = shape.nested()
    pairs: list[tuple[str, str]] = []
    for name, info in shape.model.model_fields.items():
        if name in shape.apart:
            if apart is not None and name in apart:
                pairs.append((name, apart[name]))
        elif name in nested:
            inner = json_object(nested[name], column)
            if nested_model(info.annotation)[1]:  # optional: null when its first column is
                first = column(nested[name].columns[0])
                inner = Json(f"CASE WHEN {first} IS NULL THEN NULL ELSE {inner} END")
            pairs.append((name, inner))
        else:
            pairs.append((name, _typed(info, column(shape.prefix + name))))
    return obj(pairs)


def in_subquery(name: str) -> str:
    """The column `name` of the rows statement wrapped as the subquery `r`."""
    return f"r.{name}"
