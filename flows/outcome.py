"""What a task's outcome means for the operator, in words: which hosts failed, where the agent may be left stopped,
and what to run next. Pure (no Prefect): the CLI's report, the flow run's state message and the pause's form use it."""

from __future__ import annotations

from .models import SubtaskStatus, TaskStatus
from .plan import Kind
from .records import TaskRecord

VERSION_ALERT = "host_agent_version_not_same"  # OCP's alert when a cluster's hosts run different agent versions


def version_mismatch(versions: dict[int, str]) -> str:
    """'' when every host runs one agent version (host id -> version); else OCP's alert name and which hosts run
    which version, the most common first."""
    hosts: dict[str, list[int]] = {}
    for host, version in sorted(versions.items()):
        hosts.setdefault(version, []).append(host)
    if len(hosts) < 2:
        return ""
    ordered = sorted(hosts.items(), key=lambda item: (-len(item[1]), item[0]))
    listed = "; ".join(f"{version} on host(s) {', '.join(map(str, ids))}" for version, ids in ordered)
    return f"{VERSION_ALERT}: the hosts run different agent versions: {listed}"


def failed_hosts(record: TaskRecord) -> dict[int, list[str]]:
    """host id -> "subtask id name" of its FAILED subtasks."""
    out: dict[int, list[str]] = {}
    for sub in record.subtasks:
        if sub.status is SubtaskStatus.FAILED and sub.host_id is not None:
            out.setdefault(sub.host_id, []).append(f"{sub.id} {sub.name}")
    return out


def stopped_hosts(record: TaskRecord) -> list[int]:
    """Hosts whose agent this task may have left stopped: Stop all ran there and Start all has not succeeded. A
    stop has no Start all: leaving the agent stopped is its point, so it names none."""
    stop = {s.host_id: s for s in record.subtasks if s.kind is Kind.STOP_ALL and s.host_id is not None}
    start = {s.host_id: s for s in record.subtasks if s.kind is Kind.START_ALL and s.host_id is not None}
    return [
        h for h, s in stop.items() if s.start_time and h in start and start[h].status is not SubtaskStatus.SUCCESSFUL
    ]


def next_steps(record: TaskRecord) -> str:
    task_id = record.task.id
    failed = [s for s in record.subtasks if s.status is SubtaskStatus.FAILED]
    skip = f"; skip one: `ocp-restart subtask skip {task_id} {failed[0].id}`" if failed else ""
    return (
        f"Next: retry (this run's Retry in Prefect, or `ocp-restart retry {task_id}`){skip}; "
        f"or roll back: `ocp-restart rollback {task_id}`."
    )


def outcome_message(record: TaskRecord) -> str:
    """One paragraph for the run's state and the summary's first line."""
    task = record.task
    failed = failed_hosts(record)
    parts = [f"OCP task {task.id} {task.status.value}"]
    if failed:
        parts.append(
            "failed: " + "; ".join(f"host {h} (subtask {', '.join(subs)})" for h, subs in sorted(failed.items()))
        )
    stopped = stopped_hosts(record)
    if stopped and task.status is TaskStatus.FAILED:
        parts.append(f"the agent may be left STOPPED on host(s) {', '.join(map(str, stopped))}")
    if task.status is TaskStatus.FAILED:
        parts.append(next_steps(record))
    elif failed:
        parts.append(f"{len(failed)} host(s) isolated under the failure threshold")
    return ". ".join(parts)
