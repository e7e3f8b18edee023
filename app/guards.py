"""The guards of the edge stack (app/edges.py): the token, a bounded, timed body, and the
read consistency headers, each checked once for every door.

FastAPI reads and parses a body before any dependency runs, so a token checked by
a dependency would come after the whole body is in memory. Here the token is checked on
the headers alone, and the body is counted and timed while it is read: a request
past MAX_BODY_BYTES is answered 413 (at once when its Content-Length says so), one
whose body does not arrive within BODY_TIMEOUT 408. A refused request's connection
is closed, so the rest of its body is never read. A JSON body that arrived is read by
read_json, on every door (the routes, app/api/contract.py, and the booking lane).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn, TypeAlias

from fastapi.exceptions import RequestValidationError
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import errors
from app.db.lsn import parse_lsn
from app.http_metrics import ANSWER

if TYPE_CHECKING:  # app/edges.py imports this module
    from app.edges import Answer

log = logging.getLogger(__name__)

# A JSON value as json.loads returns it.
JSON: TypeAlias = dict[str, "JSON"] | list["JSON"] | str | int | float | bool | None
PROTECTED_PREFIX = "/api/"
CONSISTENCY_HEADER = "X-Consistency-Token"
READ_CONSISTENCY_HEADER = "X-Read-Consistency"
# Keys of a request's scope["state"] (Starlette's request.state):
READ_CONSISTENCY = "read_consistency"  # ReadOptions, or the BadRequest a read answers
COMMITTED_LSN = "consistency_token"  # a committed write's LSN, set by the write

ReadOptions = tuple[int | None, bool]  # (the LSN a read must see, primary forced)


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return bytes(value)
    return None


def _has_body(scope: Scope) -> bool:
    length = _header(scope, b"content-length")
    return _header(scope, b"transfer-encoding") is not None or (
        length is not None and length.strip() not in (b"", b"0")
    )


async def refuse(send: Send, error: errors.AppError, close: bool = True) -> None:
    """An error response sent straight to the client, closing the connection after it."""
    response = errors.render(error)
    if close:
        response.headers["Connection"] = "close"
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": response.body})


class TokenGate:
    """API_TOKENS checked on the headers of every /api/ request, before its body is read."""

    def __init__(self, app: ASGIApp, tokens: Sequence[SecretStr]) -> None:
        self.app = app
        self.tokens = tokens
        self._secrets = [token.get_secret_value().encode() for token in tokens]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.tokens
            and scope["path"].startswith(PROTECTED_PREFIX)
            and not self._authorized(scope)
        ):
            error = errors.Unauthorized("a valid bearer token is required")
            await refuse(send, error, close=_has_body(scope))
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        value = _header(scope, b"authorization")
        scheme, credentials = get_authorization_scheme_param(
            value.decode("latin-1") if value is not None else None
        )
        return (
            bool(credentials)
            and scheme.lower() == "bearer"
            and _accepted(self._secrets, credentials)
        )


def token_accepted(tokens: Sequence[SecretStr], offered: str | None) -> bool:
    """True when no tokens are configured or `offered` (a bearer credential) is one of them."""
    if not tokens:
        return True
    return _accepted([token.get_secret_value().encode() for token in tokens], offered)


def _accepted(secrets: Sequence[bytes], offered: str | None) -> bool:
    given = offered.encode() if offered else b""
    # Compare against every token so timing says nothing about which matched.
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(given, secret)
    return matched


def read_options(token: str | None, consistency: str | None) -> ReadOptions:
    """The consistency headers of a read: (LSN it must see, primary forced)."""
    min_lsn = None
    if token:
        try:
            min_lsn = parse_lsn(token)
        except ValueError as exc:
            raise errors.BadRequest(f"{CONSISTENCY_HEADER}: {exc}") from exc
    if consistency not in (None, "", "primary", "any"):
        raise errors.BadRequest(f"{READ_CONSISTENCY_HEADER} must be 'primary' or 'any'")
    return min_lsn, consistency == "primary"


class ConsistencyHeaders:
    """The read consistency headers, parsed once into scope["state"][READ_CONSISTENCY].

    Not refused here: only a read answers a bad one (422), and only where its route is,
    its token and query already checked; every other request ignores them.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = consistency = None
        for name, value in scope["headers"]:
            # The first of each, as Starlette's Headers.get reads them.
            if name == b"x-consistency-token" and token is None:
                token = value.decode("latin-1")
            elif name == b"x-read-consistency" and consistency is None:
                consistency = value.decode("latin-1")
        options: ReadOptions | errors.BadRequest = (None, False)
        if token or consistency is not None:
            try:
                options = read_options(token, consistency)
            except errors.BadRequest as exc:
                options = exc
        scope["state"][READ_CONSISTENCY] = options
        await self.app(scope, receive, send)


class PayloadTooLarge(errors.AppError):
    status, code = 413, "payload_too_large"


class RequestTimeout(errors.AppError):
    status, code = 408, "request_timeout"


class _Refused(errors.Answered):
    """Raised into the application once a refusal has been sent: it stops reading."""


class _GuardedBody:
    """One request's body as BodyGuard lets the application read it."""

    def __init__(self, guard: BodyGuard, receive: Receive, send: Send, answer: Answer) -> None:
        self.guard, self._receive, self._send = guard, receive, send
        self.answer = answer  # app/edges.py Answer: told when the client leaves
        self.received = 0
        self.deadline: float | None = None
        self.complete = self.started = self.refused = False

    def too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"the request body is limited to {self.guard.max_bytes} bytes")

    async def send(self, message: Message) -> None:
        if self.refused:  # the application's answer to _Refused: the client has ours
            return
        self.started = self.started or message["type"] == "http.response.start"
        await self._send(message)

    async def stop(self, error: errors.AppError) -> _Refused:
        if not self.started:
            await refuse(self._send, error)
        self.refused = True
        log.info("request refused", extra={"status": error.status, "reason": error.code})
        return _Refused(error.code)

    async def receive(self) -> Message:
        if self.complete:  # after the body only a disconnect comes, whenever it comes
            return await self._receive()
        timeout = self.guard.timeout
        if self.deadline is None:
            self.deadline = asyncio.get_running_loop().time() + timeout
        try:
            async with asyncio.timeout_at(self.deadline):
                message = await self._receive()
        except TimeoutError:
            detail = f"the request body did not arrive within {timeout:g} s"
            raise await self.stop(RequestTimeout(detail)) from None
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.complete = not message.get("more_body", False)
            if self.received > self.guard.max_bytes:
                raise await self.stop(self.too_large())
        elif message["type"] == "http.disconnect":
            self.answer.gone = True
        return message


class BodyGuard:
    """MAX_BODY_BYTES counted while the body is read; BODY_TIMEOUT for all of it."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _has_body(scope):  # its one empty message comes at once: nothing to guard
            await self.app(scope, receive, send)
            return
        body = _GuardedBody(self, receive, send, scope["state"][ANSWER])
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await refuse(send, body.too_large())
            return
        try:
            await self.app(scope, body.receive, body.send)
        except _Refused:
            if not body.refused:
                raise


def _not_json(msg: str, loc: tuple[str | int, ...] = ("body",)) -> NoReturn:
    raise RequestValidationError([{"type": "json_invalid", "loc": loc, "msg": msg}])


def _constant(name: str) -> NoReturn:
    _not_json(f"{name} is not a JSON value")


def _object(pairs: list[tuple[str, JSON]]) -> JSON:
    found = dict(pairs)
    if len(found) != len(pairs):  # RFC 8259: names SHOULD be unique; which one counts is
        # up to the reader, so a client's {"version": 9, "version": 2} is refused, not guessed
        names = [name for name, _ in pairs]
        twice = next(name for name in names if names.count(name) > 1)
        _not_json(f"a JSON object names {twice!r} twice")
    return found


def read_json(raw: bytes) -> JSON:
    """A request body as JSON text (RFC 8259: UTF-8, no NaN or Infinity), or a 422.

    Whatever does not parse is a RequestValidationError of type json_invalid, rendered
    as every other refusal (app/errors.py): invalid UTF-8 (json.loads alone would also
    take UTF-16 and UTF-32, and encoded surrogates), escapes of a lone surrogate (no
    database can store one), nesting past the parser's recursion limit and integers past
    Python's digit limit (which FastAPI answered 400), an object naming a member twice,
    and plain syntax errors, worded as FastAPI words them (loc ["body", offset], msg
    "JSON decode error").
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        _not_json(f"the body is not UTF-8 text (byte {exc.start})")
    try:
        value: JSON = json.loads(text, parse_constant=_constant, object_pairs_hook=_object)
    except json.JSONDecodeError as exc:
        _not_json("JSON decode error", ("body", exc.pos))
    except RecursionError:
        _not_json("JSON nested too deeply")
    except ValueError:  # int(): more than sys.get_int_max_str_digits() digits
        _not_json("a JSON number has too many digits")
    if "\\u" in text:  # only an escape can make a lone surrogate out of valid UTF-8
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            _not_json("a JSON string holds a lone surrogate (\\ud800-\\udfff)")
    return value
