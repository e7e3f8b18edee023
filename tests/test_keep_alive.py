"""Idle keep-alive connections (app/adapters/uvicorn_http.py): one timer per connection,
closed after KEEP_ALIVE_TIMEOUT of silence counted from the last response, never while a
request is under way. In-process, on a real socket, with a short timeout."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.edge_server import EdgeServer, edge_server

# Long enough that a busy machine's stall of the loop between a sleep of 0.6 of it and the
# timer does not fire both in one turn (the timer first).
TIMEOUT = 1.5
EARLY = 0.05  # a timer may fire this much before its time, by the loop's clock


async def _app(scope: Any, receive: Any, send: Any) -> None:
    if scope["path"] == "/slow":  # still answering when the idle timer fires
        await asyncio.sleep(TIMEOUT * 2)
    headers = [(b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})


async def _serve(keep_alive: float = TIMEOUT) -> EdgeServer:
    return await edge_server(_app, keep_alive=keep_alive, header_timeout=30.0)


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> float:
    """A request, its whole answer read; when it was sent (the answer came after that:
    reading it may be late, sending it cannot be early)."""
    sent = time.monotonic()
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert await reader.readexactly(2) == b"ok"
    return sent


async def _closed(reader: asyncio.StreamReader) -> float:
    """Waits for the server to close the connection (30 s at most); when it did."""
    assert await asyncio.wait_for(reader.read(1), 30) == b"", "bytes after the answer"
    return time.monotonic()


async def test_idle_time_counts_from_the_last_response() -> None:
    edge = await _serve()
    server, port, made = edge.server, edge.port, edge.made
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(TIMEOUT * 0.6)
        await _get(reader, writer, "/one")
        await asyncio.sleep(TIMEOUT * 0.6)  # past the first timer's time: still open
        asked = await _get(reader, writer, "/two")
        closed = await _closed(reader)
        assert closed - asked >= TIMEOUT - EARLY, closed - asked
        assert made[0].timeout_keep_alive_task is None
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_a_request_under_way_when_the_timer_fires_is_answered() -> None:
    edge = await _serve()
    server, port = edge.server, edge.port
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await _get(reader, writer, "/slow")
        asked = await _get(reader, writer, "/after")  # the connection serves on
        closed = await _closed(reader)
        assert closed - asked >= TIMEOUT - EARLY, closed - asked
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_requests_share_one_timer() -> None:
    edge = await _serve(keep_alive=60)
    server, port, made = edge.server, edge.port, edge.made
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0)
        timer = made[0].timeout_keep_alive_task
        assert timer is not None
        for _ in range(20):
            await _get(reader, writer, "/")
        # uvicorn arms (and the next read cancels) a timer per response
        assert made[0].timeout_keep_alive_task is timer
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
