"""The protocol's cost per request: a typical request (9 headers) parsed by uvicorn's
httptools protocol, by app/adapters/uvicorn_http.py's EdgeProtocol, and optionally by another
revision's protocol, in one process without a socket or an application.

    uv run --frozen python bench/head_cost.py
    uv run --frozen python bench/head_cost.py --before /tmp/before/app/adapters/uvicorn_http.py

Prints microseconds per request, best of 15 interleaved rounds of 5,000.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

sys.path.insert(0, str(Path(__file__).parent.parent))

from app.adapters.uvicorn_http import EdgeProtocol, Limits

REQUEST = (
    b"GET /api/v1/users/123?include=appointments HTTP/1.1\r\nHost: svc\r\n"
    b"User-Agent: python-httpx/0.28\r\nAccept: */*\r\nAccept-Encoding: gzip, deflate\r\n"
    b"Connection: keep-alive\r\nAuthorization: Bearer abcdefghijklmnop\r\n"
    b"X-Request-ID: 0123456789abcdef\r\nX-Consistency-Token: 0/16B6C50\r\n\r\n"
)


class Transport(asyncio.Transport):
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5555)}.get(name)

    def write(self, data: Any) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


async def _app(scope: Any, receive: Any, send: Any) -> None:
    pass


async def measure(makers: dict[str, Callable[[], Any]]) -> dict[str, float]:
    best = dict.fromkeys(makers, float("inf"))
    for _ in range(15):
        for name, make in makers.items():
            protocol = make()
            protocol.connection_made(Transport())
            # The request is parsed and its cycle made; the application is not run.
            protocol._start_asgi_task = lambda cycle, app: setattr(cycle, "response_complete", 1)
            started = time.perf_counter()
            for _ in range(5000):
                protocol.data_received(REQUEST)
            best[name] = min(best[name], (time.perf_counter() - started) / 5000 * 1e6)
            protocol.connection_lost(None)
    return {name: round(us, 2) for name, us in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--before", type=Path, help="another revision's app/adapters/uvicorn_http.py"
    )
    args = parser.parse_args()
    config = Config(app=_app, lifespan="off")
    config.load()
    limits = Limits(10.0, 8192, 8192, 100, 65536)
    makers: dict[str, Callable[[], Any]] = {
        "uvicorn httptools": lambda: HttpToolsProtocol(config, ServerState(), {}),
        "EdgeProtocol": lambda: EdgeProtocol(config, ServerState(), {}, limits=limits),
    }
    if args.before:
        spec = importlib.util.spec_from_file_location("before_server", args.before)
        assert spec is not None
        assert spec.loader is not None
        before = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(before)
        makers["before"] = lambda: before.HeaderTimeoutProtocol(config, ServerState(), {})
    print(json.dumps(asyncio.run(measure(makers))))


if __name__ == "__main__":
    main()
