"""Leases: a runner claims a task and renews its hold; an unclaimed task waits a grace for its runner; a task whose
lease lapsed (its runner died or froze) is reaped: marked FAILED, its hosts released."""

from __future__ import annotations

import os
import socket
import time
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .. import machine
from ..models import TaskStatus, format_time, now
from .database import Database
from .processes import reap_operations
from .schema import tasks
from .tasks import load_record
from .transitions import write_transition


class Leases:
    """Claiming, renewing and reaping. Reads never reap: reaping runs where the store writes anyway (a new task, a
    retry, a runner's claim) and wherever ``reap_expired`` is called (the API server, ``ocp-restart status``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def renew_lease(self, task_id: int, seconds: float, runner: str, *, claim: bool = False) -> bool:
        """Extend ``runner``'s lease by ``seconds``; with ``claim``, first take an unclaimed task (and reap every
        other lapsed lease, in the same transaction). False (nothing written) when the task is not RUNNING under
        this runner (reaped, finished, or another runner's)."""
        owner = tasks.c.runner.in_([runner, ""]) if claim else tasks.c.runner == runner
        with self.db.write() as conn:
            if claim:  # a runner's start; its own task is claimed as before, whatever its launch grace said
                self.reap(conn, sparing=task_id)
            return (
                conn.execute(
                    tasks.update()
                    .where(tasks.c.id == task_id, tasks.c.status == TaskStatus.RUNNING.value, owner)
                    .values(lease_until=time.time() + seconds, runner=runner)
                ).rowcount
                == 1
            )

    def extend_unclaimed(self, task_id: int, seconds: float) -> None:
        """Keep a RUNNING task that no runner has claimed yet from lapsing for ``seconds`` more."""
        with self.db.write() as conn:
            conn.execute(
                tasks.update()
                .where(
                    tasks.c.id == task_id,
                    tasks.c.status == TaskStatus.RUNNING.value,
                    tasks.c.runner == "",
                    tasks.c.lease_until < time.time() + seconds,
                )
                .values(lease_until=time.time() + seconds)
            )

    def reap_expired(self) -> list[int]:
        """Mark FAILED every RUNNING task whose lease lapsed (its runner died or froze); returns their ids."""
        with self.db.write() as conn:
            return self.reap(conn)

    def reap(self, conn: Connection, *, sparing: int | None = None) -> list[int]:
        """``reap_expired`` in the caller's transaction; the task ``sparing`` is left alone."""
        conditions = [tasks.c.status == TaskStatus.RUNNING.value, tasks.c.lease_until < time.time()]
        if sparing is not None:
            conditions.append(tasks.c.id != sparing)
        expired = conn.execute(sa.select(tasks.c.id, tasks.c.runner, tasks.c.lease_until).where(*conditions)).all()
        stamp = format_time(now())
        for task_id, runner, lease_until in expired:
            lapsed = datetime.fromtimestamp(lease_until).astimezone().isoformat(timespec="milliseconds")
            why = (
                f"{stamp} ERROR --- the process running task {task_id} ({runner or 'never started'}) stopped "
                f"renewing its lease at {lapsed}; marked FAILED by pid {_me()}. Retry the task to continue "
                "from here."
            )
            write_transition(conn, machine.abort(load_record(conn, task_id, for_update=True), stamp, why), None)
        reap_operations(conn)  # process operations whose process died hold their host no longer
        return [row.id for row in expired]


def _me() -> str:
    return f"{os.getpid()} on {socket.gethostname()}"
