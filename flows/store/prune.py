"""Keeping the store bounded: finished tasks older than a cut-off go, with their subtasks, logs and snapshots."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from ..models import TaskStatus, now
from .database import Database
from .schema import host_snapshots, subtask_logs, subtasks, tasks

CHUNK = 500  # tasks per delete statement: bounded parameter lists on every database


class Prune:
    """Deleting finished tasks older than a cut-off, in bounded chunks."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def prune(self, older_than_days: float) -> list[int]:
        """Delete every finished task (SUCCESSFUL or FAILED) that finished more than ``older_than_days`` ago, with
        its subtasks, logs and pid snapshots; RUNNING tasks are never touched. Returns the ids deleted (not one
        retried meanwhile)."""
        if older_than_days < 0:
            raise ValueError(f"older_than_days must be 0 or more, got {older_than_days}")
        cutoff = now() - timedelta(days=older_than_days)
        with self.db.read() as conn:
            finished = conn.execute(
                sa.select(tasks.c.id, tasks.c.finish_time).where(
                    tasks.c.status != TaskStatus.RUNNING.value, tasks.c.finish_time.is_not(None)
                )
            ).all()
        # Times carry their own UTC offsets: compared as times, not as strings.
        doomed = [row.id for row in finished if datetime.fromisoformat(row.finish_time) < cutoff]
        deleted: list[int] = []
        for start in range(0, len(doomed), CHUNK):
            ids = doomed[start : start + CHUNK]
            with self.db.write() as conn:
                # Guarded again inside the transaction: a task retried meanwhile is RUNNING and stays.
                ids = list(
                    conn.execute(
                        sa.select(tasks.c.id).where(tasks.c.id.in_(ids), tasks.c.status != TaskStatus.RUNNING.value)
                    ).scalars()
                )
                subs = sa.select(subtasks.c.id).where(subtasks.c.task_id.in_(ids))
                conn.execute(subtask_logs.delete().where(subtask_logs.c.subtask_id.in_(subs)))
                conn.execute(host_snapshots.delete().where(host_snapshots.c.task_id.in_(ids)))
                conn.execute(subtasks.delete().where(subtasks.c.task_id.in_(ids)))
                conn.execute(tasks.delete().where(tasks.c.id.in_(ids)))
            deleted += ids
        return deleted
