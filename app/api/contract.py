"""The strict request contract of every route, enforced generically.

A query string names only the route's declared parameters, and each scalar one at most
once; anything else is a 422 naming the parameter. HEAD works wherever GET does.

Derived from what a route declares (its dependant's query parameters, query models
expanded), never from a hand-kept list, so it holds on every route and follows any
change of a signature. The hot reads' lane asks the same question of its query
models (app/api/reads.py) and hands every request that fails it on to FastAPI.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi._compat import field_annotation_is_sequence  # FastAPI's own getlist test
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.types import Message, Scope, Send


@dataclass(frozen=True)
class QueryContract:
    names: frozenset[str]
    repeatable: frozenset[str]

    def violations(self, items: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
        """One error per unknown name and per scalar given more than once, in query order."""
        seen: set[str] = set()
        errors: list[dict[str, Any]] = []
        for name, _ in items:
            if name not in self.names:
                problem = ("extra_forbidden", f"unknown query parameter '{name}'")
            elif name in seen and name not in self.repeatable:
                problem = ("repeated", f"query parameter '{name}' is given more than once")
            else:
                seen.add(name)
                continue
            seen.add(name)
            error = {"type": problem[0], "loc": ("query", name), "msg": problem[1]}
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


def _query_params(dependant: Dependant) -> Iterator[Any]:
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


def _sequence(annotation: Any) -> bool:
    return bool(field_annotation_is_sequence(annotation))


async def strict_query(request: Request) -> None:
    """A dependency for every route: enforce the route's query contract."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.scope["query_string"]:
        return
    contract: QueryContract | None = getattr(route, "query_contract", None)
    if contract is None:  # worked out once per route, on its first query string
        contract = route_contract(route)
        route.query_contract = contract  # type: ignore[attr-defined]
    errors = contract.violations(request.query_params.multi_items())
    if errors:
        raise RequestValidationError(errors)


def head_as_get(scope: Scope, send: Send) -> tuple[Scope, Send]:
    """HEAD wherever GET works: the GET's status and headers, without its body (RFC 9110)."""

    async def without_body(message: Message) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return {**scope, "method": "GET"}, without_body
