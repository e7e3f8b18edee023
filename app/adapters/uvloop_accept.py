"""uvloop's event loop with TCP servers that take every waiting connection at each wakeup.

libuv accepts one connection per turn of the event loop (libuv/libuv#3696, "don't
accept() connections in a loop", in libuv since 1.45; the uvloop pinned here bundles a
later one), relying on the listening socket staying readable for the next one. A turn runs
every callback that became ready, and once requests flow that is milliseconds of work: a
burst of N new connections waits N turns. 64 connections a load client opened at once were
accepted over up to 330 ms, the first ones' requests filling the turns, and each of the
others' first request waited for its accept (bench/HISTORY.md, "New connections wait for
their accept"). asyncio's own loop accepts up to `backlog` connections per wakeup; this
does the same on uvloop.

`create_server` for TCP (a host and port, or a listening socket as uvicorn's workers get
it) listens and watches the socket with add_reader; each wakeup accepts up to
ACCEPT_BATCH waiting connections and hands each to uvloop as an accepted socket
(`connect_accepted_socket`: the same transport, TCP_NODELAY and protocol calls as its own
servers make). TLS, Unix sockets and arguments uvicorn never passes keep uvloop's server.
Out of descriptors or memory, accepting pauses for ACCEPT_RETRY_SECONDS, as asyncio's does.

uvicorn takes the loop as an import string: UVICORN_LOOP (app/cli.py serve).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any

import uvloop

log = logging.getLogger(__name__)
# Connections accepted per wakeup, at most: a burst's set-up costs tens of microseconds
# each, so a wakeup stays a few milliseconds however many are waiting.
ACCEPT_BATCH = 128
ACCEPT_RETRY_SECONDS = 1.0
# accept() errors that say the process is out of something, not that a client went away.
_OUT_OF = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_TCP = {socket.AF_INET, socket.AF_INET6}
ProtocolFactory = Callable[[], asyncio.BaseProtocol]
UVICORN_LOOP = f"{__name__}:new_event_loop"


class Loop(uvloop.Loop):
    """uvloop, its plain TCP servers accepting in batches (module docstring)."""

    async def create_server(  # type: ignore[override]
        self,
        protocol_factory: ProtocolFactory,
        host: str | None = None,
        port: int | None = None,
        *,
        sock: socket.socket | None = None,
        backlog: int = 100,
        ssl: Any = None,
        **options: Any,
    ) -> asyncio.AbstractServer:
        ours = ssl is None and not options and (sock is None or sock.family in _TCP)
        if not ours or (sock is None and port is None):
            # uvloop's stubs overload host/port against sock; these are passed on as given.
            uvloop_server: Any = super()
            server: asyncio.AbstractServer = await uvloop_server.create_server(
                protocol_factory, host, port, sock=sock, backlog=backlog, ssl=ssl, **options
            )
            return server
        sockets = [sock] if sock is not None else await self._bind(host, port)
        for listening in sockets:
            listening.listen(backlog)
        return BatchAcceptServer(self, sockets, protocol_factory)

    async def _bind(self, host: str | None, port: int | None) -> list[socket.socket]:
        """A socket bound to each address of `host` (every interface if empty), as asyncio
        binds them: SO_REUSEADDR, and IPv6 sockets for IPv6 only."""
        found = await self.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        bound: list[socket.socket] = []
        try:
            for family, kind, proto, _, address in dict.fromkeys(found):
                listening = socket.socket(family, kind, proto)
                bound.append(listening)
                listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    listening.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    listening.bind(address)
                except OSError as exc:
                    raise OSError(
                        exc.errno,
                        f"error while attempting to bind on address {address!r}: {exc.strerror}",
                    ) from None
        except BaseException:
            for listening in bound:
                listening.close()
            raise
        return bound


class BatchAcceptServer(asyncio.AbstractServer):
    """Listening sockets watched by the loop; each wakeup accepts what waits, in a batch."""

    def __init__(
        self, loop: Loop, sockets: Iterable[socket.socket], protocol_factory: ProtocolFactory
    ) -> None:
        self._loop, self._factory = loop, protocol_factory
        self._sockets = tuple(sockets)
        self._opening: set[asyncio.Task[None]] = set()
        self._closed: asyncio.Future[None] = loop.create_future()  # done once closed
        for listening in self._sockets:
            listening.setblocking(False)
            loop.add_reader(listening.fileno(), self._accept, listening)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return () if self._closed.done() else self._sockets

    def _accept(self, listening: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                connection, _ = listening.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return  # nothing more waits (or the client gave up first)
            except OSError as exc:
                if exc.errno not in _OUT_OF:
                    raise
                log.error("accepting connections paused for %.0f s: %s", ACCEPT_RETRY_SECONDS, exc)
                self._loop.remove_reader(listening.fileno())
                self._loop.call_later(ACCEPT_RETRY_SECONDS, self._resume, listening)
                return
            connection.setblocking(False)
            task = self._loop.create_task(self._open(connection))
            self._opening.add(task)
            task.add_done_callback(self._opening.discard)

    async def _open(self, connection: socket.socket) -> None:
        try:
            protocol = self._factory()
        except Exception:
            connection.close()
            log.exception("the protocol for a new connection failed")
            return
        try:
            await self._loop.connect_accepted_socket(lambda: protocol, connection)
        except Exception as exc:  # uvloop closed the transport; the client sees it go
            log.warning("a new connection could not be opened: %r", exc)

    def _resume(self, listening: socket.socket) -> None:
        if not self._closed.done():
            self._loop.add_reader(listening.fileno(), self._accept, listening)

    def close(self) -> None:
        if self._closed.done():
            return
        for listening in self._sockets:
            self._loop.remove_reader(listening.fileno())
            listening.close()
        self._closed.set_result(None)

    async def wait_closed(self) -> None:
        if self._opening:
            await asyncio.gather(*self._opening, return_exceptions=True)

    def is_serving(self) -> bool:
        return not self._closed.done()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    async def start_serving(self) -> None:
        """Serving starts with the server, as create_server's default start_serving=True."""

    async def serve_forever(self) -> None:
        """Serve until closed; cancelled, close (as asyncio's Server does)."""
        try:
            await asyncio.shield(self._closed)
        finally:
            self.close()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """What uvicorn calls for the event loop (its `loop` setting as an import string)."""
    return Loop()
