"""PostgreSQL WAL positions as read-your-writes tokens (X-Consistency-Token)."""

from __future__ import annotations

import re

# The insert position covers a commit record even before it is flushed
# (synchronous_commit off), where pg_current_wal_lsn() can still be behind it.
WRITE_LSN = "SELECT pg_current_wal_insert_lsn()::text AS lsn"
_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def parse_lsn(value: str) -> int:
    match = _LSN.match(value.strip())
    if match is None:
        raise ValueError("a consistency token is a PostgreSQL LSN such as 0/16B3748")
    return (int(match[1], 16) << 32) + int(match[2], 16)
