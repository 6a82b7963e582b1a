"""Pausing Python's cycle collector for the length of one plan or apply.

A plan or apply of a large repo allocates millions of objects (decoded facts, job
index rows, documents) and keeps most of them until it ends. The collector's passes over
everything kept so far cost ~0.4 s of a 2 s plan at 10,000 jobs (measured) while finding
next to no cycles. Reference counting still frees everything else at once, so peak
memory does not change; the few cycles wait for the next collection after the block.

Does nothing else; nests (an inner pause leaves the collector as it found it).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Disable the cycle collector inside the block; restore its previous state after."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
