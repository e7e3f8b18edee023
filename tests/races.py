"""What a race's answers may be on any machine, however slow or busy.

Racers that lose may be refused (409) or, while the database is contended, told to
come back (503 with Retry-After); which and how many depends on timing. What must
hold whatever the timing is checked in the database: exactly one change happened.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import httpx


def statuses(responses: Iterable[httpx.Response], allowed: set[int]) -> Counter[int]:
    """Each answer's status, every one in `allowed` or a 503 a client may retry."""
    counts: Counter[int] = Counter()
    for response in responses:
        if response.status_code == 503:
            assert int(response.headers["retry-after"]) >= 1, response.headers
            assert response.json()["error"] == "unavailable", response.text
        else:
            assert response.status_code in allowed, response.text
        counts[response.status_code] += 1
    return counts
