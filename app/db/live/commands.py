"""The CLI of a live migration: db sync, db cutover."""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import click

# app.cli imports this module to register the commands, so what they run is imported when
# they run: app.db.live.runner, .sync and .cutover bring SQLAlchemy (1.3 to 2 s alone by
# `python -X importtime`), app.config pydantic-settings (0.34 s), rich 0.09 s; see app/cli.py.


def _urls(sqlite_url: str | None, pg_url: str | None) -> tuple[str, str]:
    """Arguments, or DATABASE_URL and MIGRATION_TARGET_URL (the service's own settings)."""
    from app.config import async_url, load_settings

    if sqlite_url and pg_url:
        try:
            return async_url(sqlite_url), async_url(pg_url)
        except Exception:  # SQLAlchemy's message quotes the URL
            raise click.ClickException("not a valid database URL") from None
    settings = load_settings()
    if settings.migration_target_url is None or not settings.is_sqlite:
        raise click.ClickException(
            "give SQLITE_URL and POSTGRES_URL, or set DATABASE_URL (SQLite) "
            "and MIGRATION_TARGET_URL (PostgreSQL)"
        )
    return settings.primary_url, settings.migration_target_url.get_secret_value()


def _say(line: str) -> None:
    # Flushed line by line: the lag is watched through pipes and log files too.
    click.echo(f"{time.strftime('%H:%M:%S')} {line}")
    sys.stdout.flush()


@click.command(name="sync")
@click.argument("sqlite_url", required=False)
@click.argument("postgres_url", required=False)
@click.option("--interval", type=click.FloatRange(0.01), default=0.2, show_default=True)
@click.option("--remove", is_flag=True, help="Drop the capture and guard from both sides.")
def sync(sqlite_url: str | None, postgres_url: str | None, interval: float, remove: bool) -> None:
    """Copy SQLite to PostgreSQL, then apply every change as it is made, until stopped.

    Prints the lag (changes and seconds behind) every second; Ctrl-C or SIGTERM stops
    it cleanly and running it again resumes. After db cutover it carries the changes
    made on PostgreSQL back to SQLite, so db cutover --back loses nothing.
    """
    from rich.console import Console

    from app.db.live.runner import run_sync
    from app.db.live.sync import Pair, SyncError, remove_capture

    lite, pg = _urls(sqlite_url, postgres_url)

    async def main() -> None:
        pair = Pair.open(lite, pg)
        try:
            if remove:
                await remove_capture(pair)
                _say("capture and write guard removed from both databases")
                return
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await run_sync(pair, Console(stderr=True), interval=interval, stop=stop, show=_say)
            _say("sync stopped; run it again to resume")
        finally:
            await pair.dispose()

    try:
        asyncio.run(main())
    except SyncError as exc:
        raise click.ClickException(str(exc)) from None


@click.command(name="cutover")
@click.argument("sqlite_url", required=False)
@click.argument("postgres_url", required=False)
@click.option("--back", is_flag=True, help="Switch from PostgreSQL back to SQLite.")
@click.option(
    "--freeze-seconds",
    type=click.FloatRange(1),
    default=10.0,
    show_default=True,
    help="A freeze whose owner dies lifts by itself after this long.",
)
@click.option("--hold-before-switch", type=float, default=0.0, hidden=True)
def cutover(
    sqlite_url: str | None,
    postgres_url: str | None,
    back: bool,
    freeze_seconds: float,
    hold_before_switch: float,
) -> None:
    """Freeze writes, apply the last changes, verify, and switch every worker.

    Needs a running (or at least started) db sync. If verification fails nothing
    switches and writes resume where they were.
    """
    from app.db.live.cutover import CutoverOutcome, run_cutover
    from app.db.live.sync import Pair, SyncError

    lite, pg = _urls(sqlite_url, postgres_url)

    def hold() -> None:
        if hold_before_switch > 0:  # drills: the worst moment to die
            _say(f"holding {hold_before_switch:g} s before the switch")
            time.sleep(hold_before_switch)

    async def main() -> CutoverOutcome:
        pair = Pair.open(lite, pg)
        try:
            return await run_cutover(
                pair, back=back, freeze_seconds=freeze_seconds, show=_say, before_switch=hold
            )
        finally:
            await pair.dispose()

    try:
        outcome = asyncio.run(main())
    except SyncError as exc:
        raise click.ClickException(str(exc)) from None
    if not outcome.switched:
        raise click.ClickException(f"cutover refused ({outcome.reason}): nothing switched")
