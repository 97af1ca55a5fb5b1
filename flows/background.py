"""A helper thread for the length of a ``with`` block."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def background(work: Callable[[threading.Event], None], name: str, join_seconds: float = 5.0) -> Iterator[None]:
    """Run ``work(stop)`` in a daemon thread while the block runs; on leaving it, set ``stop`` and wait up to
    ``join_seconds`` for the thread (a daemon: a stuck one never holds the process's exit)."""
    stop = threading.Event()
    thread = threading.Thread(target=work, args=(stop,), name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=join_seconds)
