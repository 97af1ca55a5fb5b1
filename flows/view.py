"""The view: store rows -> the documented task instance. Pure: no I/O."""

from __future__ import annotations

from datetime import datetime

from .models import Operation, Subtask, SubtaskStatus, TaskContext, TaskInstance, TaskStatus, TaskType, format_time
from .plan import TASK_NAME, Plan
from .store import TaskRecord


def task_instance(record: TaskRecord) -> TaskInstance:
    task = record.task
    return TaskInstance(
        id=task["id"],
        name=task["name"],
        creator=task["creator"],
        executor=task["executor"],
        operation=task["operation"],
        start_time=datetime.fromisoformat(task["start_time"]),
        status=task["status"],
        type=task["type"],
        task_definition_id=-1,
        context=TaskContext(
            list_map={"host_ids": [str(h) for h in task["host_ids"]]},
            string_map={"prohibit_rollback": "true" if task["prohibit_rollback"] else "false"},
            parallel=False,
            parallel_idx=-1,
        ),
        subtasks=[subtask(row) for row in record.subtasks],
    )


def subtask(row: dict) -> Subtask:
    return Subtask(
        id=row["id"],
        name=row["name"],
        class_name=row["class_name"],
        description=row["name"],
        node_type="JAVA_TASK",
        operation=row["operation"],
        parallel_idx=row["parallel_idx"],
        prohibit_rollback=bool(row["prohibit_rollback"]),
        run_time=row["run_time"],
        series_id=row["series_id"],
        status=row["status"],
        timeout=row["timeout"],
        upstreams=row["upstreams"],
        downstreams=row["downstreams"],
    )


def aggregate_status(statuses: list[SubtaskStatus | str]) -> TaskStatus:
    """OCP's task aggregate: any RUNNING -> RUNNING; else any FAILED -> FAILED; all SUCCESSFUL -> SUCCESSFUL."""
    values = {SubtaskStatus(s) for s in statuses}
    if values & {SubtaskStatus.RUNNING, SubtaskStatus.CANCELING}:
        return TaskStatus.RUNNING
    if SubtaskStatus.FAILED in values:
        return TaskStatus.FAILED
    if values == {SubtaskStatus.SUCCESSFUL}:
        return TaskStatus.SUCCESSFUL
    return TaskStatus.RUNNING


def preview(plan: Plan, *, creator: str, executor: str, start_time: datetime) -> TaskInstance:
    """The task instance ``plan`` would create, with provisional ids (1 for the task, 1.. for subtasks)."""
    ids = {node.key: node.key + 1 for node in plan.nodes}
    rows = [
        {
            "id": ids[node.key], "name": node.name, "class_name": node.class_name, "operation": Operation.EXECUTE,
            "parallel_idx": node.parallel_idx, "prohibit_rollback": False, "run_time": 1,
            "series_id": node.series_id, "timeout": node.timeout,
            "status": SubtaskStatus.PENDING if node.upstreams else SubtaskStatus.READY,
            "upstreams": [ids[k] for k in node.upstreams], "downstreams": [ids[k] for k in node.downstreams],
        }
        for node in plan.nodes
    ]
    task = {
        "id": 1, "name": TASK_NAME, "creator": creator, "executor": executor,
        "operation": Operation.EXECUTE, "start_time": format_time(start_time), "status": TaskStatus.RUNNING,
        "type": TaskType.MANUAL, "host_ids": plan.host_ids, "prohibit_rollback": False,
    }
    return task_instance(TaskRecord(task=task, subtasks=rows))
