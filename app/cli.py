"""bookedbarber: serve the API and manage its database."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from app.db.live.commands import cutover, sync
from app.db.schema_head import at_head
from app.urls import backend, database, redact

if TYPE_CHECKING:
    from rich.console import Console

    from app.config import Settings
    from app.db.transfer.report import Report

_Command = TypeVar("_Command", bound=Callable[..., object])
# The listen queue: uvicorn's 2048 overflows when 10,000 clients connect at once (a
# restart behind a load balancer; bench/run.py scenario c's warm-up): each dropped
# handshake is retried by the client a second or more later, and its first request
# waits as long. The kernel caps it at net.core.somaxconn (4096 by default since 5.4).
LISTEN_BACKLOG = 16384

# The commands import the rest themselves. This module is imported by `--help`, by `serve`
# before its port opens, and again by each of `db copy`'s spawned workers; with every import
# at the top it took 1.6 to 5 s instead of 0.2 s (`python -X importtime -c 'import app.cli'`;
# bench/startup.py times `serve`). By group, imported alone: SQLAlchemy with what is built on
# it (app.redaction 0.5 s, app.db.engine 1.0 s, app.db.seed 0.9 s, app.db.migrate with
# Alembic 1.5 s), pydantic-settings (app.config 0.34 s), uvicorn with
# app.adapters.uvicorn_http (0.16 s, only `serve` needs it), app.db.transfer (0.15 s),
# rich (0.09 s).


def _settings() -> Settings:
    from app.config import ConfigError, load_settings

    try:
        return load_settings()
    except ConfigError as exc:  # names the variable and the problem, never the value
        raise click.ClickException(str(exc)) from None


def _sqlite_path(url: str) -> Path | None:
    name = database(url)
    if backend(url) != "sqlite" or name in (None, "", ":memory:"):
        return None
    return Path(name or "")


class _Commands(click.Group):
    """Any failure is one line on stderr; --debug adds the traceback. Neither holds a secret."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            from app.redaction import failure_line, scrub

            if ctx.params.get("debug"):
                click.echo(scrub("".join(traceback.format_exception(exc))), err=True)
                raise click.ClickException(failure_line(exc)) from None
            raise click.ClickException(
                f"{failure_line(exc)} (--debug shows the traceback)"
            ) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show the traceback of a failure (secrets hidden).")
def main(debug: bool) -> None:
    """BookedBarber data service."""


@main.command()
@click.option("--host", default=None, help="Interface to bind (HOST, default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (PORT, default 8000).")
@click.option("--workers", type=int, default=None, help="Worker processes (WORKERS, default 1).")
@click.option("--keep-alive", type=int, default=None, help="Idle keep-alive seconds (default 75).")
@click.option(
    "--backlog",
    type=int,
    default=LISTEN_BACKLOG,
    show_default=True,
    help="Connections the kernel queues before they are accepted (capped by net.core.somaxconn).",
)
@click.option("--access-log/--no-access-log", default=True)
def serve(
    host: str | None,
    port: int | None,
    workers: int | None,
    keep_alive: int | None,
    backlog: int,
    access_log: bool,
) -> None:
    """Serve the HTTP API with uvicorn (uvloop, httptools)."""
    # Each worker loads the service behind its open port (app/boot.py).
    import uvicorn

    from app import logs
    from app.adapters import uvicorn_http, uvloop_accept

    settings = _settings()
    path = _sqlite_path(settings.primary_url)
    if path is not None:
        # The embedded default works out of the box: schema, and demo data when new.
        new = not path.exists()
        if new or not at_head(path):
            from app.db.migrate import upgrade

            upgrade(settings.primary_url)
        if new and settings.demo_seed:
            _seed(settings.primary_url, 0.01)
            click.echo(f"created {path} with demo data")
    workers = workers or settings.workers
    # The workers read their settings afresh: they size their pools by this count.
    os.environ["WORKERS"] = str(workers)
    if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Several workers share one scrape through prometheus_client's multiprocess mode.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bookedbarber-metrics-")
    uvicorn.run(
        "app.boot:create",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        # uvloop, accepting every waiting connection at each wakeup.
        loop=uvloop_accept.UVICORN_LOOP,
        # httptools with limits on a request's head: its time and its size.
        http=uvicorn_http.protocol(settings),
        timeout_keep_alive=keep_alive or settings.keep_alive_timeout,
        backlog=backlog,
        timeout_worker_healthcheck=settings.worker_healthcheck_timeout,  # type: ignore[arg-type]
        access_log=access_log,
        log_config=logs.config(settings),
        log_level=settings.log_level,
        server_header=False,
    )


@main.group()
def db() -> None:
    """Schema, demo data and data transfer."""


def _target(url: str | None) -> str:
    from app.config import checked_url

    if not url:
        return _settings().primary_url
    try:
        return checked_url("--url", url)
    except ValueError as exc:  # names the option and the problem, never the value
        raise click.ClickException(str(exc)) from None


@db.command()
@click.option("--url", help="Database URL (default: DATABASE_URL).")
@click.option("--revision", default="head", show_default=True)
def upgrade(url: str | None, revision: str) -> None:
    """Apply migrations."""
    from app.db.migrate import upgrade as run

    target = _target(url)
    run(target, revision)
    click.echo(f"upgraded {redact(target)} to {revision}")


@db.command()
@click.option("--url", help="Database URL (default: DATABASE_URL).")
@click.argument("revision")
def downgrade(url: str | None, revision: str) -> None:
    """Revert migrations down to REVISION (for example base)."""
    from app.db.migrate import downgrade as run

    target = _target(url)
    run(target, revision)
    click.echo(f"downgraded {redact(target)} to {revision}")


def _seed(url: str, scale: float) -> dict[str, int]:
    from app.config import Settings
    from app.db.engine import create_engine
    from app.db.seed import seed_demo

    async def run() -> dict[str, int]:
        engine = create_engine(url, Settings(database_url=url, demo_seed=False))
        try:
            return (await seed_demo(engine, scale)).rows
        finally:
            await engine.dispose()

    return asyncio.run(run())


@db.command()
@click.option("--url", help="Database URL (default: DATABASE_URL).")
@click.option("--demo", is_flag=True, required=True, help="Generate demo data.")
@click.option(
    "--scale",
    type=click.FloatRange(0.0001, 10),
    default=0.01,
    show_default=True,
    help="1 = 50 locations, 2,000 barbers, 100,000 clients, 1,000,000 appointments.",
)
@click.option(
    "--upgrade/--no-upgrade",
    "migrate",
    default=True,
    show_default=True,
    help="Apply migrations first.",
)
def seed(url: str | None, demo: bool, scale: float, migrate: bool) -> None:
    """Fill an empty database with realistic demo data."""
    from app.db.seed import DatabaseNotEmpty

    target = _target(url)
    if migrate:
        from app.db.migrate import upgrade as run

        run(target)
    started = time.perf_counter()
    try:
        rows = _seed(target, scale)
    except DatabaseNotEmpty as exc:
        raise click.ClickException(str(exc)) from exc
    elapsed = time.perf_counter() - started
    summary = ", ".join(f"{n:,} {table}" for table, n in rows.items())
    click.echo(f"seeded {redact(target)} in {elapsed:.1f}s: {summary}")


def _transfer_options(func: _Command) -> _Command:
    for option in (
        click.option("--json", "as_json", is_flag=True, help="Print the report as JSON."),
        click.option("--round-money", is_flag=True, help="Round values to the column's scale."),
        click.option("--strip-nul", is_flag=True, help="Store text without its NUL bytes."),
    ):
        func = option(func)
    return func


def _one_line(what: str, exc: Exception) -> str:
    from app.redaction import failure_line

    return f"{what} failed: {failure_line(exc)}"


def _finish(report: Report | None, as_json: bool, error: str | None, console: Console) -> None:
    """The report (a table, or JSON on stdout), then one line; a non-zero exit on failure."""
    from app.db import transfer

    if error is not None:  # the copier's lines show URLs redacted; this hides whatever slipped
        from app.redaction import scrub

        error = scrub(error)
    if as_json:
        click.echo(transfer.to_json(report or transfer.Report(), error))
    elif report is not None:
        transfer.render(report, console)
    if error is not None:
        raise click.ClickException(error)


def _unserved(source_url: str, target_url: str) -> str | None:
    """The line refusing a URL whose scheme the service cannot serve, as serve's does."""
    from app.config import checked_url

    for name, url in (("SOURCE_URL", source_url), ("TARGET_URL", target_url)):
        try:
            checked_url(name, url)
        except ValueError as exc:
            return str(exc)
    return None


@db.command(name="copy")
@click.argument("source_url")
@click.argument("target_url")
@click.option("--truncate", is_flag=True, help="Replace rows the target tables already hold.")
@click.option("--batch-size", type=click.IntRange(1), default=10_000, show_default=True)
@click.option("--strict", is_flag=True, help="Refuse values the declared types do not hold.")
@click.option(
    "--jobs",
    type=click.IntRange(1, 16),
    default=2,
    show_default=True,
    help="Tables loaded at once.",
)
@_transfer_options
def copy_data(
    source_url: str,
    target_url: str,
    truncate: bool,
    batch_size: int,
    strict: bool,
    jobs: int,
    round_money: bool,
    strip_nul: bool,
    as_json: bool,
) -> None:
    """Copy every table SQLite -> PostgreSQL (or back), resumably, then verify."""
    from rich.console import Console

    from app.db import transfer
    from app.db.invariants import ServiceRules

    console = Console(stderr=True)
    opts = transfer.CopyOptions(
        truncate, round_money, strip_nul, batch_size, strict, ServiceRules(), jobs
    )
    if (refused := _unserved(source_url, target_url)) is not None:
        _finish(None, as_json, refused, console)
        return
    try:
        report = asyncio.run(transfer.copy(source_url, target_url, opts, console))
    except transfer.TransferError as exc:
        _finish(exc.report or transfer.Report(), as_json, str(exc), console)
        return
    except Exception as exc:  # one line, never a traceback, never a password
        _finish(
            transfer.Report(),
            as_json,
            _one_line("copy", exc),
            console,
        )
        return
    _finish(report, as_json, None, console)
    if not as_json:
        click.echo(
            f"copied {report.total_rows:,} rows into {redact(target_url)} "
            f"({report.rows_copied:,} in this run); verified"
        )


@db.command(name="verify")
@click.argument("source_url")
@click.argument("target_url")
@_transfer_options
def verify_data(
    source_url: str, target_url: str, round_money: bool, strip_nul: bool, as_json: bool
) -> None:
    """Compare schemas, row counts and content checksums of every table on both sides."""
    from rich.console import Console

    from app.db import transfer

    console = Console(stderr=True)
    opts = transfer.CopyOptions(round_money=round_money, strip_nul=strip_nul)
    if (refused := _unserved(source_url, target_url)) is not None:
        _finish(None, as_json, refused, console)
        return
    try:
        report = asyncio.run(transfer.verify(source_url, target_url, opts))
    except transfer.TransferError as exc:
        _finish(transfer.Report(), as_json, str(exc), console)
        return
    except Exception as exc:
        _finish(
            transfer.Report(),
            as_json,
            _one_line("verify", exc),
            console,
        )
        return
    _finish(report, as_json, None if report.ok else "the databases differ", console)
    if not as_json:
        click.echo(f"{len(report.checks)} tables match")


db.add_command(sync)
db.add_command(cutover)

if __name__ == "__main__":
    main()
