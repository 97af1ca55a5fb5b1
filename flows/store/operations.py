"""An operator's operations on a task: load it, decide (the state machine, pure), write guarded, in one transaction."""

from __future__ import annotations

import time
from collections.abc import Callable

from .. import machine
from ..machine import Transition
from ..models import format_time, now
from ..records import TaskRecord
from .database import Database
from .leases import Leases
from .tasks import load_record
from .transitions import write_transition


class Operations:
    """Retry, skip, cancel, roll back, abort; retries and skips reap lapsed leases first, in their transaction."""

    def __init__(self, db: Database, leases: Leases) -> None:
        self.db, self.leases = db, leases

    def _operate(self, task_id: int, decide: Callable[[TaskRecord], Transition], reap: bool = True) -> TaskRecord:
        with self.db.write() as conn:
            if reap:
                self.leases.reap(conn)
            transition = decide(load_record(conn, task_id, for_update=True))
            write_transition(conn, transition, None)
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
