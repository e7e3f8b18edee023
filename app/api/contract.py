"""The strict request contract of every route, enforced generically.

A query string names only the route's declared parameters, and each scalar one at most
once; anything else is a 422 naming the parameter. A path id is decimal ASCII digits
(PathId; a minus sign is read, for its bound to refuse), as is an integer in a query
string (DECIMAL); a JSON body that does not parse is a 422 like any other (read_json); a
method the path does not serve is a 405 whose Allow lists every method it does
(ContractRoute). HEAD works wherever GET does.

Derived from what a route declares (its dependant's query parameters, query models
expanded), never from a hand-kept list, so it holds on every route and follows any
change of a signature. The hot reads' lane asks the same question of its query
models (app/api/reads.py) and hands every request that fails it on to FastAPI.
"""

from __future__ import annotations

import types
import weakref
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from fastapi import Path, Request, Response
from fastapi._compat import ModelField
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, BeforeValidator
from pydantic_core import PydanticCustomError
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import Receive, Scope, Send

from app.guards import read_json
from app.schemas import INT64_MAX


def _decimal_digits(value: object) -> object:
    # int() and pydantic's lax mode also read " 1", "+1", "1_0" and other scripts' digits;
    # a minus sign is kept for the bound to name ("-1": greater_than_equal).
    if isinstance(value, str):
        digits = value.removeprefix("-")
        if not (digits.isascii() and digits.isdigit()):
            raise PydanticCustomError(
                "int_parsing",
                "Input should be a valid integer, unable to parse string as an integer",
            )
    return value


# An integer in a path or a query string is decimal ASCII digits (a minus sign allowed), else
# 422.
DECIMAL = BeforeValidator(_decimal_digits)
# A row's id in a path: decimal ASCII digits, 1..2**63-1, else 422 (an id that is not
# one is bad input, README "API"); the read lane's path pattern takes the same digits.
PathId = Annotated[int, Path(ge=1, le=INT64_MAX), DECIMAL]

# RFC 9110's methods in its order, for a stable Allow header.
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(scope: Scope) -> str:
    """Every method some route serves on this path, HEAD wherever GET (app/edges.py serves it)."""
    methods: set[str] = set()
    # The app's routes with those of included routers, as FastAPI's OpenAPI walks them.
    for route in iter_route_contexts(scope["router"].routes):
        if route.methods and route.matches(scope)[0] is not Match.NONE:
            methods |= route.methods
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods, key=lambda m: (_METHODS.index(m) if m in _METHODS else 99, m)))


def _json_media(content_type: str | None) -> bool:
    """Whether FastAPI reads the body as JSON: application/json or application/*+json."""
    if content_type is None:
        return False
    main, _, sub = content_type.partition(";")[0].strip().lower().partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


class ContractRoute(APIRoute):
    """An APIRoute that parses a JSON body with read_json and answers 405 with a full Allow.

    FastAPI answers a body json.loads refuses for other reasons than syntax (invalid
    UTF-8, deep nesting, a 5,000-digit number) 400 http_error; read_json refuses it 422
    before FastAPI reads it again (the same bytes, so it parses, for a few microseconds).
    Starlette's 405 lists only the methods of the first route matching the path.
    """

    # APIRoute's own signature (Starlette's coroutine type), overridden as it is.
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def parsed_first(request: Request) -> Response:
            raw = await request.body()
            if raw and _json_media(request.headers.get("content-type")):
                read_json(raw)
            return await handler(request)

        return parsed_first

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            raise HTTPException(405, headers={"Allow": allowed_methods(scope)})
        await super().handle(scope, receive, send)


@dataclass(frozen=True)
class QueryContract:
    names: frozenset[str]
    repeatable: frozenset[str]

    def violations(self, items: Iterable[tuple[str, str]]) -> list[dict[str, object]]:
        """One error per unknown name and per scalar given more than once, in query order."""
        seen: set[str] = set()
        errors: list[dict[str, object]] = []
        for name, _ in items:
            if name not in self.names:
                problem = ("extra_forbidden", f"unknown query parameter '{name}'")
            elif name in seen and name not in self.repeatable:
                problem = ("repeated", f"query parameter '{name}' is given more than once")
            else:
                seen.add(name)
                continue
            seen.add(name)
            error: dict[str, object] = {
                "type": problem[0],
                "loc": ("query", name),
                "msg": problem[1],
            }
            if error not in errors:
                errors.append(error)
        return errors


def model_contract(model: type[BaseModel]) -> QueryContract:
    """The contract of a query model: its fields by alias, the sequences repeatable."""
    fields = {(f.alias or name): f.annotation for name, f in model.model_fields.items()}
    return QueryContract(
        frozenset(fields),
        frozenset(name for name, annotation in fields.items() if _sequence(annotation)),
    )


def _query_params(dependant: Dependant) -> Iterator[ModelField]:
    yield from dependant.query_params
    for dependency in dependant.dependencies:
        yield from _query_params(dependency)


def route_contract(route: APIRoute) -> QueryContract:
    names: set[str] = set()
    repeatable: set[str] = set()
    for field in _query_params(route.dependant):
        annotation = field.field_info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            inner = model_contract(annotation)
            names |= inner.names
            repeatable |= inner.repeatable
            continue
        names.add(field.alias)
        if _sequence(annotation):
            repeatable.add(field.alias)
    return QueryContract(frozenset(names), frozenset(repeatable))


# What FastAPI reads with getlist: a sequence type other than text, also inside Annotated
# or a union. tests/test_library_shapes.py asks FastAPI itself about each kind of
# annotation, so a FastAPI that reads them otherwise fails there.
_SEQUENCE_TYPES = (Sequence, set, frozenset, deque)


def _sequence(annotation: object) -> bool:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _sequence(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return any(_sequence(arg) for arg in get_args(annotation))
    return any(
        isinstance(kind, type)
        and issubclass(kind, _SEQUENCE_TYPES)
        and not issubclass(kind, (str, bytes))
        for kind in (annotation, origin)
    )


# Each route's contract, worked out on its first query string and kept while the route
# lives. Found by identity: routes compare by value, so they cannot be weak keys.
_contracts: dict[int, QueryContract] = {}


def _remember(route: APIRoute) -> QueryContract:
    key = id(route)
    contract = _contracts[key] = route_contract(route)
    # Dropped as the route goes, before its id can name another object.
    weakref.finalize(route, _contracts.pop, key, None)
    return contract


async def strict_query(request: Request) -> None:
    """A dependency for every route: enforce the route's query contract."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.scope["query_string"]:
        return
    contract = _contracts.get(id(route))
    if contract is None:
        contract = _remember(route)
    errors = contract.violations(request.query_params.multi_items())
    if errors:
        raise RequestValidationError(errors)
