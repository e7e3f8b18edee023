"""The process's edges on a real uvicorn: big bodies, slow clients, liveness at start-up."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests import pgcluster
from tests.leaks import token
from tests.test_health import stop

ROOT = Path(__file__).parent.parent
MIB = 1024 * 1024
TOKEN = token()


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    started: float

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


def launch(tmp_path: Path, env: dict[str, str], *args: str, root: Path = ROOT) -> Server:
    """`python -m app serve` on a free port, not waited for."""
    port = pgcluster.free_port()
    log = tmp_path / f"serve-{port}.log"
    variables = ("DATABASE_URL", "REPLICA_URLS", "API_TOKENS", "ENVIRONMENT")
    clean = {k: v for k, v in os.environ.items() if k not in variables}
    clean |= {"DEMO_SEED": "false", **env}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", str(port), *args],
            cwd=root,
            env=clean,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Server(proc, port, log, time.monotonic())


def wait_port(server: Server, limit: float = 60.0) -> float:
    """Waits until the port accepts a connection; returns that moment (monotonic)."""
    deadline = time.monotonic() + limit
    while True:
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
            return time.monotonic()
        except OSError:
            pass
        if server.proc.poll() is not None or time.monotonic() > deadline:
            stop(server.proc)
            raise AssertionError(f"serve did not open its port:\n{server.log.read_text()}")
        time.sleep(0.02)


@contextmanager
def running(tmp_path: Path, env: dict[str, str], *args: str) -> Iterator[Server]:
    server = launch(tmp_path, env, *args)
    try:
        wait_port(server)
        yield server
    finally:
        stop(server.proc)


def sqlite_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'edges.db'}", **extra}


# -- raw HTTP -------------------------------------------------------------------------------


def status_of(response: bytes) -> int | None:
    """The status code of a raw HTTP response, None when nothing came back."""
    parts = response.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def read_response(sock: socket.socket) -> bytes:
    """Everything up to the end of one response's body (Content-Length) or the close."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return data
        if not chunk:
            return data
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length" and len(body) >= int(value):
                    return data


def post_stream(port: int, head: bytes, chunks: Iterable[bytes]) -> tuple[bytes, int]:
    """Sends `head` then `chunks` from a thread while reading the answer.

    Returns the answer and how many bytes of the body had been sent when it came (all
    of them when the server read the whole body first).
    """
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(60)
    sent = 0

    def pump() -> None:
        nonlocal sent
        try:
            sock.sendall(head)
            for chunk in chunks:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the server closed the connection: what a refusal does

    sender = threading.Thread(target=pump, daemon=True)
    sender.start()
    try:
        response = read_response(sock)
        sent_before_answer = sent
    finally:
        with contextlib.suppress(OSError):  # already reset by the server
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        sender.join(60)
    return response, sent_before_answer


def request_head(
    path: str, *, length: int | None = None, token: str | None = None, chunked: bool = False
) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: test", "Content-Type: application/json"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def junk(total: int, chunked: bool = False) -> Iterator[bytes]:
    block = b'{"junk": "' + b"x" * (MIB - 20) + b'",'
    block = block[:MIB]
    for _ in range(total // MIB):
        yield b"%x\r\n%s\r\n" % (len(block), block) if chunked else block
    if chunked:
        yield b"0\r\n\r\n"


# -- bodies -----------------------------------------------------------------------------------


def test_big_bodies_are_refused_before_they_are_read(tmp_path: Path) -> None:
    env = sqlite_env(tmp_path, API_TOKENS=TOKEN)
    with running(tmp_path, env, "--no-access-log") as server:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=server.base, timeout=10) as http:
            for _ in range(50):  # warm: imports, pools, allocator arenas
                http.post("/api/v1/users", content=b"{", headers=auth)
                http.get("/api/v1/users", params={"limit": 1}, headers=auth)
            # The token comes before the body is parsed: malformed JSON is 401, then 422.
            assert http.post("/api/v1/users", content=b"{").status_code == 401
            assert http.post("/api/v1/users", content=b"{", headers=auth).status_code == 422
            big = b'{"name": "' + b"x" * (MIB + 10) + b'"}'
            assert http.post("/api/v1/users", content=big, headers=auth).status_code == 413
        baseline = server.rss_kib()
        size = 200 * MIB
        cases = [
            ("no token", request_head("/api/v1/users", length=size), False, 401),
            ("declared", request_head("/api/v1/users", length=size, token=TOKEN), False, 413),
            ("chunked", request_head("/api/v1/users", token=TOKEN, chunked=True), True, 413),
        ]
        for name, head, chunked, expected in cases:
            response, sent = post_stream(server.port, head, junk(size, chunked))
            assert status_of(response) == expected, (name, response[:300])
            # Refused before it was read: answered with most of the body still unsent
            # (what had gone fits in the sockets' buffers).
            assert sent < size // 4, (name, sent)
            assert b"connection: close" in response.lower(), name
        after = server.rss_kib()
        assert after - baseline < 20 * 1024, (baseline, after)
        # Nothing was created, and the server still serves.
        with httpx.Client(base_url=server.base, timeout=10) as http:
            users = http.get("/api/v1/users", params={"limit": 5}, headers=auth)
            assert users.status_code == 200
            assert users.json()["items"] == []


def test_a_client_leaving_mid_body_or_refused_chunked_is_no_server_error(tmp_path: Path) -> None:
    """Neither a client that leaves before its body is in nor a chunked body past the limit
    is a server error: no `unhandled error` logged, no 5xx counted (a 499 and a 413)."""
    from tests.test_metrics import value

    env = sqlite_env(tmp_path, API_TOKENS=TOKEN, LOG_FORMAT="json")
    with running(tmp_path, env, "--no-access-log") as server:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.sendall(request_head("/api/v1/users", length=100, token=TOKEN) + b'{"na')
                time.sleep(0.2)  # its head is in and its body being read
        response, _ = post_stream(
            server.port,
            request_head("/api/v1/users", token=TOKEN, chunked=True),
            junk(2 * MIB, chunked=True),
        )
        assert status_of(response) == 413
        scrape = ""
        for _ in range(100):  # the three requests end when the server sees them gone
            scrape = httpx.get(f"{server.base}/metrics", timeout=10).text
            labels = {"handler": "/api/v1/users", "method": "POST"}
            if value(scrape, "http_requests_total", **labels, status="4xx") == 4:
                break
            time.sleep(0.1)
        assert value(scrape, "http_requests_total", **labels, status="4xx") == 4
        assert value(scrape, "http_requests_total", **labels, status="5xx") == 0
        with httpx.Client(base_url=server.base, timeout=10) as http:
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            users = http.get("/api/v1/users", params={"limit": 5}, headers=bearer)
            assert (users.status_code, users.json()["items"]) == (200, [])
    logged = server.log.read_text(errors="replace")
    assert "unhandled error" not in logged
    assert "Traceback" not in logged


# -- slow clients -------------------------------------------------------------------------------


def _held(sock: socket.socket, opened: float) -> tuple[int | None, float]:
    """Waits for the server to answer or close a stalled connection: (status, seconds open)."""
    response = read_response(sock)
    sock.close()
    return status_of(response), time.monotonic() - opened


def _kept_alive(port: int, idle: float) -> list[int | None]:
    """Two requests on one connection, `idle` seconds apart: their statuses."""
    request = b"GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(60)
        sock.sendall(request)
        statuses = [status_of(read_response(sock))]
        time.sleep(idle)
        with contextlib.suppress(OSError):  # closed meanwhile: no second answer
            sock.sendall(request)
        statuses.append(status_of(read_response(sock)))
    return statuses


def test_slow_clients_are_cut_while_others_are_served(tmp_path: Path) -> None:
    limit, idle_limit = 3.0, 7.0
    env = sqlite_env(
        tmp_path, API_TOKENS=TOKEN, HEADER_TIMEOUT="3", BODY_TIMEOUT="3", KEEP_ALIVE_TIMEOUT="7"
    )
    # Bounds that only catch a connection never cut: the server's own deadlines are
    # checked by what it answered (408, or a silent close), not by how fast.
    never = idle_limit + 60
    with running(tmp_path, env, "--no-access-log") as server, ThreadPoolExecutor(64) as pool:
        # A keep-alive connection idle for longer than HEADER_TIMEOUT stays usable.
        idle = pool.submit(_kept_alive, server.port, limit + 0.5)
        stalled: list[tuple[str, socket.socket, float]] = []
        for i in range(60):
            sock = socket.create_connection(("127.0.0.1", server.port))
            opened = time.monotonic()
            sock.settimeout(never)
            kind = ("silent", "crlf", "headers", "body")[i % 4]
            if kind == "crlf":  # bytes that begin no request do not keep a connection
                sock.sendall(b"\r\n")
            elif kind == "headers":
                sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: test\r\nX-Slow: ")
            elif kind == "body":
                head = request_head("/api/v1/users", length=100, token=TOKEN)
                sock.sendall(head + b'{"name": ')
            stalled.append((kind, sock, opened))
        # A client dripping its headers byte by byte is cut by the same deadline.
        drip = socket.create_connection(("127.0.0.1", server.port))
        drip_opened = time.monotonic()
        drip.settimeout(never)
        dripping = threading.Event()

        def drip_headers() -> None:
            try:
                for byte in b"GET /health/live HTTP/1.1\r\nHost: test\r\nX-Drip: 1234567890":
                    drip.send(bytes([byte]))
                    dripping.set()
                    time.sleep(0.2)
            except OSError:
                pass

        threading.Thread(target=drip_headers, daemon=True).start()
        dripping.wait(never)
        held = {pool.submit(_held, sock, opened): kind for kind, sock, opened in stalled}
        drip_held = pool.submit(_held, drip, drip_opened)
        served = 0
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=server.base, timeout=never) as http:
            for i in range(1000):
                if i % 2:
                    response = http.get("/api/v1/users", params={"limit": 1}, headers=auth)
                else:
                    response = http.get("/health/live")
                served += response.status_code == 200
        results = [(held[f], *f.result()) for f in held]
        drip_status, drip_seconds = drip_held.result()
        assert served == 1000
        for kind, status, seconds in results:
            if kind == "silent":
                # Idle like a keep-alive connection: closed without a word after
                # KEEP_ALIVE_TIMEOUT (counted from after it opened), not cut at the
                # header deadline.
                assert status is None, (kind, status)
                assert idle_limit - 0.5 < seconds < never - 10, (kind, seconds)
            else:
                assert status == 408, (kind, status)
        assert drip_status == 408, drip_seconds
        # Its second request came after HEADER_TIMEOUT: answered on the same connection.
        assert idle.result() == [200, 200]


# -- liveness at start-up ---------------------------------------------------------------------


@contextmanager
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not done.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        thread.join(5)
        for sock in accepted:
            sock.close()
        listener.close()


@pytest.mark.parametrize("replica", ["refusing", "hanging"])
def test_live_while_the_database_hangs(tmp_path: Path, replica: str) -> None:
    secret = "pw-hanging-" + os.urandom(6).hex()
    with silent_server() as primary_port, silent_server() as replica_port:
        replica_at = replica_port if replica == "hanging" else pgcluster.free_port()
        env = {
            "DATABASE_URL": f"postgresql://app:{secret}@127.0.0.1:{primary_port}/app",
            "REPLICA_URLS": f"postgresql://app:{secret}@127.0.0.1:{replica_at}/app",
            # The first probe round waits this long on the silent primary: still starting
            # when the checks below come, however busy the machine.
            "CONNECT_TIMEOUT": "60",
        }
        server = launch(tmp_path, env)
        try:
            wait_port(server)
            # Live as soon as it listens: answered while start-up still waits on the
            # database (ready says so after it), however slow the machine.
            live = httpx.get(f"{server.base}/health/live", timeout=30)
            assert live.status_code == 200
            ready = httpx.get(f"{server.base}/health/ready", timeout=30)
            assert ready.status_code == 503
            assert ready.json() == {"status": "not_ready", "error": "starting"}
        finally:
            stop(server.proc)
    assert secret not in server.log.read_text(errors="replace")
