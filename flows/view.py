"""The view: records -> the documented wire shapes. Pure: no I/O.

task_instance          what POST batchRestartAgents answers (the seed's shape: ``creator`` a string, ``context``)
wrapped_task_instance  what GET, retry and rollback answer (OCP's WrappedTaskInstance: ``creator {id, name}``,
                       times, ``prohibitRollback``; subtasks with times and ``executor``)
basic_task_instance    an item of the task list (OCP's BasicTaskInstance)
host_agent             GET /compute/hosts/{hostId}/agent: the agent's status and pids as last seen on the host
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from datetime import datetime

from steps.agent import PROCESSES

from .machine import new_task
from .models import (
    BasicSubtaskInstance,
    BasicTaskInstance,
    Creator,
    HostAgent,
    HostAgentProcess,
    Page,
    Subtask,
    SubtaskInstance,
    TaskContext,
    TaskInstance,
    WrappedTaskInstance,
    format_time,
)
from .plan import Plan, template_of
from .records import Subtask as SubtaskRecord
from .records import TaskRecord


def task_instance(record: TaskRecord) -> TaskInstance:
    """The task as OCP answers its creation. Per template: a single-host operation has a task-level ``hostId``,
    ``stringMap.host_id`` and an empty ``listMap``; a batch one ``listMap.host_ids`` (strings)."""
    task = record.task
    prohibit = {"prohibit_rollback": "true" if task.prohibit_rollback else "false"}
    single = template_of(task.template).single_host
    return TaskInstance(
        id=task.id,
        host_id=task.host_ids[0] if single else None,
        name=task.name,
        creator=task.creator,
        executor=task.executor,
        operation=task.operation,
        start_time=datetime.fromisoformat(task.start_time),
        status=task.status,
        type=task.type,
        task_definition_id=-1,
        context=TaskContext(
            list_map={} if single else {"host_ids": [str(h) for h in task.host_ids]},
            string_map={"host_id": str(task.host_ids[0]), **prohibit} if single else prohibit,
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
    record = new_task(
        plan, 1, [node.key + 1 for node in plan.nodes], format_time(start_time), creator=creator, executor=executor
    )
    return task_instance(record)


def creator(name: str) -> Creator:
    """OCP's creator object. We keep user names, not user rows: the id is a stable number derived from the name
    (48 bits of its SHA-256, so every JSON client reads it exactly)."""
    return Creator(id=int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:6], "big") or 1, name=name)


def wrapped_task_instance(record: TaskRecord) -> WrappedTaskInstance:
    task = record.task
    return WrappedTaskInstance(
        id=task.id,
        name=task.name,
        task_definition_id=-1,
        status=task.status,
        type=task.type,
        creator=creator(task.creator),
        executor=task.executor,
        create_time=task.create_time,
        start_time=task.start_time,
        finish_time=task.finish_time,
        operation=task.operation,
        prohibit_rollback=task.prohibit_rollback,
        subtasks=[subtask_instance(sub, task.executor) for sub in record.subtasks],
    )


def subtask_instance(sub: SubtaskRecord, executor: str) -> SubtaskInstance:
    """A subtask as the task detail shows it; ``executor`` is the task's, once the subtask has started."""
    return SubtaskInstance(
        id=sub.id,
        series_id=sub.series_id,
        name=sub.name,
        description=sub.name,
        class_name=sub.class_name,
        timeout=sub.timeout,
        status=sub.status,
        operation=sub.operation,
        executor=executor if sub.start_time else None,
        run_time=sub.run_time,
        create_time=sub.create_time,
        start_time=sub.start_time,
        finish_time=sub.finish_time,
        node_type="JAVA_TASK",
        parallel_idx=sub.parallel_idx,
        upstreams=list(sub.upstreams),
        downstreams=list(sub.downstreams),
        prohibit_rollback=sub.prohibit_rollback,
    )


def basic_task_instance(record: TaskRecord) -> BasicTaskInstance:
    task = record.task
    return BasicTaskInstance(
        id=task.id,
        name=task.name,
        creator=creator(task.creator),
        status=task.status,
        start_time=task.start_time,
        finish_time=task.finish_time,
        type=task.type,
        operation=task.operation,
        executor=task.executor,
        create_time=task.create_time,
        subtasks=[
            BasicSubtaskInstance(id=s.id, name=s.name, description=s.name, status=s.status, operation=s.operation)
            for s in record.subtasks
        ],
    )


def page(number: int, size: int, total: int) -> Page:
    """OCP's page object for page ``number`` (from 1) of ``size`` items out of ``total``."""
    return Page(number=number, size=size, total_elements=total, total_pages=math.ceil(total / size) if size else 0)


DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 10, 2000


def spring_page(number: int, size: int) -> tuple[int, int]:
    """The page OCP answers for ``page`` and ``size`` (Spring Data's one-indexed paging, its maximum page size
    2000): page 0 or less is the first page; size 0 or less is the default 10, above 2000 is 2000."""
    return max(number, 1), DEFAULT_PAGE_SIZE if size < 1 else min(size, MAX_PAGE_SIZE)


def spring_sort(values: list[str], fields: Mapping[str, str]) -> list[tuple[str, bool]]:
    """Spring's ``sort`` parameters (``id,desc``; ``startTime,name,asc``; direction ASC by default, any case) as
    (our column, ascending) pairs; ``fields`` maps the API's names onto columns. ValueError names an unknown one."""
    order: list[tuple[str, bool]] = []
    for value in values:
        parts = [part.strip() for part in value.split(",") if part.strip()]
        ascending = True
        if parts and parts[-1].lower() in ("asc", "desc"):
            ascending = parts.pop().lower() == "asc"
        unknown = [part for part in parts if part not in fields]
        if unknown:
            raise ValueError(
                f"cannot sort by {', '.join(unknown)}: expected one of {', '.join(fields)}, "
                "optionally followed by ,asc or ,desc"
            )
        order += [(fields[part], ascending) for part in parts]
    return order


PORTS = {"ocp_mgragent": "62888", "ocp_monagent": "62889"}  # OCP's defaults: management and monitoring


def host_agent(
    *,
    host_id: int,
    address: str,
    user: str,
    agent_home: str,
    status: str | None,
    pids: Mapping[str, int],
    seen: str | None,
    stopped: bool,
    available: str | None,
) -> HostAgent:
    """The host's agent as we last saw it: ``pids`` at ``seen`` (the latest restart's Finish, else its Prepare);
    ``stopped`` when that restart's Stop began and it has not finished since. A process we did not see running, or
    that was stopped since, is STOPPED with pid 0 (as OCP shows a stopped process)."""
    home = agent_home.rstrip("/") or "/"
    processes = []
    for index, name in enumerate(PROCESSES, start=1):
        pid = 0 if stopped else int(pids.get(name) or 0)
        processes.append(
            HostAgentProcess(
                id=index,
                host_id=host_id,
                alias=name,
                pid=pid,
                user=user,
                start_command=f"{home}/bin/{name}",
                ports=PORTS.get(name, ""),
                last_active_time=seen if pid else None,
                status="STARTED" if pid else "STOPPED",
                operable=False,
                log_file_pattern=f"{home}/log/{name}.log*",
                update_time=seen,
            )
        )
    return HostAgent(
        id=host_id,
        install_home=home,
        log_home=f"{home}/log",
        last_available_time=available,
        host_id=host_id,
        host_inner_ip_address=address,
        status=status,
        processes=processes if seen else [],
        update_time=seen,
    )
