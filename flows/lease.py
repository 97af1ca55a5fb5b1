"""A runner's lease on a task, and the fence that keeps a runner that lost it from acting.

The process running a task claims it and renews its lease from a heartbeat thread; when the lease lapses in the
store, any other process may reap the task and take its hosts. So a runner must stop acting *before* the store can
think it lapsed: it trusts its lease only until its own monotonic clock, counted from the start of its last
successful renewal, passes the lease length minus a safety margin (a frozen or partitioned process finds it lapsed
on waking, whatever the store says). A renewal the store refuses (reaped, or another runner's) loses it for good.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from .background import background
from .errors import Fenced, StoreUnavailableError
from .store import TaskStore

log = logging.getLogger(__name__)


def new_runner_id() -> str:
    """Who runs a task: pid and host for people, a random tail so that no two runs ever share an id."""
    return f"pid {os.getpid()} on {socket.gethostname()} [{uuid.uuid4().hex[:8]}]"


class Lease:
    """This process's claim on one task. ``check()`` raises Fenced once it may have lost it.

    Use as a context manager: claims the task, renews in the background every third of the lease, stops on exit.
    """

    def __init__(self, store: TaskStore, task_id: int, seconds: float, runner: str | None = None) -> None:
        self.store, self.task_id, self.seconds = store, task_id, seconds
        self.runner = runner or new_runner_id()
        self.margin = min(5.0, seconds * 0.2)  # clock rates and the store's round trip
        self._valid_until = float("-inf")
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Lease:
        self._renew(claim=True)
        self.check()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.task_id}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def lost(self) -> str | None:
        """Why this runner may no longer act, or None while it holds the lease."""
        if self._lost is None and time.monotonic() > self._valid_until:
            return (
                f"the lease on task {self.task_id} was not renewed within {self.seconds - self.margin:.1f} s "
                "(the process was frozen or the store unreachable); another runner may have taken the task"
            )
        return self._lost

    def lose(self, reason: str) -> None:
        """Give the lease up for good: this runner acts no more (``check`` raises, running commands stop)."""
        if self._lost is None:
            self._lost = reason

    def check(self) -> None:
        """Raise Fenced if this runner may have lost the task."""
        reason = self.lost
        if reason is not None:
            raise Fenced(f"not acting: {reason}")

    def _renew(self, claim: bool = False) -> None:
        started = time.monotonic()
        if self.store.renew_lease(self.task_id, self.seconds, self.runner, claim=claim):
            self._valid_until = started + self.seconds - self.margin
        elif self._lost is None:
            self._lost = (
                f"the task store refused to renew the lease on task {self.task_id}: it was reaped or "
                "another runner holds it"
            )

    def _beat(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            if self._lost is not None:
                return
            try:
                self._renew()
            except StoreUnavailableError as exc:  # fail closed: the monotonic deadline runs out if this persists
                log.warning("task %s: could not renew the lease: %s", self.task_id, exc)


@contextmanager
def launch_grace(store: TaskStore, task_id: int, seconds: float) -> Iterator[None]:
    """Keep an unclaimed task from lapsing while its flow run waits to start (a slot, Prefect's API)."""

    def extend(stop: threading.Event) -> None:
        while not stop.wait(seconds / 3):
            try:
                store.extend_unclaimed(task_id, seconds)
            except StoreUnavailableError as exc:
                log.warning("task %s: could not extend its launch grace: %s", task_id, exc)

    store.extend_unclaimed(task_id, seconds)
    with background(extend, name=f"launch-{task_id}"):
        yield
