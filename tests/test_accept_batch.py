"""app/adapters/uvloop_accept.py: a burst of waiting connections is accepted in one wakeup.

Each test runs its own event loop (the module's Loop, or uvloop's as the yardstick) in a
thread of its own, so that the connections can be made while that loop is held busy.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
import uvloop

from app.adapters.uvloop_accept import ACCEPT_BATCH, Loop

BURST = 40
assert BURST <= ACCEPT_BATCH


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's TCPTransport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data.upper())


def _turns_of_a_burst(make_loop: Callable[[], asyncio.AbstractEventLoop]) -> list[int]:
    """The loop turn in which each of BURST connections, all waiting before the loop could
    look, got its protocol. The loop is held busy while they connect."""
    loop = make_loop()
    turn = 0
    made: list[int] = []
    ready = threading.Event()
    release = threading.Event()
    port = 0
    server: Any = None

    def tick() -> None:  # one call per turn: it schedules itself for the next
        nonlocal turn
        turn += 1
        loop.call_soon(tick)

    def factory() -> asyncio.Protocol:
        made.append(turn)
        return Echo()

    async def serve() -> None:
        nonlocal port, server
        server = await loop.create_server(factory, "127.0.0.1", 0, backlog=1024)
        port = server.sockets[0].getsockname()[1]
        ready.set()
        await asyncio.sleep(0)
        release.wait(30)  # blocks the loop: the connections queue in the kernel
        loop.call_soon(tick)
        for _ in range(200):
            if len(made) >= BURST:
                break
            await asyncio.sleep(0.01)
        server.close()
        await server.wait_closed()

    runner = threading.Thread(target=loop.run_until_complete, args=(serve(),))
    runner.start()
    clients: list[socket.socket] = []
    try:
        assert ready.wait(30)
        time.sleep(0.1)  # the loop is in release.wait by now
        for _ in range(BURST):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        release.set()
        runner.join(30)
        assert not runner.is_alive()
    finally:
        release.set()
        for client in clients:
            client.close()
        loop.close()
    assert len(made) == BURST
    return made


def test_a_burst_of_waiting_connections_is_accepted_at_one_wakeup() -> None:
    turns = _turns_of_a_burst(Loop)
    assert max(turns) - min(turns) <= 1, turns  # accepted together, set up on the next turn


def test_uvloop_alone_takes_one_connection_per_turn() -> None:
    """The yardstick: without the module, the same burst takes a turn per connection (what
    the first test tells apart). Should a future uvloop accept in batches again, this
    fails, and the module can go."""
    turns = _turns_of_a_burst(uvloop.new_event_loop)
    assert len(set(turns)) == BURST, turns


async def _exchange(port: int, message: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(message)
    await writer.drain()
    answer = await reader.readexactly(len(message))
    writer.close()
    await writer.wait_closed()
    return answer


def test_the_server_serves_then_closes_and_refuses() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        assert server.is_serving()
        port = server.sockets[0].getsockname()[1]
        answers = await asyncio.gather(*(_exchange(port, b"hi %d" % i) for i in range(20)))
        assert answers == [b"HI %d" % i for i in range(20)]
        server.close()
        await server.wait_closed()
        assert not server.is_serving()
        with pytest.raises(ConnectionRefusedError):
            await _exchange(port, b"late")

    with asyncio.Runner(loop_factory=Loop) as runner:
        runner.run(main())


def test_a_listening_socket_given_is_served_as_uvicorn_workers_pass_it() -> None:
    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Echo, sock=listening)
        assert await _exchange(port, b"worker") == b"WORKER"
        server.close()
        await server.wait_closed()
        assert listening.fileno() == -1  # closed with the server, as asyncio's Server does

    with asyncio.Runner(loop_factory=Loop) as runner:
        runner.run(main())


def test_a_port_taken_is_a_clear_error() -> None:
    taken = socket.create_server(("127.0.0.1", 0))
    try:

        async def main() -> None:
            with pytest.raises(OSError, match="error while attempting to bind"):
                await asyncio.get_running_loop().create_server(
                    Echo, "127.0.0.1", taken.getsockname()[1]
                )

        with asyncio.Runner(loop_factory=Loop) as runner:
            runner.run(main())
    finally:
        taken.close()


_SERVER = """
import asyncio, resource, sys
sys.path.insert(0, {root!r})
from app.adapters.uvloop_accept import Loop

class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        self.transport.write(data.upper())

async def main():
    server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0, backlog=64)
    import os
    used = len(os.listdir("/proc/self/fd"))
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (used + {spare}, hard))
    print(server.sockets[0].getsockname()[1], flush=True)  # once the limit holds
    await asyncio.sleep(60)

with asyncio.Runner(loop_factory=Loop) as runner:
    runner.run(main())
"""


def test_out_of_descriptors_pauses_accepting_and_keeps_the_rest_waiting(
    tmp_path: Path,
) -> None:
    """A real EMFILE: the server may hold a few descriptors more than it has open. It pauses
    accepting (the rest wait in the listen queue, nobody is reset) and takes them once
    connections close."""
    spare, clients = 4, 12
    script = tmp_path / "server.py"
    script.write_text(_SERVER.format(root=str(Path(__file__).resolve().parents[1]), spare=spare))
    server = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        sockets = [
            socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(clients)
        ]
        answered: list[socket.socket] = []
        for number, client in enumerate(sockets):
            client.sendall(b"ping %d" % number)
        # The first few are served; the others wait, connected but not yet accepted.
        for client in sockets[:spare]:
            assert client.recv(64).startswith(b"PING")
            answered.append(client)
        for client in answered:
            client.close()
        for number, client in enumerate(sockets[spare:], start=spare):
            # Each answered once descriptors are free again, some after a pause (a second).
            assert client.recv(64) == b"PING %d" % number
            client.close()
    finally:
        server.terminate()
        _, errors = server.communicate(timeout=30)
    assert "accepting connections paused" in errors
    assert "Traceback" not in errors
