"""Limits on a request's head (request line and headers) on a real `serve`: real sockets,
raw bytes, the answer read as the server wrote it."""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.test_edges import Server, read_response, running, sqlite_env, status_of

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("head")
    with running(tmp, sqlite_env(tmp), "--no-access-log") as running_server:
        yield running_server


def head(*lines: bytes, target: bytes = b"/health/live") -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: test\r\n" + b"".join(lines) + b"\r\n"


def line(name: bytes, length: int) -> bytes:
    """A header line whose name and value together are `length` bytes."""
    return name + b": " + b"v" * (length - len(name)) + b"\r\n"


def send(sock: socket.socket, data: bytes, chunk: int) -> None:
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] if chunk else [data]
    try:
        for piece in pieces:
            sock.sendall(piece)
    except OSError:
        pass  # the server refused and closed before the end: read what it said


def exchange(port: int, data: bytes, chunk: int = 0) -> tuple[bytes, bool]:
    """Sends `data` (in pieces of `chunk` bytes when given) and reads one answer:
    (answer, whether the server closed the connection after it)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(30)
        send(sock, data, chunk)
        answer = read_response(sock)
        return answer, _closed(sock)


def served(port: int, data: bytes, chunk: int = 0) -> int | None:
    """The status of the answer to `data`, the connection left as the server keeps it."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(30)
        send(sock, data, chunk)
        return status_of(read_response(sock))


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def endless(port: int, opening: bytes, unit: bytes) -> tuple[bytes, bool]:
    """Sends `opening`, then `unit` for ever from a thread until the server cuts it off."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(30)

    def pump() -> None:
        try:
            sock.sendall(opening)
            for piece in itertools.repeat(unit):
                sock.sendall(piece)
        except OSError:
            pass

    sender = threading.Thread(target=pump, daemon=True)
    sender.start()
    try:
        answer = read_response(sock)
        closed = _closed(sock)
    finally:
        # Shut before closing: a descriptor closed under a blocked send may be reused by
        # another connection of the test, and the send would wait on that one.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sender.join(30)
        sock.close()
    assert not sender.is_alive()
    return answer, closed


def refused(answer: bytes, closed: bool, status: int) -> None:
    assert status_of(answer) == status, answer[:300]
    assert b"connection: close" in answer.lower()
    assert b'"error":' in answer
    assert closed


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [0, 100], ids=["one-read", "100-byte-reads"])
def test_an_over_long_header_line_is_431(server: Server, chunk: int) -> None:
    before = [line(b"X-Fine%d" % i, 8000) for i in range(3)]
    data = head(*before, line(b"X-Long", 8193), b"X-After: 1\r\n")
    answer, closed = exchange(server.port, data, chunk)
    refused(answer, closed, 431)
    assert b"a request header exceeds 8192 bytes" in answer
    # The last header is judged too (it ends with the head).
    refused(*exchange(server.port, head(line(b"X-Long", 8193)), chunk), 431)


def test_too_many_headers_are_431(server: Server) -> None:
    lines = [b"X-H%d: 1\r\n" % i for i in range(100)]  # 101 with Host
    answer, closed = exchange(server.port, head(*lines))
    refused(answer, closed, 431)
    assert b"more than 100 request headers" in answer


def test_too_many_bytes_in_all_are_431(server: Server) -> None:
    lines = [line(b"X-P%d" % i, 8000) for i in range(9)]  # each allowed, 72 KB together
    answer, closed = exchange(server.port, head(*lines))
    refused(answer, closed, 431)
    assert b"the request headers exceed 65536 bytes" in answer


def test_an_over_long_request_target_is_414(server: Server) -> None:
    answer, closed = exchange(server.port, head(target=b"/" + b"a" * 8192))
    refused(answer, closed, 414)
    assert b"the request target exceeds 8192 bytes" in answer


@pytest.mark.parametrize(
    ("opening", "unit", "status"),
    [
        # Header lines for ever, each within the line limit (the reported flood).
        (b"GET / HTTP/1.1\r\nHost: test\r\n", b"X-Pad: " + b"a" * 8000 + b"\r\n", 431),
        # One header line that never ends: held back by the total, never kept whole.
        (b"GET / HTTP/1.1\r\nHost: test\r\nX-Pad: ", b"a" * 4096, 431),
        # A request line that never ends.
        (b"GET /", b"a" * 4096, 414),
    ],
    ids=["lines", "one-line", "request-line"],
)
def test_endless_heads_are_cut_off(
    server: Server, opening: bytes, unit: bytes, status: int
) -> None:
    refused(*endless(server.port, opening, unit), status)


# -- what stays allowed -----------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [0, 1000], ids=["one-read", "1000-byte-reads"])
def test_large_allowed_heads_are_served(server: Server, chunk: int) -> None:
    # 7 lines of exactly 8192 bytes, 92 small ones (100 headers with Host): 57.9 KB.
    lines = [line(b"X-Big%d" % i, 8192) for i in range(7)]
    lines += [b"X-S%d: 1\r\n" % i for i in range(91)]
    lines.append(b"X-Request-ID: big-head-1\r\n")
    data = head(*lines, target=b"/api/v1/users?limit=1")
    assert 57_000 < len(data) < 65_536
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(30)
        send(sock, data, chunk)
        answer = read_response(sock)
    assert status_of(answer) == 200, answer[:300]
    assert b"x-request-id: big-head-1" in answer.lower()
    # The longest request target allowed reaches the service (a 404 for an unknown path).
    target = b"/" + b"a" * 8191
    assert served(server.port, head(target=target)) == 404


def test_the_budget_is_per_request_on_a_kept_connection(server: Server) -> None:
    """Twenty 40 KB heads on one connection (800 KB in all) are all served."""
    data = head(*[line(b"X-P%d" % i, 8000) for i in range(5)])
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(30)
        for _ in range(20):
            sock.sendall(data)
            assert status_of(read_response(sock)) == 200
        # Pipelined: three requests in one write, three answers.
        sock.sendall(head() * 3)
        answers = b""
        while answers.count(b"HTTP/1.1 200") < 3:
            chunk = sock.recv(65536)
            assert chunk, answers
            answers += chunk


def test_a_body_in_the_same_read_is_not_counted_as_head(server: Server) -> None:
    body = b'{"name": "' + b"x" * 200_000 + b'", "email": "big@example.com"}'
    data = (
        b"POST /api/v1/users HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    status = served(server.port, data)
    assert status is not None
    assert status != 431
    assert status < 500


# -- memory under a flood ---------------------------------------------------------------------


def test_memory_stays_flat_under_a_header_flood(server: Server) -> None:
    unit = b"X-Pad: " + b"a" * 8000 + b"\r\n"
    opening = b"GET / HTTP/1.1\r\nHost: test\r\n"
    for _ in range(20):  # warm: allocator arenas, the refusal path
        endless(server.port, opening, unit)
    baseline = server.rss_kib()
    peak, done = baseline, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.02):
            peak = max(peak, server.rss_kib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(lambda _: endless(server.port, opening, unit), range(150)))
    finally:
        done.set()
        sampler.join()
    assert [status_of(answer) for answer, _closed_after in answers] == [431] * 150
    # 50 connections at a time, each bounded by 64 KB of head plus a read: a few MB.
    assert peak - baseline < 32 * 1024, (baseline, peak)
    time.sleep(0.5)
    assert served(server.port, head()) == 200


@pytest.mark.parametrize(
    "data",
    [
        b"FOO /health/live HTTP/1.1\r\nHost: test\r\n\r\n",
        b"GET /health/live HTTP/1.1\r\nHost: test\r\nX-A: a\x00b\r\n\r\n",
        b"GET /health/\xff\x00 HTTP/1.1\r\nHost: test\r\n\r\n",
        b"POST /api/v1/users HTTP/1.1\r\nHost: test\r\nContent-Length: -1\r\n\r\n",
        b"POST /api/v1/users HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n"
        b"Content-Length: 3\r\n\r\n{}",
        b"POST /api/v1/users HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    ],
    ids=[
        "unknown-method",
        "nul-in-header",
        "bytes-in-target",
        "negative-length",
        "two-lengths",
        "length-and-chunked",
    ],
)
def test_what_is_not_http_is_a_400_with_the_error_body(server: Server, data: bytes) -> None:
    """The parser's refusals answer as every other error (uvicorn's own is plain text)."""
    answer, closed = exchange(server.port, data)
    refused(answer, closed, 400)
    assert b'"error":"bad_request"' in answer
    assert served(server.port, head()) == 200


# -- the settings reach the workers (through uvicorn's configuration, pickled) ----------------


def holder(sock: socket.socket, port: int) -> int:
    """The pid of the process holding the server's end of `sock`, read from /proc."""
    ends = f"0100007F:{port:04X} 0100007F:{sock.getsockname()[1]:04X}"
    (inode,) = [
        fields[9]
        for row in Path("/proc/net/tcp").read_text().splitlines()[1:]
        if " ".join((fields := row.split())[1:3]) == ends
    ]
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        with contextlib.suppress(OSError):
            if os.readlink(fd) == f"socket:[{inode}]":
                return int(fd.parts[2])
    raise AssertionError(f"no process holds the server's end of {ends}")


def test_limits_follow_the_settings_in_every_worker(tmp_path: Path) -> None:
    env = sqlite_env(
        tmp_path,
        MAX_URL_BYTES="512",
        MAX_HEADER_LINE_BYTES="1024",
        MAX_HEADER_COUNT="10",
        MAX_HEADER_BYTES="4096",
    )
    small = [b"X-%d: 1\r\n" % i for i in range(10)]
    checks = [
        (head(line(b"X-A", 1024)), 200),
        (head(line(b"X-A", 1025)), 431),
        (head(*small[:9]), 200),  # Host is the tenth
        (head(*small), 431),
        (head(*[line(b"X-%d" % i, 1000) for i in range(5)]), 431),
        (head(target=b"/" + b"a" * 511), 404),
        (head(target=b"/" + b"a" * 512), 414),
    ]
    with running(tmp_path, env, "--workers", "2", "--no-access-log") as server:
        # Every check answered by each worker: a connection's worker is known once it has
        # answered a first request; the check is the second request on that connection.
        answered: dict[int, set[int]] = {}
        for _ in range(100):
            for index, (data, status) in enumerate(checks):
                with socket.create_connection(("127.0.0.1", server.port)) as sock:
                    sock.settimeout(30)
                    sock.sendall(head())
                    assert status_of(read_response(sock)) == 200
                    worker = holder(sock, server.port)
                    sock.sendall(data)
                    answer = read_response(sock)
                    if status < 414:
                        assert status_of(answer) == status, answer[:300]
                    else:
                        refused(answer, _closed(sock), status)
                answered.setdefault(worker, set()).add(index)
            if len(answered) == 2 and all(len(done) == len(checks) for done in answered.values()):
                break
        assert len(answered) == 2, answered
        assert all(len(done) == len(checks) for done in answered.values()), answered
        assert server.proc.pid not in answered


def test_a_body_read_after_its_head_is_no_head(server: Server) -> None:
    """A body that comes in reads of its own, as most clients send one (the head, then
    the body), is answered, and none of it counts toward the next head on the connection.
    Its last read (the message's end) once did: from 64 KiB on, a write that committed got
    no answer at all (the connection closed as a 431), and smaller ends were carried into
    the next request's budget."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(30)
        for i in range(5):
            email = f"late-body-{os.getpid()}-{time.monotonic_ns()}-{i}@example.com"
            body = f'{{"email": "{email}", "name": "Late Body", "unified_role": "client"}}'
            padded = body.encode() + b" " * 100_000  # JSON white space: a valid body
            sock.sendall(
                b"POST /api/v1/users HTTP/1.1\r\nHost: test\r\nContent-Type: application/json"
                b"\r\nContent-Length: %d\r\n\r\n" % len(padded)
            )
            time.sleep(0.2)  # the head read and the request begun before the body comes
            sock.sendall(padded)
            answer = read_response(sock)
            assert status_of(answer) == 201, answer[:300]
            assert email.encode() in answer
            # A head of 40 KB next on the same connection: within its own budget.
            sock.sendall(head(*[line(b"X-P%d" % n, 8000) for n in range(5)]))
            assert status_of(read_response(sock)) == 200
