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
# A full collection's survivors are live. When at least FREEZE_AT of them are new since the
# last freeze (10,000 connections arriving leave about 230,000), they are frozen at once, so
# later full collections walk only what became long-lived since (see LiveHeap).
FREEZE_AT = 50_000
# The frozen heap is walked again this often (unfrozen, refrozen after the next full
# collection), freeing what died in reference cycles after it was frozen.
RECLAIM_SECONDS = 3600.0


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
            freeze_live_heap()  # before the lifespan's probes: its collection delays them
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


def freeze_live_heap() -> None:
    """Keep what lives long out of full collections (once per process: see LiveHeap).

    What loading built (modules, routes, models) lives as long as the process, yet every
    full (generation 2) collection walked it all: under load a pause of about 200 ms every
    few seconds, which every request in flight waited out (the p99.9 of bench/tails.py).
    It is frozen here, and LiveHeap freezes what arrives later in bulk (open connections).
    A worker's start-up calls this, never an app factory (tests build many apps in one
    process).
    """
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()
        gc.callbacks.append(LiveHeap())


class LiveHeap:
    """A gc callback: after a full collection, freezes its survivors when they are many.

    A full collection walks every object not frozen. 10,000 idle keep-alive connections
    are about 230,000 objects (uvloop's transport and timer, uvicorn's protocol, parser and
    flow control, the parser's bound callbacks): a pause of about 0.2 s of CPU each time,
    for objects that outlive many collections (bench/tails.py GET /_tails/census). Right
    after a full collection everything left is reachable, so freezing it then freezes no
    garbage; once FREEZE_AT survivors have piled up, they are frozen, and the next full
    collections walk only the few objects that became long-lived since.

    What this costs: an object frozen while alive and later left in a reference cycle is
    not freed until the frozen heap is walked again, every `reclaim_every` seconds.
    Closed connections are freed by reference counting, frozen or not.
    """

    def __init__(
        self,
        freeze_at: int = FREEZE_AT,
        reclaim_every: float = RECLAIM_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.freeze_at, self.reclaim_every, self.clock = freeze_at, reclaim_every, clock
        self.reclaimed = clock()

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase != "stop" or info["generation"] != 2:
            return
        now = self.clock()
        if now - self.reclaimed >= self.reclaim_every:
            self.reclaimed = now
            gc.unfreeze()  # the next full collection walks it all, once
        elif len(gc.get_objects(2)) >= self.freeze_at:
            gc.freeze()


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
