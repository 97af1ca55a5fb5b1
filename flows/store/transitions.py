"""Applying the state machine's transitions, each guarded by what it expects (compare-and-set).

A transition names the rows it changes and the status each must still have; the task row must still have the
status (and runner) the transition was computed from, and a runner's writes also require the task to be its own.
If anything differs, the whole transaction is rolled back and StaleWriteError raised: a stale writer is refused,
not obeyed.
"""

from __future__ import annotations

from functools import lru_cache

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import StaleWriteError
from ..machine import Transition
from ..models import SubtaskStatus, TaskStatus, format_time, now
from ..records import TaskRecord
from .database import Database
from .hosts import lock_hosts
from .rows import subtask_values, task_values
from .schema import host_locks, subtask_logs, subtasks, tasks

# The runner's hot path (two transitions per subtask, 10,008 for 1,000 hosts) executes statements built once with
# bound parameters: SQLAlchemy then skips building the statement and its cache key on every call, which was most
# of the store's CPU (#14).
_TASK_ROW = sa.select(tasks.c.status, tasks.c.runner).where(tasks.c.id == sa.bindparam("task_id")).with_for_update()


@lru_cache(maxsize=64)
def _update_subtask(columns: tuple[str, ...], expected: int) -> sa.Update:
    """``UPDATE subtasks SET <columns> WHERE id = :subtask_id AND status IN (<expected> values)``; parameters
    ``subtask_id``, ``expect0``.., ``set_<column>``."""
    return (
        subtasks.update()
        .where(
            subtasks.c.id == sa.bindparam("subtask_id"),
            subtasks.c.status.in_([sa.bindparam(f"expect{i}") for i in range(expected)]),
        )
        .values({column: sa.bindparam(f"set_{column}") for column in columns})
    )


def write_transition(conn: Connection, t: Transition, runner: str | None) -> None:
    """Write ``t`` in the caller's transaction, guarded; StaleWriteError (the caller rolls back) if it is stale."""
    before, task_id = t.before.task, t.before.task.id
    row = conn.execute(_TASK_ROW, {"task_id": task_id}).first()
    if row is None or row.status != before.status.value:
        raise StaleWriteError(
            f"task {task_id} is {row.status if row else 'gone'}, not {before.status.value}: refusing a stale write"
        )
    if runner is not None and (row.status != TaskStatus.RUNNING.value or row.runner != runner):
        raise StaleWriteError(
            f"task {task_id} is no longer run by {runner} (now {row.runner or 'nobody'}): refusing its write"
        )
    if t.task_changed and row.runner != before.runner:
        raise StaleWriteError(
            f"task {task_id} changed runner ({before.runner or 'nobody'} -> "
            f"{row.runner or 'nobody'}): refusing a stale write"
        )
    for sub in t.changed:
        expected = [s.value for s in t.expect[sub.id]]
        # Only what this transition changed: e.g. an operator's CANCEL (written by another process since the
        # runner read the row) survives the runner's finish.
        old = subtask_values(t.before.subtask(sub.id))
        values = {k: v for k, v in subtask_values(sub).items() if v != old[k] or k == "status"}
        params = {
            "subtask_id": sub.id,
            **{f"expect{i}": e for i, e in enumerate(expected)},
            **{f"set_{k}": v for k, v in values.items()},
        }
        done = conn.execute(_update_subtask(tuple(values), len(expected)), params).rowcount
        if done != 1:
            raise StaleWriteError(
                f"subtask {sub.id} of task {task_id} is no longer {' or '.join(expected)}: refusing a stale write"
            )
    if t.task_changed:
        conn.execute(tasks.update().where(tasks.c.id == task_id).values(**task_values(t.after.task)))
    if t.lock_hosts:
        lock_hosts(conn, task_id, t.after.task.host_ids, format_time(now()))
    if t.release_hosts:
        conn.execute(host_locks.delete().where(host_locks.c.task_id == task_id))
    if t.logs:
        conn.execute(subtask_logs.insert(), [{"subtask_id": sid, "text": text} for sid, text in t.logs])


class Transitions:
    """A run's transitions, and what an operator asked of its running subtasks."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def apply(self, transition: Transition, *, runner: str | None = None) -> TaskRecord:
        """Persist ``transition`` in one transaction, or refuse it (StaleWriteError) and write nothing.

        ``runner``: the write is a runner's, valid only while the task is RUNNING under that runner id.
        """
        with self.db.write() as conn:
            write_transition(conn, transition, runner)
        return transition.after

    def canceling(self, task_id: int) -> set[int]:
        """The task's subtasks an operator asked to cancel (CANCELING)."""
        with self.db.read() as conn:
            return set(
                conn.execute(
                    sa.select(subtasks.c.id).where(
                        subtasks.c.task_id == task_id, subtasks.c.status == SubtaskStatus.CANCELING.value
                    )
                ).scalars()
            )
