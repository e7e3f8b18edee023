"""uvicorn's httptools protocol with limits on a request's head: its time and its size.

uvicorn times out idle keep-alive connections but not a request whose headers never
finish, nor a new connection that never says a word: either holds its connection
for ever. Here a connection with no request under way is idle, from its opening as
after each response, and is closed after KEEP_ALIVE_TIMEOUT seconds of silence (a
client with a connection pool opens connections before it needs them). Once a
request's first bytes arrive, its headers must be complete within HEADER_TIMEOUT
seconds, else the client gets a 408 and the connection is closed; a byte a minute
(or a lone CRLF) does not keep a connection.

Nor does uvicorn bound the size of a head: it keeps every header it is sent, so one client
sending header lines for ever grows a worker by hundreds of megabytes
(bench/header_flood.py). Here the parser is fed at most MAX_HEADER_BYTES of a head
(request line and header lines); a head that does not end within them, a header line over
MAX_HEADER_LINE_BYTES or more than MAX_HEADER_COUNT headers is refused with a 431, a
request target (path and query) over MAX_URL_BYTES with a 414, and the connection is
closed, as soon as the read that carried it is parsed (nothing more is kept). A header
line is judged when it ends; one that never ends is bounded by the total. The count and
the lines are checked per read rather than per header (bench/head_cost.py times the
protocol per request): a head shorter than a line's limit needs no line check at all.

The header timer is armed only while headers are incomplete after a read, so a
request whose headers arrive in one read (nearly all of them) costs no timer at all.
The body's own deadline is BODY_TIMEOUT, kept in the ASGI layer (app/guards.py).

uvicorn takes a protocol class as `http` but has no public hooks inside one, so this is
the one module that subclasses `HttpToolsProtocol` and relies on its private shape: the
httptools callbacks it overrides (`data_received`, `on_message_begin`, `on_url`,
`on_headers_complete`, `on_body`, `on_message_complete`, `on_response_complete`,
`connection_made`, `connection_lost`, `send_400_response`) and the state it reads or sets (`loop`,
`transport`, `client`, `headers`, `scope`, `cycle`, `cycle.scope`,
`cycle.response_complete`, `timeout_keep_alive`, `timeout_keep_alive_task`,
`timeout_keep_alive_handler`, `_unset_keepalive_if_required`, `server_state`, `flow`,
`pipeline`, `_start_asgi_task`). It buys the limits above
(bench/header_flood.py shows what they stop; bench/head_cost.py what they cost a
request), idle connections that hold nothing of their last request, and one keep-alive
timer per connection rather than one per response.
tests/test_library_shapes.py fails, naming the attribute, when an installed uvicorn
changes one of them; pyproject.toml bounds uvicorn to the release it was read from.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import http
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

if TYPE_CHECKING:
    from app.config import Settings

log = logging.getLogger(__name__)
# After a refusal the answer is sent and our side shut; what the client still sends is
# read and dropped this long, so that closing on unread data (a reset) does not destroy
# the answer before the client has read it.
LINGER_SECONDS = 2.0


@dataclass(frozen=True)
class Limits:
    """The bounds of a request's head, from the settings `serve` read (picklable: each
    worker process gets them with uvicorn's configuration)."""

    header_timeout: float
    max_url: int
    max_header_line: int
    max_header_count: int
    max_header_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            header_timeout=settings.header_timeout,
            max_url=settings.max_url_bytes,
            max_header_line=settings.max_header_line_bytes,
            max_header_count=settings.max_header_count,
            max_header_bytes=settings.max_header_bytes,
        )


def protocol(settings: Settings) -> type[asyncio.Protocol]:
    """What uvicorn takes as `http`: the protocol class with these settings' limits."""
    # uvicorn only calls what it is given, as it would call the class.
    return cast(type[asyncio.Protocol], functools.partial(EdgeProtocol, limits=Limits.of(settings)))


_ERRORS = {400: "bad_request", 414: "uri_too_long", 431: "request_headers_too_large"}


def _answer(status: int, error: str, detail: str) -> bytes:
    body = orjson.dumps({"error": error, "detail": detail})
    head = (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


class EdgeProtocol(HttpToolsProtocol):
    # HttpToolsProtocol's arguments, passed on as uvicorn gives them (its own are loosely typed).
    def __init__(self, *args: Any, limits: Limits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._header_timer: asyncio.TimerHandle | None = None
        self._headers_pending = False
        self._in_body = False  # from a head's end to its message's end
        self._heads = 0  # heads completed on this connection
        self._head_bytes = 0  # bytes of the current head fed to the parser
        self._piece = 0  # bytes of the read being parsed
        self._url_bytes = 0
        self._checked = 0  # headers of the current head whose lines were checked
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Idle until the first byte, as between requests.
        self._context = contextvars.copy_context()
        self._idle_since: float | None = self.loop.time()
        self._keep_alive_in(self.timeout_keep_alive)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._stop_keep_alive()  # uvicorn leaves its timer armed on a reset
        super().connection_lost(exc)

    # The keep-alive timer. uvicorn arms a new timer after every response and cancels it
    # on the next read: per request a timer handle, a libuv timer and a copy of the
    # request's context, each living until the next request, seconds later. At 10,000
    # connections that is 60,000 objects at any time, walked by every full collection
    # (bench/tails.py's heap). Here one timer per connection stays armed: a read marks the
    # connection busy, a response marks when it fell idle, and the timer, when it fires,
    # closes the connection if it has been idle for KEEP_ALIVE_TIMEOUT, else waits for
    # the rest (or, busy, leaves the next response to arm it again).

    def _unset_keepalive_if_required(self) -> None:
        self._idle_since = None  # uvicorn calls this on each read: busy

    def _keep_alive_in(self, delay: float) -> None:
        # In the connection's own context, not the request's that is ending.
        self.timeout_keep_alive_task = self.loop.call_later(
            delay, self._keep_alive_due, context=self._context
        )

    def _keep_alive_due(self) -> None:
        self.timeout_keep_alive_task = None
        if self._idle_since is None:
            return  # busy: the response arms the timer again
        left = self._idle_since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self._keep_alive_in(left)
        else:
            self.timeout_keep_alive_handler()

    def _stop_keep_alive(self) -> None:
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: read and dropped
        limit = self.limits.max_header_bytes
        while data:
            if self._in_body:
                piece, data = data, b""
            else:
                # A head gets at most what is left of its budget: the parser (and the
                # header it may be accumulating) never holds more.
                room = limit - self._head_bytes
                piece, data = (data, b"") if len(data) <= room else (data[:room], data[room:])
            heads, in_body, self._piece = self._heads, self._in_body, len(piece)
            super().data_received(piece)
            if self._refused:
                # A refusal mid-read: uvicorn took the rest of the read's header lines.
                if self._headers_pending:
                    self.headers.clear()
                return
            if self.transport.is_closing():
                return
            if heads != self._heads or in_body:
                # A head ended in this piece, or the piece was (the end of) a body: none
                # of it is head. Should another head start after a body in the same read
                # (pipelining), its bytes there go uncounted: one read at most.
                self._head_bytes = 0
            elif not self._in_body:
                self._head_bytes += len(piece)
                if self._head_bytes >= limit:
                    self._refuse(431, f"the request headers exceed {limit} bytes")
                    return
                if self._headers_pending and self._too_many(self._head_bytes):
                    return
        if self._header_timer is None and (
            # A request's headers are still incomplete, or bytes came that begin none
            # (a lone CRLF) while no request is under way.
            self._headers_pending or self.cycle is None or self.cycle.response_complete
        ):
            self._arm()

    def on_message_begin(self) -> None:
        if self._refused:
            return
        super().on_message_begin()
        self._headers_pending = True
        self._url_bytes = self._checked = 0

    def on_url(self, url: bytes) -> None:
        if self._refused:
            return
        self._url_bytes += len(url)
        if self._url_bytes > self.limits.max_url:
            # RFC 9112 3: a request-target longer than the server will parse is a 414 (the
            # method and the version around it are bounded by the parser).
            self._refuse(414, f"the request target exceeds {self.limits.max_url} bytes")
            return
        super().on_url(url)

    def _too_many(self, head_bytes: int) -> bool:
        """Refuses the head whose headers so far pass the count or a line's limit.

        `head_bytes` bounds the head's size: a head no longer than a line's limit holds
        no line over it."""
        limits, headers = self.limits, self.headers
        if len(headers) > limits.max_header_count:
            self._refuse(431, f"more than {limits.max_header_count} request headers")
        elif head_bytes > limits.max_header_line:
            # Only the lines not seen yet: a head dripping in byte by byte is not rescanned.
            new, self._checked = headers[self._checked :], len(headers)
            if any(len(name) + len(value) > limits.max_header_line for name, value in new):
                self._refuse(431, f"a request header exceeds {limits.max_header_line} bytes")
        return self._refused

    def on_headers_complete(self) -> None:
        if self._refused:
            return  # no request is formed from a refused head
        limits, bound = self.limits, self._head_bytes + self._piece
        if (
            len(self.headers) > limits.max_header_count or bound > limits.max_header_line
        ) and self._too_many(bound):
            return
        self._headers_pending = False
        self._in_body = True
        self._heads += 1
        self._disarm()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._in_body = False
        super().on_message_complete()

    def on_response_complete(self) -> None:
        # uvicorn's, but for the keep-alive timer (above).
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()  # reads may have been paused while the body was read
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self._idle_since = self.loop.time()
            if self.timeout_keep_alive_task is None:
                self._keep_alive_in(self.timeout_keep_alive)
        cycle = self.cycle
        if cycle is not None and cycle.response_complete:
            # Idle again: nothing of the finished request stays reachable from the
            # connection (its scope, headers and cycle, and through the scope all the app
            # put there). uvicorn keeps them until the next request, so at 10,000 idle
            # connections the garbage collector's full collections walked 10,000 such
            # requests. A pipelined request already started keeps its own.
            if self.scope is cycle.scope:
                self.scope = self.headers = None  # type: ignore[assignment]
            self.cycle = None  # type: ignore[assignment]

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes its parser refuses (a method HTTP does not have, a NUL
        or a control byte in a header, two Content-Lengths, both Content-Length and
        Transfer-Encoding): the service's own error body, not uvicorn's plain text."""
        self._refuse(400, "the request is not valid HTTP/1.1")

    def _refuse(self, status: int, detail: str) -> None:
        """Answers `status` and closes: the rest of the head is never parsed."""
        self._refused = True
        self._disarm()
        self._stop_keep_alive()
        log.info(
            "request head refused",
            extra={
                "status": status,
                "client": f"{self.client[0]}:{self.client[1]}" if self.client else None,
            },
        )
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # a pipelined head behind a response under way
            return
        self.transport.write(_answer(status, _ERRORS[status], detail))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _arm(self) -> None:
        if not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.limits.header_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        log.info(
            "request headers timed out",
            extra={"client": f"{self.client[0]}:{self.client[1]}" if self.client else None},
        )
        if self.cycle is None or self.cycle.response_complete:
            seconds = self.limits.header_timeout
            detail = f"the request headers did not arrive within {seconds:g} s"
            self.transport.write(_answer(408, "request_timeout", detail))
        self.transport.close()
