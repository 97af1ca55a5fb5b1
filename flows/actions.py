"""OCP's operations on a recorded task, in one table: what each does to the task, and whether its flow runs again.

The CLI (``ocp-restart retry`` / ``rollback`` / ``subtask ...``), the HTTP API (``POST .../retry`` and the rest), the
Prefect operations flow (``flows/operations.py``) and the operator's decision on a paused run all look actions up
here, so an action means the same everywhere; the rules themselves are OCP's state machine (``flows/machine.py``),
applied by the store. Imports no Prefect.

    ACTIONS["retry"].apply(store, task_id)                 # -> the task as the action left it
    ACTIONS["cancel_subtask"].apply(store, task_id, 42)    # reruns is False: the run that owns it ends it
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

from .errors import RequestError
from .records import TaskRecord
from .store import TaskStore

ActionName = Literal["retry", "rollback", "retry_subtask", "skip_subtask", "cancel_subtask", "skip_failed"]
Decision = Literal["retry", "skip", "rollback", "stop"]  # the form a paused run shows the operator


@dataclass(frozen=True)
class TaskAction:
    """One operation on a recorded task."""

    name: ActionName
    summary: str  # one line, for help texts, forms and the API's description
    on_subtask: bool  # needs a subtask id
    reruns: bool  # the task's flow runs again afterwards (a cancel is finished by the run that owns the subtask)
    _apply: Callable[[TaskStore, int, int], TaskRecord]

    def apply(self, store: TaskStore, task_id: int, subtask_id: int | None = None) -> TaskRecord:
        """Apply the action with OCP's rules; the task as it left it. Raises the store's errors (e.g. a state that
        forbids it), and RequestError when a subtask action gets no subtask id."""
        if self.on_subtask and subtask_id is None:
            raise RequestError(f"action {self.name!r} needs a subtask id, got none")
        return self._apply(store, task_id, subtask_id or 0)


ACTIONS: dict[str, TaskAction] = {
    action.name: action
    for action in (
        TaskAction(
            "retry",
            "retry a FAILED task: its failed subtasks, then what never ran",
            False,
            True,
            lambda store, task_id, _: store.retry_task(task_id),
        ),
        TaskAction(
            "rollback",
            "roll a FAILED task back: the agent runs again wherever it was stopped",
            False,
            True,
            lambda store, task_id, _: store.rollback_task(task_id),
        ),
        TaskAction(
            "retry_subtask",
            "run one FAILED subtask again; the task goes on",
            True,
            True,
            lambda store, task_id, sub: store.retry_subtask(task_id, sub),
        ),
        TaskAction(
            "skip_subtask",
            "mark one FAILED subtask SUCCESSFUL without running it; the task goes on",
            True,
            True,
            lambda store, task_id, sub: store.skip_subtask(task_id, sub),
        ),
        TaskAction(
            "cancel_subtask",
            "cancel one RUNNING subtask: its remote command is killed and it ends FAILED",
            True,
            False,
            lambda store, task_id, sub: store.cancel_subtask(task_id, sub),
        ),
        TaskAction(
            "skip_failed",
            "mark every FAILED subtask SUCCESSFUL without running it; the task goes on",
            False,
            True,
            lambda store, task_id, _: store.skip_failed(task_id),
        ),
    )
}
assert set(ACTIONS) == set(get_args(ActionName)), "ActionName and ACTIONS must name the same actions"

# What each answer of a paused run's form does; "stop" leaves the task FAILED.
DECISIONS: dict[Decision, TaskAction | None] = {
    "retry": ACTIONS["retry"],
    "skip": ACTIONS["skip_failed"],
    "rollback": ACTIONS["rollback"],
    "stop": None,
}
