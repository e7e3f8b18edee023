"""app/adapters/uvicorn_http.py's EdgeProtocol served in-process on a real socket, with
the limits of a request's head given, for the tests that drive it byte by byte."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from app.adapters.uvicorn_http import EdgeProtocol, Limits


@dataclass
class EdgeServer:
    server: asyncio.Server
    port: int
    made: list[EdgeProtocol]  # one protocol per connection, in the order they came
    state: ServerState  # shared by its connections, as uvicorn's server shares it


async def edge_server(app: Any, *, keep_alive: float, header_timeout: float) -> EdgeServer:
    config = Config(app=app, lifespan="off", timeout_keep_alive=keep_alive, access_log=False)
    config.load()
    limits = Limits(header_timeout, 8192, 8192, 100, 65536)
    state = ServerState()
    made: list[EdgeProtocol] = []

    def factory() -> EdgeProtocol:
        made.append(EdgeProtocol(config, state, {}, limits=limits))
        return made[-1]

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    return EdgeServer(server, server.sockets[0].getsockname()[1], made, state)
