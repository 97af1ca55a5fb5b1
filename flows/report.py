"""What a finished run leaves in the Prefect UI: a per-host table and a short markdown summary (artifacts)."""

from __future__ import annotations

from datetime import datetime

from .plan import STAGES, Kind
from .store import TaskRecord, TaskStore

_SHORT = {Kind.PREPARE: "prepare", Kind.RESTART_POS_PROXY: "pos proxy", Kind.STOP_ALL: "stop",
          Kind.START_ALL: "start", Kind.FINISH: "finish"}


_PROCESSES = ("ocp_agentd", "ocp_mgragent", "ocp_monagent")


def host_rows(store: TaskStore, record: TaskRecord, names: dict[int, str]) -> list[dict]:
    """One row per host: each step's status and seconds, and each agent process's pid before -> after."""
    rows: dict[int, dict] = {}
    for sub in record.subtasks:
        if sub.host_id is None:
            continue
        row = rows.setdefault(sub.host_id, {"host": f"{sub.host_id} {names.get(sub.host_id, '')}".strip()})
        took = ""
        if sub.start_time and sub.finish_time:
            seconds = (datetime.fromisoformat(sub.finish_time) - datetime.fromisoformat(sub.start_time)).total_seconds()
            took = f" {seconds:.1f}s"
        row[_SHORT[sub.kind]] = f"{sub.status.value}{took}"
    for host_id, row in rows.items():
        before = store.snapshot(record.task.id, host_id, "before") or {}
        after = store.snapshot(record.task.id, host_id, "after") or {}
        for name in _PROCESSES:
            row[f"{name} pid"] = f"{before.get(name, '-')} → {after.get(name, '-')}"
    return list(rows.values())


def summary(record: TaskRecord, headline: str) -> str:
    task = record.task
    counts: dict[str, int] = {}
    for sub in record.subtasks:
        counts[sub.status.value] = counts.get(sub.status.value, 0) + 1
    failed = sorted(record.failed_hosts())
    lines = [
        f"# {headline}",
        "",
        f"- task {task.id}: {task.name} — **{task.status.value}**",
        f"- hosts: {', '.join(map(str, task.host_ids))}",
        f"- operation: {task.operation.value}, type: {task.type.value}, creator: {task.creator}",
        f"- started {task.start_time}, finished {task.finish_time or '-'}",
        "- subtasks: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
        f"- failed hosts: {', '.join(map(str, failed)) if failed else 'none'}",
        "",
        "Stages: " + " → ".join(t.name for t in STAGES),
    ]
    return "\n".join(lines)


def publish(store: TaskStore, record: TaskRecord, names: dict[int, str], headline: str) -> None:
    """Create the table and markdown artifacts for the flow run (keys ``ocp-task-<id>`` and ``...-summary``)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    task_id = record.task.id
    create_table_artifact(table=host_rows(store, record, names), key=f"ocp-task-{task_id}",
                          description=f"OCP task {task_id}: each host's steps and agent pids (before → after)")
    create_markdown_artifact(markdown=summary(record, headline), key=f"ocp-task-{task_id}-summary",
                             description=f"OCP task {task_id} summary")
