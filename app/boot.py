"""The application a worker serves: liveness at once, the service as soon as it is loaded.

Importing the service (FastAPI, SQLAlchemy, the models, the routes) takes seconds of CPU,
many more on a busy machine (bench/startup.py measures it); with the port shut all that
while, probes and uvicorn's supervisor would take a worker still importing for a dead
one. Here a worker opens its port with this small application, which imports nothing
heavy, answers `GET /health/live` itself and loads the service in a thread meanwhile.
Every other request (readiness included) waits for the service, then everything goes to
it: the service's own answers, from one place, with this module only in front.

A service that fails to load ends the worker as a failed start-up does in uvicorn
(exit code 3: the supervisor stops rather than restarting it for ever).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import importlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import orjson

from app import logs

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)
T = TypeVar("T")

SERVICE = "app.main:create_app"
ALIVE = {"status": "alive"}  # /health/live's answer, here and in app/api/health.py
STARTUP_FAILURE = 3  # uvicorn's exit code for a worker that could not start
# Generation-1 collections between two full ones (CPython's default 10). Each full
# collection walks every object not frozen: at 10,000 open connections their protocol,
# parser and last request objects, a pause of 0.3 to 0.7 s every few seconds while the
# connections arrive (bench/tails.py). Cyclic garbage that reached the oldest generation
# waits a little longer for its collection.
FULL_COLLECTION_EVERY = 100


def create() -> Boot:
    """uvicorn's factory (`serve`)."""
    return Boot(SERVICE)


class Boot:
    def __init__(self, factory: str) -> None:
        self.factory = factory
        self.service: ASGIApp | None = None
        self._loaded: asyncio.Future[None] | None = None
        self._lifespan: Lifespan | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = self.service
        if service is not None:
            await service(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._run(scope, receive, send)
        elif scope["type"] == "http" and _is_liveness(scope):
            await _alive(scope, send)
        else:
            assert self._loaded is not None  # uvicorn serves only after the lifespan started
            await asyncio.shield(self._loaded)
            assert self.service is not None
            await self.service(scope, receive, send)

    async def _run(self, scope: Scope, receive: Receive, send: Send) -> None:
        """uvicorn's lifespan: started at once, the service's own lifespan inside it."""
        await receive()  # lifespan.startup
        self._loaded = asyncio.get_running_loop().create_future()
        load = asyncio.create_task(self._load(scope), name="load-service")
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        if not load.done():
            load.cancel()
        await asyncio.gather(load, return_exceptions=True)
        if self._lifespan is not None:
            await self._lifespan.shutdown()
        await send({"type": "lifespan.shutdown.complete"})

    async def _load(self, scope: Scope) -> None:
        started = time.monotonic()
        try:
            # The import and the app's construction take the CPU time; in a thread, the
            # event loop answers meanwhile. The lifespan (engines, probes) runs on the loop.
            service = await in_thread(self._build)
            freeze_startup_heap()  # before the lifespan's probes: its collection delays them
            lifespan = Lifespan(service, scope)
            await lifespan.startup()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            _fail(exc)
            return
        self._lifespan, self.service = lifespan, service
        assert self._loaded is not None
        self._loaded.set_result(None)
        log.info(
            "service loaded",
            extra={"seconds": round(time.monotonic() - started, 3), "pid": os.getpid()},
        )

    def _build(self) -> ASGIApp:
        module, _, name = self.factory.partition(":")
        factory: Callable[[], ASGIApp] = getattr(importlib.import_module(module), name)
        return factory()


def freeze_startup_heap() -> None:
    """Keep what loading built (modules, routes, models) out of full collections.

    Those objects live as long as the process, yet every full (generation 2) collection
    walked them all: under load a pause of about 200 ms every few seconds, which every
    request in flight waited out (the p99.9 of bench/tails.py). Once per process: a
    worker's start-up, never an app factory's (tests build many apps in one process).
    """
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()
        gen0, gen1, _ = gc.get_threshold()
        gc.set_threshold(gen0, gen1, FULL_COLLECTION_EVERY)


class Lifespan:
    """Drives an ASGI application's lifespan from the outside."""

    def __init__(self, app: ASGIApp, scope: Scope) -> None:
        self.app, self.scope = app, dict(scope)
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.outbox: asyncio.Queue[Message] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        async def run() -> None:
            await self.app(self.scope, self.inbox.get, self.outbox.put)

        self.task = asyncio.create_task(run(), name="service-lifespan")
        await self.inbox.put({"type": "lifespan.startup"})
        answer = await self._answer()
        if answer["type"] != "lifespan.startup.complete":
            raise RuntimeError(answer.get("message") or "the service's lifespan failed")

    async def shutdown(self) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        answer = await self._answer()
        if answer["type"] != "lifespan.shutdown.complete":
            log.error("the service's shutdown failed", extra={"detail": answer.get("message")})

    async def _answer(self) -> Message:
        assert self.task is not None
        get = asyncio.ensure_future(self.outbox.get())
        await asyncio.wait({get, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if get.done():
            return get.result()
        get.cancel()
        self.task.result()  # its exception, if it raised one
        raise RuntimeError("the service's lifespan ended without an answer")


def in_thread(call: Callable[[], T]) -> asyncio.Future[T]:
    """`call()` in a daemon thread: a worker told to stop does not wait for an import."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(done: Callable[[], object]) -> None:
        if not future.done():  # cancelled meanwhile
            done()

    def run() -> None:
        try:
            result = call()
        except BaseException as exc:
            outcome = functools.partial(future.set_exception, exc)
        else:
            outcome = functools.partial(future.set_result, result)
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
            loop.call_soon_threadsafe(settle, outcome)

    threading.Thread(target=run, name="load-service", daemon=True).start()
    return future


def _fail(exc: BaseException) -> None:
    try:
        # Here, not at the top: redaction imports SQLAlchemy (its cost: app/cli.py), which a
        # worker loads only with the service, behind its open port.
        from app.redaction import failure_line

        line = failure_line(exc)
    except Exception:  # the failure may be in what redaction imports
        line = type(exc).__name__
    log.critical("the service failed to load: %s", line)
    logging.shutdown()
    os._exit(STARTUP_FAILURE)


def _is_liveness(scope: Scope) -> bool:
    return (
        scope["path"] == "/health/live"
        and scope["method"] in ("GET", "HEAD")
        and not scope["query_string"]
    )


_ALIVE_BODY = orjson.dumps(ALIVE)


async def _alive(scope: Scope, send: Send) -> None:
    """The service's answer to `GET /health/live`: the same status, body and headers."""
    request_id = logs.request_id(scope["headers"])
    headers = [
        (b"content-length", b"%d" % len(_ALIVE_BODY)),
        (b"content-type", b"application/json"),
        (b"x-request-id", request_id.encode()),
    ]
    reset = logs.REQUEST_ID.set(request_id)  # for the access log line, as the service does
    try:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        body = b"" if scope["method"] == "HEAD" else _ALIVE_BODY
        await send({"type": "http.response.body", "body": body})
    finally:
        logs.REQUEST_ID.reset(reset)
