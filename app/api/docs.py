"""The OpenAPI document with exact bounds; /docs and /redoc from files this service ships.

FastAPI passes the component schemas pydantic generates through its own OpenAPI model,
which types every numeric bound as a float: 2**63 - 1 came out as 9.223372036854776e+18
(2**63, which the service refuses) and 1 as 1.0. The bounds are put back as pydantic
states them, so the document says exactly what the service accepts.

The Swagger UI 5 and Redoc 2 bundles come with the fastapi-offline package (its
static directory); FastAPI's own page builders point at them, mounted here, so the pages
work offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import fastapi_offline
from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.staticfiles import StaticFiles
from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import HTMLResponse

from app.api.contract import ContractRoute

if TYPE_CHECKING:
    from typing_extensions import TypeForm

ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSETS_URL = "/docs-assets"
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
_REF = "#/components/schemas/{model}"


def _pydantic_definitions(app: FastAPI) -> dict[str, object]:
    """The component schemas as pydantic generates them for the routes' bodies and answers.

    Bodies in validation mode, answers in serialization mode, as FastAPI asks for them,
    so the names (with -Input and -Output where the two differ) are FastAPI's.
    """
    inputs: dict[tuple[TypeForm[object], str], TypeAdapter[object]] = {}
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        types: list[tuple[TypeForm[object], Literal["validation", "serialization"]]] = []
        if route.body_field is not None:
            # FieldInfo's annotation is optional; a body field's is always set.
            body = cast("TypeForm[object]", route.body_field.field_info.annotation)
            types.append((body, "validation"))
        answers = [route.response_model, *(r.get("model") for r in route.responses.values())]
        types += [(answer, "serialization") for answer in answers if answer is not None]
        for annotation, mode in types:
            if (annotation, mode) not in inputs:
                inputs[annotation, mode] = TypeAdapter(annotation)
    _, top = TypeAdapter.json_schemas(
        [(key, key[1], adapter) for key, adapter in inputs.items()],  # type: ignore[misc]
        ref_template=_REF,
    )
    definitions: dict[str, object] = top.get("$defs", {})
    return definitions


def _copy_bounds(source: object, target: object) -> None:
    """pydantic's integer bounds into FastAPI's copy of the same schema, wherever they are."""
    if isinstance(source, dict) and isinstance(target, dict):
        for key, value in source.items():
            if key in _BOUNDS and isinstance(value, int) and key in target:
                target[key] = value
            elif key in target:
                _copy_bounds(value, target[key])
    elif isinstance(source, list) and isinstance(target, list):
        for inner_source, inner_target in zip(source, target, strict=False):
            _copy_bounds(inner_source, inner_target)


def exact_openapi(app: FastAPI) -> dict[str, object]:
    """FastAPI's OpenAPI document, its component schemas' bounds exactly as pydantic's."""
    if app.openapi_schema is None:
        document = FastAPI.openapi(app)  # made once and kept in app.openapi_schema
        exact = _pydantic_definitions(app)
        for name, schema in document.get("components", {}).get("schemas", {}).items():
            if name in exact:
                _copy_bounds(exact[name], schema)
    return app.openapi_schema or {}


def install(app: FastAPI) -> None:
    """The exact document, and the docs pages; create the app with docs_url=redoc_url=None."""
    app.openapi = lambda: exact_openapi(app)  # type: ignore[method-assign]
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = "/docs/oauth2-redirect"
    pages = APIRouter(route_class=ContractRoute, include_in_schema=False)

    @pages.get("/docs")
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=redirect_url,
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        )

    @pages.get(redirect_url)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @pages.get("/redoc")
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )

    app.include_router(pages)
