"""Reaping lapsed leases in the server's background, so that reads never write.

A task whose runner died or froze stops renewing its lease; ``TaskStore.reap_expired`` marks it FAILED and
releases its hosts. The server does that every second or so, whether or not anyone is reading: a GET then costs a
read transaction alone (on SQLite, a write would queue behind the single writer).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from flows.background import background
from flows.store import TaskStore

logger = logging.getLogger(__name__)


def reap_until(stop: threading.Event, store: TaskStore, seconds: float) -> None:
    """Reap lapsed leases now and every ``seconds`` until ``stop``. A store that fails is logged once, not once a
    tick, and tried again at the next tick; its recovery is logged too."""
    failing = False
    while True:
        try:
            reaped = store.reap_expired()
        except Exception as exc:  # the store may be down for a while: the server must outlive it
            if not failing:
                logger.warning("reaping lapsed task leases failed (will retry every %g s): %s", seconds, exc)
            failing = True
        else:
            if failing:
                logger.warning("reaping lapsed task leases works again")
            failing = False
            if reaped:
                logger.info("marked FAILED the task(s) %s: their runner stopped renewing its lease", reaped)
        if stop.wait(seconds):
            return


@contextmanager
def reaping(store: TaskStore, seconds: float) -> Iterator[None]:
    """Reap lapsed leases in a background thread for the length of the block; on leaving it the thread stops,
    after the reap under way if any."""
    with background(lambda stop: reap_until(stop, store, seconds), name="lease-reaper", join_seconds=30):
        yield
