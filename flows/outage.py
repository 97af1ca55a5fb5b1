"""Riding out a task store that is briefly unavailable (a PostgreSQL restart, a full disk freed again): a run waits
for its next write instead of dying, and sends no command meanwhile, because a command whose start or end cannot
be recorded is one nobody could account for (#22).

The wait is bounded by the runner's lease: once the lease may have lapsed (its renewals go to the same store), the
runner is fenced (``Fenced``) and stops for good; the task is then reaped and can be retried.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from .errors import StoreUnavailableError

T = TypeVar("T")
RETRY_SECONDS = 0.5


class StoreOutage:
    """One run's view of the store's availability: waits out an outage, says once when it starts and ends."""

    def __init__(self, task_id: int, say: Callable[[str], None] | None = None) -> None:
        self.task_id = task_id
        self.say = say or _to_stderr
        self.since: float | None = None  # monotonic start of the current outage
        self.total = 0.0  # seconds spent waiting for the store in this run
        self._lock = threading.Lock()

    def wait(self, write: Callable[[], T], *, fence: Callable[[], None], doing: str) -> tuple[T, float]:
        """``write()`` once the store takes it; (its result, seconds this call waited). ``fence()`` is asked before
        every attempt and raises when the runner may no longer act (its lease lapsed while the store was down)."""
        began: float | None = None
        while True:
            fence()
            try:
                result = write()
            except StoreUnavailableError as exc:
                if began is None:
                    began = time.monotonic()
                self._down(exc, doing)
                time.sleep(RETRY_SECONDS)
                continue
            waited = time.monotonic() - began if began is not None else 0.0
            if began is not None:
                self._up()
            return result, waited

    def _down(self, exc: StoreUnavailableError, doing: str) -> None:
        with self._lock:
            if self.since is not None:
                return
            self.since = time.monotonic()
        self.say(
            f"task {self.task_id}: {exc.message}; waiting for it before {doing} (no command is sent to a host "
            "until the store records it; the run stops if its lease lapses first)"
        )

    def _up(self) -> None:
        with self._lock:
            if self.since is None:
                return
            seconds, self.since = time.monotonic() - self.since, None
            self.total += seconds
        self.say(f"task {self.task_id}: the task store answers again after {seconds:.1f} s; the run goes on")


def _to_stderr(message: str) -> None:
    print(f"ocp-restart: {message}", file=sys.stderr, flush=True)
