"""Typed, immutable records of a task and its subtasks: what the store persists and the state machine reads.

Rows become records in the store's own modules only; everything else reads attributes with enum values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .models import Operation, SubtaskStatus, TaskStatus, TaskType
from .options import RestartOptions
from .plan import Kind


@dataclass(frozen=True)
class Subtask:
    """One node of a task's DAG and where it stands."""

    id: int
    task_id: int
    seq: int  # position in the plan: a topological order
    kind: Kind
    host_id: int | None
    name: str
    class_name: str
    operation: Operation
    parallel_idx: int
    prohibit_rollback: bool
    run_time: int
    series_id: int
    status: SubtaskStatus
    timeout: int
    upstreams: tuple[int, ...]
    downstreams: tuple[int, ...]
    create_time: str | None = None
    start_time: str | None = None
    finish_time: str | None = None


@dataclass(frozen=True)
class Task:
    """A task instance: OCP's fields, the hosts it holds, and who runs it (its lease)."""

    id: int
    name: str
    type: TaskType
    status: TaskStatus
    operation: Operation
    creator: str
    executor: str
    host_ids: tuple[int, ...]
    prohibit_rollback: bool
    create_time: str
    start_time: str
    finish_time: str | None = None
    options: RestartOptions = field(default_factory=RestartOptions)  # how it was asked to run
    inventory: str = ""
    lease_until: float = 0.0
    runner: str = ""
    template: str = "batch_restart"  # flows/plan.py TEMPLATES: which agent operation this task is


@dataclass(frozen=True)
class TaskRecord:
    """A task and its subtasks in plan order."""

    task: Task
    subtasks: tuple[Subtask, ...]
    # id -> position in ``subtasks``: fixed for a task's life, so every later record shares the first one's.
    positions: Mapping[int, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.positions and self.subtasks:
            object.__setattr__(self, "positions", {s.id: i for i, s in enumerate(self.subtasks)})

    def subtask(self, subtask_id: int) -> Subtask:
        """The subtask with that id; KeyError if the task has none."""
        return self.subtasks[self.positions[subtask_id]]

    def has(self, subtask_id: int) -> bool:
        return subtask_id in self.positions

    def failed_hosts(self) -> set[int]:
        """Hosts with a FAILED subtask."""
        return {s.host_id for s in self.subtasks if s.host_id is not None and s.status is SubtaskStatus.FAILED}

    def replace(self, changed: Mapping[int, Subtask], task: Task | None = None) -> TaskRecord:
        """This record with ``changed`` (id -> new subtask) put in place, and ``task`` if given. A run makes
        5N+4 such copies of an N-host task: positions are reused, and only the tuple of references is copied."""
        subtasks = self.subtasks
        if changed:
            copied = list(subtasks)
            for subtask_id, sub in changed.items():
                copied[self.positions[subtask_id]] = sub
            subtasks = tuple(copied)
        return TaskRecord(task=task or self.task, subtasks=subtasks, positions=self.positions)
