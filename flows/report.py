"""What a finished run leaves in the Prefect UI: a per-host table and a short markdown summary (artifacts)."""

from __future__ import annotations

from datetime import datetime

from .plan import Kind, template_of
from .store import TaskRecord, TaskStore

_SHORT = {
    Kind.PREPARE: "prepare",
    Kind.RESTART_POS_PROXY: "pos proxy",
    Kind.STOP_ALL: "stop",
    Kind.START_ALL: "start",
    Kind.FINISH: "finish",
    Kind.PREPARE_STOP: "prepare",
    Kind.FINISH_STOP: "finish",
}


_PROCESSES = ("ocp_agentd", "ocp_mgragent", "ocp_monagent")

# The table must fit the artifact page of a 1,600 px screen (the UI gives it ~900 px), a failed run's too: a step
# that went well says "ok" and its seconds, any other status keeps OCP's word, which is what the eye should catch;
# the pid columns name the process without the "ocp_" all three share ("agentd pid") (#13).
_OK = "ok"


def _step_cell(status: str, seconds: float | None) -> str:
    word = _OK if status == "SUCCESSFUL" else status
    return word if seconds is None else f"{word} {seconds:.1f}s"


def host_rows(store: TaskStore, record: TaskRecord, names: dict[int, str]) -> list[dict[str, str]]:
    """One row per host: each step's status ("ok" for SUCCESSFUL) and seconds, and each agent process's pid
    before -> after."""
    rows: dict[int, dict[str, str]] = {}
    for sub in record.subtasks:
        if sub.host_id is None:
            continue
        row = rows.setdefault(sub.host_id, {"host": f"{sub.host_id} {names.get(sub.host_id, '')}".strip()})
        seconds = None
        if sub.start_time and sub.finish_time:
            seconds = (datetime.fromisoformat(sub.finish_time) - datetime.fromisoformat(sub.start_time)).total_seconds()
        row[_SHORT[sub.kind]] = _step_cell(sub.status.value, seconds)
    for host_id, row in rows.items():
        before = store.snapshot(record.task.id, host_id, "before") or {}
        after = store.snapshot(record.task.id, host_id, "after") or {}
        for name in _PROCESSES:
            row[f"{name.removeprefix('ocp_')} pid"] = f"{before.get(name, '-')} → {after.get(name, '-')}"
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
        "Stages: " + " → ".join(t.name for t in template_of(task.template).stages),
    ]
    return "\n".join(lines)


def publish(store: TaskStore, record: TaskRecord, names: dict[int, str], headline: str) -> None:
    """Create the table and markdown artifacts for the flow run (keys ``ocp-task-<id>`` and ``...-summary``)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    task_id = record.task.id
    create_table_artifact(
        table=host_rows(store, record, names),
        key=f"ocp-task-{task_id}",
        description=f"OCP task {task_id}: each host's steps (ok = SUCCESSFUL, seconds) and agent pids (before → after)",
    )
    create_markdown_artifact(
        markdown=summary(record, headline), key=f"ocp-task-{task_id}-summary", description=f"OCP task {task_id} summary"
    )
