"""Applying the state machine's transitions, each guarded by what it expects (compare-and-set).

A transition names the rows it changes and the status each must still have; the task row must still have the
status (and runner) the transition was computed from, and a runner's writes also require the task to be its own.
If anything differs, the whole transaction is rolled back and StaleWriteError raised: a stale writer is refused,
not obeyed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .. import machine
from ..errors import StaleWriteError
from ..machine import Transition
from ..models import SubtaskStatus, TaskStatus, format_time, now
from ..records import TaskRecord
from .rows import subtask_values, task_values
from .schema import host_locks, subtask_logs, subtasks, tasks
from .tasks import TaskRows


# The runner's hot path (two transitions per subtask, 10,008 for 1,000 hosts) executes statements built once with
# bound parameters: SQLAlchemy then skips building the statement and its cache key on every call, which was most
# of the store's CPU (#14).
_TASK_ROW = sa.select(tasks.c.status, tasks.c.runner).where(tasks.c.id == sa.bindparam("task_id")).with_for_update()


@lru_cache(maxsize=64)
def _update_subtask(columns: tuple[str, ...], expected: int) -> sa.Update:
    """``UPDATE subtasks SET <columns> WHERE id = :subtask_id AND status IN (<expected> values)``; parameters ``subtask_id``,
    ``expect0``.., ``set_<column>``."""
    return (subtasks.update()
            .where(subtasks.c.id == sa.bindparam("subtask_id"),
                   subtasks.c.status.in_([sa.bindparam(f"expect{i}") for i in range(expected)]))
            .values({column: sa.bindparam(f"set_{column}") for column in columns}))


class Transitions(TaskRows):
    def apply(self, transition: Transition, *, runner: str | None = None) -> TaskRecord:
        """Persist ``transition`` in one transaction, or refuse it (StaleWriteError) and write nothing.

        ``runner``: the write is a runner's, valid only while the task is RUNNING under that runner id.
        """
        with self._write() as conn:
            self._apply(conn, transition, runner)
        return transition.after

    def _apply(self, conn: Connection, t: Transition, runner: str | None) -> None:
        before, task_id = t.before.task, t.before.task.id
        row = conn.execute(_TASK_ROW, {"task_id": task_id}).first()
        if row is None or row.status != before.status.value:
            raise StaleWriteError(f"task {task_id} is {row.status if row else 'gone'}, not {before.status.value}: "
                                  "refusing a stale write")
        if runner is not None and (row.status != TaskStatus.RUNNING.value or row.runner != runner):
            raise StaleWriteError(f"task {task_id} is no longer run by {runner} (now {row.runner or 'nobody'}): "
                                  "refusing its write")
        if t.task_changed and row.runner != before.runner:
            raise StaleWriteError(f"task {task_id} changed runner ({before.runner or 'nobody'} -> "
                                  f"{row.runner or 'nobody'}): refusing a stale write")
        for sub in t.changed:
            expected = [s.value for s in t.expect[sub.id]]
            # Only what this transition changed: e.g. an operator's CANCEL (written by another process since the
            # runner read the row) survives the runner's finish.
            old = subtask_values(t.before.subtask(sub.id))
            values = {k: v for k, v in subtask_values(sub).items() if v != old[k] or k == "status"}
            params = {"subtask_id": sub.id, **{f"expect{i}": e for i, e in enumerate(expected)},
                      **{f"set_{k}": v for k, v in values.items()}}
            done = conn.execute(_update_subtask(tuple(values), len(expected)), params).rowcount
            if done != 1:
                raise StaleWriteError(f"subtask {sub.id} of task {task_id} is no longer {' or '.join(expected)}: "
                                      "refusing a stale write")
        if t.task_changed:
            conn.execute(tasks.update().where(tasks.c.id == task_id).values(**task_values(t.after.task)))
        if t.lock_hosts:
            self._lock_hosts(conn, task_id, t.after.task.host_ids, format_time(now()))
        if t.release_hosts:
            conn.execute(host_locks.delete().where(host_locks.c.task_id == task_id))
        if t.logs:
            conn.execute(subtask_logs.insert(), [{"subtask_id": sid, "text": text} for sid, text in t.logs])

    # -- operator operations: load, decide (pure), apply guarded, in one transaction -------------------------

    def _operate(self, task_id: int, decide: Callable[[TaskRecord], Transition], reap: bool = True) -> TaskRecord:
        with self._write() as conn:
            if reap:
                self._reap(conn)
            transition = decide(self._load(conn, task_id, for_update=True))
            self._apply(conn, transition, None)
        return transition.after

    def retry_task(self, task_id: int) -> TaskRecord:
        """FAILED subtasks -> READY (operation RETRY, runTime + 1); their never-run downstream follows them."""
        return self._operate(task_id, lambda r: machine.retry_task(r, time.time()))

    def retry_subtask(self, task_id: int, subtask_id: int) -> TaskRecord:
        return self._operate(task_id, lambda r: machine.retry_subtask(r, subtask_id, time.time()))

    def skip_subtask(self, task_id: int, subtask_id: int) -> TaskRecord:
        """A FAILED subtask becomes SUCCESSFUL without running (operation SKIP); the task goes on."""
        return self._operate(task_id, lambda r: machine.skip_subtask(r, subtask_id, time.time()))

    def skip_failed(self, task_id: int) -> TaskRecord:
        """Every FAILED subtask becomes SUCCESSFUL without running (operation SKIP); the task goes on."""
        return self._operate(task_id, lambda r: machine.skip_failed(r, time.time()))

    def cancel_subtask(self, task_id: int, subtask_id: int) -> TaskRecord:
        """RUNNING -> CANCELING; the step sees it, kills its remote command and ends FAILED."""
        return self._operate(task_id, lambda r: machine.cancel_subtask(r, subtask_id), reap=False)

    def rollback_task(self, task_id: int) -> TaskRecord:
        """Every subtask that ran (or was ready) -> READY with operation ROLLBACK; undone in reverse order."""
        return self._operate(task_id, lambda r: machine.rollback_task(r, time.time()), reap=False)

    def abort_task(self, task_id: int, reason: str) -> TaskRecord:
        """FAIL a task no runner will finish (its flow run could not start): ``reason`` in its subtasks' logs."""
        stamp = format_time(now())
        return self._operate(task_id, lambda r: machine.abort(r, stamp, f"{stamp} ERROR --- {reason}"), reap=False)

    # -- lapsed leases --------------------------------------------------------------------------------------

    def reap_expired(self) -> list[int]:
        """Mark FAILED every RUNNING task whose lease lapsed (its runner died or froze); returns their ids."""
        with self._write() as conn:
            return self._reap(conn)

    def _reap(self, conn: Connection) -> list[int]:
        expired = conn.execute(
            sa.select(tasks.c.id, tasks.c.runner, tasks.c.lease_until)
            .where(tasks.c.status == TaskStatus.RUNNING.value, tasks.c.lease_until < time.time())
        ).all()
        stamp = format_time(now())
        for task_id, runner, lease_until in expired:
            lapsed = datetime.fromtimestamp(lease_until).astimezone().isoformat(timespec="milliseconds")
            why = (f"{stamp} ERROR --- the process running task {task_id} ({runner or 'never started'}) stopped "
                   f"renewing its lease at {lapsed}; marked FAILED by pid {_me()}. Retry the task to continue "
                   "from here.")
            self._apply(conn, machine.abort(self._load(conn, task_id, for_update=True), stamp, why), None)
        return [row.id for row in expired]

    def canceling(self, task_id: int) -> set[int]:
        """The task's subtasks an operator asked to cancel (CANCELING)."""
        with self._read() as conn:
            return set(conn.execute(sa.select(subtasks.c.id).where(
                subtasks.c.task_id == task_id, subtasks.c.status == SubtaskStatus.CANCELING.value)).scalars())


def _me() -> str:
    import os
    import socket

    return f"{os.getpid()} on {socket.gethostname()}"
