"""Throwaway PostgreSQL clusters (primary + streaming replicas) and PgBouncer for tests."""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from app.urls import redact

SUPERUSER = "bookedbarber"
_HINT = "run scripts/ensure-postgres (as root) to install it"
_LIVE: dict[int, PgCluster | PgBouncer] = {}  # stopped by the atexit safety net


def find_pg_bin() -> Path:
    candidates: list[Path] = []
    if env := os.environ.get("PG_BIN"):
        candidates.append(Path(env))
    if shutil.which("pg_config"):
        res = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        if res.returncode == 0 and res.stdout.strip():
            candidates.append(Path(res.stdout.strip()))
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates.extend(sorted(versions, key=lambda p: _version_key(p.parent.name), reverse=True))
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).parent)
    for c in candidates:
        if (c / "initdb").is_file() and (c / "pg_ctl").is_file():
            return c
    raise RuntimeError(f"PostgreSQL server binaries (initdb, pg_ctl) not found; {_HINT}")


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", name)) or (0,)


# Ports handed out by this process: each once.
_HANDED: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, for a server bound later.

    Drawn below the kernel's ephemeral range: a port bind(0) picks comes from that range,
    where the many client connections the tests open take their local ports too, and
    one of them could hold it by the time the server binds.
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    while True:
        port = 10_000 + secrets.randbelow(max(low - 10_000, 10_000))
        if port in _HANDED:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED.add(port)
        return port


@cache
def _server_user() -> pwd.struct_passwd | None:
    """OS account the servers run as; None means the current user (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "bbtest"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "bbtest"],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam("bbtest")


def _clean_env(**extra: str) -> dict[str, str]:
    # Stray PGHOST/PGPORT/PGDATA etc. from the caller must never redirect us to another server.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(extra)
    return env


def _run(
    args: list[str | Path],
    *,
    as_server: bool = True,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 120,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    osu = _server_user() if as_server else None
    return subprocess.run(
        [str(a) for a in args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env if env is not None else _clean_env(),
        check=False,
        # cwd must be readable by the server user (root's cwd often is not)
        cwd=cwd or tempfile.gettempdir(),
        user=osu.pw_uid if osu else None,
        group=osu.pw_gid if osu else None,
        extra_groups=[] if osu else None,
    )


def _check(res: subprocess.CompletedProcess[str], what: str, log: str = "") -> str:
    if res.returncode != 0:
        msg = f"{what} failed (rc={res.returncode}): {res.stderr.strip()}\n{log}"
        raise RuntimeError(msg.rstrip())
    return res.stdout


def _prepare_dir(path: Path) -> Path:
    """Create `path` owned by the server user and make sure that user can traverse to it."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    if osu := _server_user():
        os.chown(path, osu.pw_uid, osu.pw_gid)
        tmp = Path(tempfile.gettempdir()).resolve()
        for parent in path.resolve().parents:
            st = parent.stat()
            if st.st_mode & stat.S_IXOTH or st.st_uid == osu.pw_uid:
                continue
            if parent != tmp and tmp not in parent.parents:  # only loosen dirs under the temp dir
                raise RuntimeError(
                    f"{parent} is not traversable by user {osu.pw_name}; use a dir under {tmp}"
                )
            parent.chmod(st.st_mode | stat.S_IXOTH)  # e.g. pytest's 0700 /tmp/pytest-of-root
    return path


def _wait_for(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    last_err = ""
    while True:
        try:
            if check():
                return
        except RuntimeError as e:  # server not ready yet, connection refused, ...
            last_err = str(e)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}. {last_err}".strip())
        time.sleep(interval)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _slot(node_name: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", node_name.lower())


# Every password a test made: a failing assertion that compares one shows it redacted
# (tests/conftest.py, pytest_assertrepr_compare).
SECRETS: set[str] = set()


class Hidden(str):
    """A password. Its repr, which pytest shows of a failing assertion, a traceback's
    arguments and --showlocals, hides it; as a str it is the password."""

    __slots__ = ()

    def __new__(cls, value: str) -> Hidden:
        SECRETS.add(value)
        return super().__new__(cls, value)

    def __repr__(self) -> str:
        return "'***'"


class SecretUrl(str):
    """A database URL whose repr hides its passwords (app.urls.redact)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(redact(self))


def _url(driver: str, user: str, password: str, port: int, database: str) -> SecretUrl:
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}"
    return SecretUrl(f"{driver}://{auth}@127.0.0.1:{port}/{database}")


@dataclass
class PgNode:
    name: str
    datadir: Path
    port: int
    bin: Path
    user: str = SUPERUSER
    password: str = field(default="", repr=False)

    @property
    def logfile(self) -> Path:
        return self.datadir / "server.log"

    @property
    def pid(self) -> int | None:
        try:
            return int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def _pg_ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return _run([self.bin / "pg_ctl", "-D", self.datadir, *args], timeout=timeout + 15)

    def start(self, timeout: float = 30) -> None:
        res = self._pg_ctl(
            "-l", str(self.logfile), "-w", "-t", str(int(timeout)), "start", timeout=timeout
        )
        _check(res, f"pg_ctl start of {self.name}", self.log_tail(20))

    def stop(self, mode: Literal["fast", "immediate", "smart"] = "fast") -> None:
        if not self.is_running():
            return
        res = self._pg_ctl("-m", mode, "-w", "-t", "60", "stop")
        if res.returncode != 0 and (pid := self.pid) is not None:  # last resort: SIGKILL
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def promote(self) -> None:
        res = self._pg_ctl("-w", "-t", "60", "promote")
        _check(res, f"promote of {self.name}", self.log_tail(20))

    def is_running(self) -> bool:
        return self.datadir.is_dir() and self._pg_ctl("status", timeout=10).returncode == 0

    def url(self, database: str = "bookedbarber", driver: str = "postgresql+asyncpg") -> SecretUrl:
        return _url(driver, self.user, self.password, self.port, database)

    def psql(self, sql: str, database: str = "bookedbarber", timeout: float = 60) -> str:
        args: list[str | Path] = [
            self.bin / "psql",
            "-XAtq",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            self.user,
            "-d",
            database,
            "-f",
            "-",
        ]
        # stdin (not -c) so each statement runs on its own, e.g. CREATE DATABASE after other SQL
        env = _clean_env(PGPASSWORD=self.password, PGCONNECT_TIMEOUT="10")
        res = _run(args, as_server=False, env=env, input=sql, timeout=timeout)
        return _check(res, f"psql on {self.name}").rstrip("\n")

    def log_tail(self, n: int = 50) -> str:
        try:
            lines = self.logfile.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def _append_conf(self, settings: dict[str, str | int]) -> None:
        conf = "".join(f"{k} = {v!r}\n" for k, v in settings.items())  # repr: 'quoted' strings
        with (self.datadir / "postgresql.conf").open("a") as f:
            f.write(f"\n# added by tests/pgcluster.py\n{conf}")


@dataclass
class PgCluster:
    primary: PgNode
    replicas: list[PgNode]
    base_dir: Path
    database: str = "bookedbarber"
    _nodes: list[PgNode] = field(default_factory=list, repr=False)  # every node ever started

    def __enter__(self) -> PgCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, keep_files: bool = False) -> None:
        for node in reversed(self._nodes):  # replicas first: avoids reconnect noise
            node.stop("immediate")
        _LIVE.pop(id(self), None)
        if not keep_files:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def add_replica(self, name: str) -> PgNode:
        """Clone the current `primary` (reassign it after a failover) and wait for streaming."""
        p = self.primary
        node = PgNode(name, self.base_dir / name, free_port(), p.bin, p.user, p.password)
        res = _run(
            [
                p.bin / "pg_basebackup",
                "-h",
                "127.0.0.1",
                "-p",
                str(p.port),
                "-U",
                p.user,
                "-D",
                node.datadir,
                "-R",
                "-X",
                "stream",
                "-C",
                "-S",
                _slot(name),
                "-c",
                "fast",
                "-N",
            ],
            env=_clean_env(PGPASSWORD=p.password),
        )
        _check(res, f"pg_basebackup for {name}")
        # the primary's log and socket lock file came along with the copy
        for copied in [node.logfile, *node.datadir.glob(".s.PGSQL.*")]:
            copied.unlink(missing_ok=True)
        node._append_conf(
            {
                "port": node.port,
                "unix_socket_directories": str(node.datadir),
                "cluster_name": f"bbtest-{name}",
            }
        )
        self._nodes.append(node)
        node.start()
        self.replicas.append(node)
        _wait_for(
            f"{name} in recovery",
            lambda: node.psql("SELECT pg_is_in_recovery()", "postgres") == "t",
            30,
        )
        self.wait_streaming(node)
        return node

    def wait_streaming(self, replica: PgNode, timeout: float = 30) -> None:
        # pg_stat_replication has no slot column; match the walsender via the slot's active_pid
        sql = (
            "SELECT count(*) FROM pg_stat_replication r"
            " JOIN pg_replication_slots s ON s.active_pid = r.pid"
            f" WHERE s.slot_name = '{_slot(replica.name)}' AND r.state = 'streaming'"
        )
        _wait_for(
            f"{replica.name} streaming from {self.primary.name}",
            lambda: self.primary.psql(sql, "postgres") == "1",
            timeout,
        )

    def wait_replica_caught_up(self, replica: PgNode, timeout: float = 30) -> None:
        # With synchronous_commit=off recent commits may not be flushed (= sent) yet, so the
        # primary's LSN would lag: commit a WAL-writing xact synchronously to flush everything.
        out = self.primary.psql(
            "SET synchronous_commit = on; BEGIN; SELECT pg_logical_emit_message(true, 'pgcluster',"
            " 'flush'); COMMIT; SELECT pg_current_wal_flush_lsn()",
            "postgres",
        )
        lsn = out.splitlines()[-1]
        sql = f"SELECT pg_wal_lsn_diff(coalesce(pg_last_wal_replay_lsn(), '0/0'), '{lsn}') >= 0"
        _wait_for(
            f"{replica.name} to replay up to {lsn}",
            lambda: replica.psql(sql, "postgres") == "t",
            timeout,
        )


def start_cluster(
    replicas: int = 1, base_dir: Path | None = None, database: str = "bookedbarber"
) -> PgCluster:
    bindir = find_pg_bin()
    base = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="bbtest-pg-"))
    _prepare_dir(base)
    password = Hidden("pw-" + secrets.token_urlsafe(16))
    primary = PgNode("primary", base / "primary", free_port(), bindir, SUPERUSER, password)
    cluster = PgCluster(primary, [], base, database, [primary])
    _LIVE[id(cluster)] = cluster
    try:
        pwfile = base / "pwfile"
        pwfile.write_text(password + "\n")
        if osu := _server_user():
            os.chown(pwfile, osu.pw_uid, osu.pw_gid)
        pwfile.chmod(0o600)
        for locale in ("C.UTF-8", "C"):
            res = _run(
                [
                    bindir / "initdb",
                    "-D",
                    primary.datadir,
                    "--auth=scram-sha-256",
                    f"--username={SUPERUSER}",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    f"--locale={locale}",
                    "-N",
                ]
            )
            if res.returncode == 0:
                break
            shutil.rmtree(primary.datadir, ignore_errors=True)
        pwfile.unlink()
        _check(res, "initdb")
        primary._append_conf(
            {
                "listen_addresses": "127.0.0.1",
                "port": primary.port,
                "unix_socket_directories": str(primary.datadir),
                "cluster_name": "bbtest-primary",
                # durability is pointless for throwaway clusters and costs a lot on CI disks
                "fsync": "off",
                "full_page_writes": "off",
                "synchronous_commit": "off",
                "wal_level": "replica",
                "max_wal_senders": 10,
                "max_replication_slots": 10,
                "hot_standby": "on",
                "hot_standby_feedback": "on",
                "wal_keep_size": "256MB",
                "max_connections": 300,
                "shared_buffers": "128MB",
                "logging_collector": "off",
                "log_min_messages": "warning",
                "wal_receiver_status_interval": "1s",
                "wal_retrieve_retry_interval": "500ms",
                "max_standby_streaming_delay": "30s",
            }
        )
        (primary.datadir / "pg_hba.conf").write_text(
            "local all all scram-sha-256\n"
            "local replication all scram-sha-256\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "host replication all 127.0.0.1/32 scram-sha-256\n"
        )
        primary.start(timeout=60)
        if database != "postgres":
            sql = f"CREATE DATABASE {_ident(database)} OWNER {_ident(SUPERUSER)}"
            primary.psql(sql, "postgres")
        for i in range(1, replicas + 1):
            cluster.add_replica(f"replica{i}")
    except BaseException:
        cluster.stop()
        raise
    return cluster


@dataclass
class PgBouncer:
    target: PgNode
    port: int
    dir: Path
    proc: subprocess.Popen[bytes] = field(repr=False)

    @property
    def logfile(self) -> Path:
        return self.dir / "pgbouncer.log"

    def url(self, database: str = "bookedbarber", driver: str = "postgresql+asyncpg") -> SecretUrl:
        return _url(driver, self.target.user, self.target.password, self.port, database)

    def is_running(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 50) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        _LIVE.pop(id(self), None)
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: immediate shutdown in PgBouncer 1.18
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_pgbouncer(
    target: PgNode,
    base_dir: Path,
    pool_mode: str = "transaction",
    pool_size: int = 20,
    binary: str | None = None,
    max_prepared_statements: int = 0,
) -> PgBouncer:
    """`binary` another PgBouncer than the machine's; `max_prepared_statements` needs 1.21+."""
    binary = binary or shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if binary is None:
        raise RuntimeError(f"pgbouncer binary not found; {_HINT}")
    port = free_port()
    d = _prepare_dir(Path(base_dir) / f"pgbouncer-{port}")
    osu = _server_user()
    # Plain-text password: PgBouncer then does SCRAM both towards clients and towards the server.
    userlist = d / "userlist.txt"
    userlist.write_text(f'"{target.user}" "{target.password}"\n')
    ini, bouncer_log = d / "pgbouncer.ini", d / "pgbouncer.log"
    ini.write_text(
        "[databases]\n"
        f"* = host=127.0.0.1 port={target.port}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = scram-sha-256\nauth_file = {userlist}\nadmin_users = {target.user}\n"
        f"pool_mode = {pool_mode}\ndefault_pool_size = {pool_size}\nmax_client_conn = 2000\n"
        "ignore_startup_parameters = extra_float_digits,statement_timeout,lock_timeout\n"
        f"pidfile = {d / 'pgbouncer.pid'}\n"
        "log_connections = 0\nlog_disconnections = 0\n"
        + (
            f"max_prepared_statements = {max_prepared_statements}\n"
            if max_prepared_statements
            else ""
        )
    )
    for f in (userlist, ini):
        if osu:
            os.chown(f, osu.pw_uid, osu.pw_gid)
        f.chmod(0o600)
    # No `logfile` in the ini: a foreground pgbouncer logs everything to stderr, including config
    # errors raised before it would open a logfile, so stderr *is* the log.
    with bouncer_log.open("wb") as log:
        proc = subprocess.Popen(
            [binary, str(ini)],
            cwd=d,
            env=_clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            user=osu.pw_uid if osu else None,
            group=osu.pw_gid if osu else None,
            extra_groups=[] if osu else None,
        )
    bouncer = PgBouncer(target, port, d, proc)
    _LIVE[id(bouncer)] = bouncer

    def accepting() -> bool:
        if proc.poll() is not None:  # not a RuntimeError, so _wait_for gives up at once
            msg = f"pgbouncer exited with {proc.returncode}: {bouncer.log_tail(20)}"
            raise ChildProcessError(msg)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    try:
        _wait_for(f"pgbouncer to listen on {port}", accepting, 15)
    except BaseException:
        bouncer.stop()
        raise
    return bouncer


@atexit.register
def _stop_leftovers() -> None:
    for obj in reversed(list(_LIVE.values())):  # bouncers were started after their clusters
        with contextlib.suppress(Exception):  # best effort at interpreter exit
            obj.stop()
