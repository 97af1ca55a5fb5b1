"""Leases: a runner claims a task and renews its hold; an unclaimed task waits a grace for its runner."""

from __future__ import annotations

import time

from ..models import TaskStatus
from .database import Database
from .schema import tasks


class Leases(Database):
    def renew_lease(self, task_id: int, seconds: float, runner: str, *, claim: bool = False) -> bool:
        """Extend ``runner``'s lease by ``seconds``; with ``claim``, first take an unclaimed task. False (nothing
        written) when the task is not RUNNING under this runner (reaped, finished, or another runner's)."""
        owner = tasks.c.runner.in_([runner, ""]) if claim else tasks.c.runner == runner
        with self._write() as conn:
            return conn.execute(
                tasks.update().where(tasks.c.id == task_id, tasks.c.status == TaskStatus.RUNNING.value, owner)
                .values(lease_until=time.time() + seconds, runner=runner)
            ).rowcount == 1

    def extend_unclaimed(self, task_id: int, seconds: float) -> None:
        """Keep a RUNNING task that no runner has claimed yet from lapsing for ``seconds`` more."""
        with self._write() as conn:
            conn.execute(
                tasks.update().where(tasks.c.id == task_id, tasks.c.status == TaskStatus.RUNNING.value,
                                     tasks.c.runner == "", tasks.c.lease_until < time.time() + seconds)
                .values(lease_until=time.time() + seconds)
            )
