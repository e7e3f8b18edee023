"""The worker's garbage-collection policy (app/boot.py LiveHeap), in a process of its own:
freezing is process-wide, so each case runs in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PRELUDE = """
import gc, weakref
from app.boot import LiveHeap

class Node:
    pass

now = [0.0]
gc.collect()
gc.freeze()
heap = LiveHeap(freeze_at=20_000, reclaim_every=60.0, clock=lambda: now[0])
gc.callbacks.append(heap)

def walked():
    return len(gc.get_objects())
"""


def run(body: str) -> None:
    script = PRELUDE + textwrap.dedent(body)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_many_survivors_are_frozen_after_a_full_collection() -> None:
    run(
        """
        kept = [[i] for i in range(30_000)]
        frozen = gc.get_freeze_count()
        gc.collect()
        assert gc.get_freeze_count() >= frozen + 30_000, "the survivors were not frozen"
        assert walked() < 1_000, walked()
        # still alive and usable, and freed by reference counting when dropped
        assert sum(x[0] for x in kept) == sum(range(30_000))
        before = gc.get_freeze_count()
        del kept
        assert gc.get_freeze_count() <= before - 30_000, "frozen objects were not freed"
        """
    )


def test_few_survivors_stay_with_the_collector() -> None:
    run(
        """
        kept = [[i] for i in range(1_000)]
        frozen = gc.get_freeze_count()
        gc.collect()
        assert gc.get_freeze_count() == frozen
        assert walked() >= 1_000
        # garbage in a cycle among them is collected as usual
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        gc.collect()
        del a, b
        gc.collect()
        assert gone() is None
        """
    )


def test_a_cycle_that_died_frozen_is_freed_at_the_next_reclaim() -> None:
    run(
        """
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        bulk = [[i] for i in range(30_000)]
        gc.collect()  # a and b are frozen with the bulk
        del a, b
        gc.collect()
        assert gone() is not None, "a frozen cycle is walked before the reclaim"
        now[0] = 61.0
        gc.collect()  # reclaim due: the frozen heap is unfrozen after this collection
        assert gc.get_freeze_count() == 0
        gc.collect()  # walks it all: the dead cycle is freed, the live bulk frozen again
        assert gone() is None, "the reclaim did not free the dead cycle"
        assert gc.get_freeze_count() >= 30_000
        assert len(bulk) == 30_000
        """
    )


def test_a_worker_installs_the_policy_once() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import gc\nfrom app.boot import LiveHeap, freeze_live_heap\n"
            "freeze_live_heap()\nfreeze_live_heap()\n"
            "assert gc.get_freeze_count() > 0\n"
            "assert sum(isinstance(c, LiveHeap) for c in gc.callbacks) == 1, gc.callbacks\n",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
