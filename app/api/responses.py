"""The error answers of the API as OpenAPI states them: the bodies app/errors.py renders."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    error: str = Field(description="A stable code: not_found, conflict, unavailable, ...")
    detail: str = Field(description="What went wrong, for a person")


class ValidationIssue(BaseModel):
    loc: list[str | int] = Field(description='Where: ["body", "start_time"], ["query", "end"]')
    msg: str
    type: str = Field(description="pydantic's error type, e.g. extra_forbidden, int_type")


class ValidationErrorBody(ErrorBody):
    errors: list[ValidationIssue] | None = Field(
        None,
        description="Present when the request did not parse: one entry per field refused. "
        "Absent when it parsed but broke a rule, which detail names.",
    )


_DEFAULTS: dict[int, tuple[type[BaseModel], str]] = {
    401: (ErrorBody, "No valid bearer token (only when API_TOKENS is set)"),
    404: (ErrorBody, "The resource, or the parent it is listed under, does not exist"),
    409: (ErrorBody, "The change conflicts with the current state"),
    422: (
        ValidationErrorBody,
        "The request is not valid: an unknown or malformed field, or a broken rule",
    ),
    503: (ErrorBody, "The database is unavailable or busy; retry after Retry-After seconds"),
}
_EXAMPLES: dict[int, dict[str, object]] = {
    401: {"error": "unauthorized", "detail": "a valid bearer token is required"},
    404: {"error": "not_found", "detail": "user 42 does not exist"},
    409: {"error": "conflict", "detail": "appointment 7 is at version 2, not 1"},
    422: {
        "error": "invalid_request",
        "detail": "the request is not valid",
        "errors": [
            {
                "loc": ["body", "start"],
                "msg": "Extra inputs are not permitted",
                "type": "extra_forbidden",
            }
        ],
    },
    503: {"error": "unavailable", "detail": "the database is unavailable"},
}


def errors_doc(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, object]]:
    """`responses=` for a route: the statuses given plus 401, 422 and 503, which every
    API route can answer. descriptions: conflict=..., not_found=... override the text."""
    names = {"not_found": 404, "conflict": 409, "invalid": 422}
    texts = {names[k]: v for k, v in descriptions.items()}
    doc: dict[int | str, dict[str, object]] = {}
    for status in sorted({401, 422, 503, *statuses}):
        model, text = _DEFAULTS[status]
        doc[status] = {
            "model": model,
            "description": texts.get(status, text),
            "content": {"application/json": {"example": _EXAMPLES[status]}},
        }
    return doc
