from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from pathlib import Path

from alembic.config import Config

from alembic import command


def _root() -> Path:
    """The checkout in development; the working directory in an installed image."""
    for candidate in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (candidate / "alembic" / "env.py").exists():
            return candidate
    raise RuntimeError("alembic/ not found beside the package or in the working directory")


def alembic_config(url: str) -> Config:
    root = _root()
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "alembic"))
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


def upgrade(url: str, revision: str = "head") -> None:
    _off_loop(lambda: command.upgrade(alembic_config(url), revision))


def downgrade(url: str, revision: str) -> None:
    _off_loop(lambda: command.downgrade(alembic_config(url), revision))


async def upgrade_async(url: str, revision: str = "head") -> None:
    await asyncio.to_thread(upgrade, url, revision)


async def downgrade_async(url: str, revision: str) -> None:
    await asyncio.to_thread(downgrade, url, revision)
