"""uvicorn's httptools protocol with a deadline for request headers.

uvicorn times out idle keep-alive connections but not a request whose headers never
finish, nor a new connection that never says a word: either holds its connection
for ever. Here a connection with no request under way is idle, from its opening as
after each response, and is closed after KEEP_ALIVE_TIMEOUT seconds of silence (a
client with a connection pool opens connections before it needs them). Once a
request's first bytes arrive, its headers must be complete within HEADER_TIMEOUT
seconds, else the client gets a 408 and the connection is closed; a byte a minute
(or a lone CRLF) does not keep a connection.

The header timer is armed only while headers are incomplete after a read, so a
request whose headers arrive in one read (nearly all of them) costs no timer at all.
The body's own deadline is BODY_TIMEOUT, kept in the ASGI layer (app/guards.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.config import load_settings

log = logging.getLogger(__name__)


@functools.cache
def header_timeout() -> float:
    # uvicorn builds protocols from its own config; the setting comes from the same
    # environment `serve` read it from (workers are separate processes).
    return load_settings().header_timeout


def _timeout_response(seconds: float) -> bytes:
    body = orjson.dumps(
        {
            "error": "request_timeout",
            "detail": f"the request headers did not arrive within {seconds:g} s",
        }
    )
    head = (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
    )
    return head + body


class HeaderTimeoutProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout()
        self._header_timer: asyncio.TimerHandle | None = None
        self._headers_pending = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Idle until the first byte, as between requests: uvicorn's keep-alive timer,
        # which the first data_received cancels.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._unset_keepalive_if_required()  # uvicorn leaves it armed on a reset
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._header_timer is None and (
            # A request's headers are still incomplete, or bytes came that begin none
            # (a lone CRLF) while no request is under way.
            self._headers_pending or self.cycle is None or self.cycle.response_complete
        ):
            self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._headers_pending = True

    def on_headers_complete(self) -> None:
        self._headers_pending = False
        self._disarm()
        super().on_headers_complete()

    def _arm(self) -> None:
        if not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.header_timeout, self._timed_out)

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
            self.transport.write(_timeout_response(self.header_timeout))
        self.transport.close()
