"""Subtask logs: lines appended in batches, read back in order."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from ..errors import StaleWriteError
from ..models import TaskStatus
from .database import Database
from .schema import subtask_logs, tasks


class Logs:
    """Subtask log lines: appended in batches, read back in order."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def append_logs(
        self, lines: Sequence[tuple[int, str]], *, task_id: int | None = None, runner: str | None = None
    ) -> None:
        """Log lines of any subtasks, (subtask id, text) in order, in one transaction. With ``runner``, only
        while the task ``task_id`` is RUNNING under it (StaleWriteError otherwise, nothing written)."""
        if not lines:
            return
        with self.db.write() as conn:
            if runner is not None:
                owner = conn.execute(
                    sa.select(tasks.c.runner, tasks.c.status).where(tasks.c.id == task_id).with_for_update()
                ).first()
                if owner is None or owner.status != TaskStatus.RUNNING.value or owner.runner != runner:
                    raise StaleWriteError(f"task {task_id} is no longer run by {runner}: its log lines are dropped")
            conn.execute(subtask_logs.insert(), [{"subtask_id": sid, "text": text} for sid, text in lines])

    def log(self, subtask_id: int) -> str:
        with self.db.read() as conn:
            lines = (
                conn.execute(
                    sa.select(subtask_logs.c.text)
                    .where(subtask_logs.c.subtask_id == subtask_id)
                    .order_by(subtask_logs.c.id)
                )
                .scalars()
                .all()
            )
        return "\n".join(lines)
