"""prometheus_client's choice of value storage, which it makes once, at its import.

Relies on `prometheus_client.values.ValueClass` and `MutexValue` (read, never replaced):
the library has no public way to ask whether its values go to PROMETHEUS_MULTIPROC_DIR.
It buys a clear start-up error instead of a scrape that silently misses every value when
the directory is set after the import (app/db/metrics.py settle_multiprocess).
tests/test_library_shapes.py fails when an installed prometheus_client changes either
name; pyproject.toml bounds it to the minor release they were read from.
"""

from __future__ import annotations

from prometheus_client import values


def file_backed() -> bool:
    """Whether this process's metric values are kept in files (multiprocess mode)."""
    return values.ValueClass is not values.MutexValue
