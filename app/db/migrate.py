from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable

from alembic.config import Config
from alembic.script import ScriptDirectory

from alembic import command
from app.db.live.guard import refuse_during_sync
from app.db.schema_head import root


def alembic_config(url: str) -> Config:
    where = root()
    config = Config(str(where / "alembic.ini"))
    config.set_main_option("script_location", str(where / "alembic"))
    # ConfigParser interpolation would eat a '%' in an encoded password.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _off_loop(call: Callable[[], None]) -> None:
    # Alembic's env.py runs its own event loop, which cannot nest in a running one.
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        call()
        return
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(call).result()


def _revision(config: Config, revision: str) -> str | None:
    """The id `revision` (head, base, an id or a prefix) stands for; None for base."""
    script = ScriptDirectory.from_config(config)
    if revision == "base":
        return None
    wanted = script.get_current_head() if revision == "head" else revision
    try:
        found = script.get_revision(wanted or "")
    except Exception:  # relative steps (+1, -1): a change for sure
        return f"{revision} (relative)"
    return found.revision if found is not None else None


def upgrade(url: str, revision: str = "head") -> None:
    def run() -> None:
        config = alembic_config(url)
        refuse_during_sync(url, _revision(config, revision))
        command.upgrade(config, revision)

    _off_loop(run)


def downgrade(url: str, revision: str) -> None:
    def run() -> None:
        config = alembic_config(url)
        refuse_during_sync(url, _revision(config, revision))
        command.downgrade(config, revision)

    _off_loop(run)


async def upgrade_async(url: str, revision: str = "head") -> None:
    await asyncio.to_thread(upgrade, url, revision)


async def downgrade_async(url: str, revision: str) -> None:
    await asyncio.to_thread(downgrade, url, revision)
