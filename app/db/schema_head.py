"""Whether a SQLite file's schema is at Alembic's head, told without Alembic.

`serve` on SQLite upgrades the schema before it opens its port; through Alembic that
imports SQLAlchemy, Alembic and the models (about a second of CPU) on every start, to find
nothing to do. The file's `alembic_version` against the head of `alembic/versions/` (their
`revision` and `down_revision` lines) answers that with the standard library. Anything
unexpected answers False, and the real upgrade runs (tests/test_startup.py holds the head
found here equal to Alembic's).
"""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from pathlib import Path

_REVISION = re.compile(r'^revision(?:: str)? = "([^"]+)"$', re.M)
_DOWN = re.compile(r'^down_revision(?:: [^=]+)? = (?:None|"([^"]+)")$', re.M)


def root() -> Path:
    """Where alembic/ is: the checkout in development; the working directory in an
    installed image."""
    for candidate in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (candidate / "alembic" / "env.py").exists():
            return candidate
    raise RuntimeError("alembic/ not found beside the package or in the working directory")


def head(versions: Path) -> str | None:
    """The single head revision, or None when the files say anything else."""
    revisions, parents = set(), set()
    for script in versions.glob("*.py"):
        text = script.read_text()
        found, down = _REVISION.findall(text), _DOWN.findall(text)
        if len(found) != 1 or len(down) != 1:
            return None  # a merge, a branch, or a layout this reading does not know
        revisions.add(found[0])
        if down[0]:
            parents.add(down[0])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def at_head(path: Path) -> bool:
    try:
        wanted = head(root() / "alembic" / "versions")
    except RuntimeError:
        return False
    if wanted is None:
        return False
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        return False  # no table yet, or not a database: the upgrade will say
    return rows == [(wanted,)]
