"""The view: store rows -> the documented task instance. Pure: no I/O."""

from __future__ import annotations

from datetime import datetime

from .machine import new_task
from .models import Subtask, TaskContext, TaskInstance, format_time
from .plan import Plan
from .records import Subtask as SubtaskRecord
from .records import TaskRecord


def task_instance(record: TaskRecord) -> TaskInstance:
    task = record.task
    return TaskInstance(
        id=task.id,
        name=task.name,
        creator=task.creator,
        executor=task.executor,
        operation=task.operation,
        start_time=datetime.fromisoformat(task.start_time),
        status=task.status,
        type=task.type,
        task_definition_id=-1,
        context=TaskContext(
            list_map={"host_ids": [str(h) for h in task.host_ids]},
            string_map={"prohibit_rollback": "true" if task.prohibit_rollback else "false"},
            parallel=False,
            parallel_idx=-1,
        ),
        subtasks=[subtask(sub) for sub in record.subtasks],
    )


def subtask(sub: SubtaskRecord) -> Subtask:
    return Subtask(
        id=sub.id,
        name=sub.name,
        class_name=sub.class_name,
        description=sub.name,
        node_type="JAVA_TASK",
        operation=sub.operation,
        parallel_idx=sub.parallel_idx,
        prohibit_rollback=sub.prohibit_rollback,
        run_time=sub.run_time,
        series_id=sub.series_id,
        status=sub.status,
        timeout=sub.timeout,
        upstreams=list(sub.upstreams),
        downstreams=list(sub.downstreams),
    )


def preview(plan: Plan, *, creator: str, executor: str, start_time: datetime) -> TaskInstance:
    """The task instance ``plan`` would create, with provisional ids (1 for the task, 1.. for subtasks)."""
    record = new_task(plan, 1, [node.key + 1 for node in plan.nodes], format_time(start_time), creator=creator,
                      executor=executor)
    return task_instance(record)
