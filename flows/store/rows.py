"""Rows <-> records: the only place that reads the store's rows by column name."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..models import Operation, SubtaskStatus, TaskStatus, TaskType
from ..options import RestartOptions
from ..plan import Kind
from ..records import Subtask, Task


def task_from_row(row: Mapping[Any, Any]) -> Task:
    return Task(
        id=int(row["id"]),
        name=row["name"],
        type=TaskType(row["type"]),
        status=TaskStatus(row["status"]),
        operation=Operation(row["operation"]),
        creator=row["creator"],
        executor=row["executor"],
        host_ids=tuple(json.loads(row["host_ids"])),
        prohibit_rollback=bool(row["prohibit_rollback"]),
        create_time=row["create_time"],
        start_time=row["start_time"],
        finish_time=row["finish_time"],
        options=RestartOptions.model_validate_json(row["options"] or "{}"),
        inventory=row["inventory"] or "",
        lease_until=float(row["lease_until"] or 0.0),
        runner=row["runner"] or "",
        template=row["template"],
    )


# A 1,000-host task has 5,004 subtask rows: enum lookups by dict and id lists split by hand (they are our own
# JSON lists of integers) halve the cost of loading it, which every GET of the task pays.
_KINDS: dict[str, Kind] = {m.value: m for m in Kind}
_OPERATIONS: dict[str, Operation] = {m.value: m for m in Operation}
_STATUSES: dict[str, SubtaskStatus] = {m.value: m for m in SubtaskStatus}


def _ids(text: str) -> tuple[int, ...]:
    """``"[1, 2]"`` -> ``(1, 2)``: the JSON id lists this module writes."""
    inner = text.strip()[1:-1]
    return tuple(int(part) for part in inner.split(",")) if inner.strip() else ()


def subtask_from_row(row: Mapping[Any, Any], create_time: str | None = None) -> Subtask:
    return Subtask(
        id=int(row["id"]),
        task_id=int(row["task_id"]),
        seq=row["seq"],
        kind=_KINDS[row["kind"]],
        host_id=row["host_id"],
        name=row["name"],
        class_name=row["class_name"],
        operation=_OPERATIONS[row["operation"]],
        parallel_idx=row["parallel_idx"],
        prohibit_rollback=bool(row["prohibit_rollback"]),
        run_time=row["run_time"],
        series_id=row["series_id"],
        status=_STATUSES[row["status"]],
        timeout=row["timeout"],
        upstreams=_ids(row["upstreams"]),
        downstreams=_ids(row["downstreams"]),
        create_time=create_time,
        start_time=row["start_time"],
        finish_time=row["finish_time"],
    )


def subtask_values(sub: Subtask) -> dict[str, Any]:
    """The columns a transition may change."""
    return {
        "status": sub.status.value,
        "operation": sub.operation.value,
        "run_time": sub.run_time,
        "start_time": sub.start_time,
        "finish_time": sub.finish_time,
    }


def task_values(task: Task) -> dict[str, Any]:
    """The columns a transition may change."""
    return {
        "status": task.status.value,
        "operation": task.operation.value,
        "finish_time": task.finish_time,
        "lease_until": task.lease_until,
        "runner": task.runner,
    }
