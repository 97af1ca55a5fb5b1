"""The task store: the durable, synchronous record of tasks, subtasks, logs and host locks. It only persists:
OCP's rules live in ``flows/machine.py``; every transition is written guarded by what it expects.

Prefect records task-run states asynchronously (tens of seconds behind under load), so the documented view is built from
this store, which our own code writes at every transition. SQLite under ``$OCP_RESTART_HOME`` by default
(``~/.ocp-restart/tasks.db``); any SQLAlchemy URL via ``OCP_RESTART_STORE_URL``.

    database.py     engine, transactions, one clear error when the database is unavailable
    schema.py       the tables
    rows.py         rows <-> typed records (the only code that reads columns by name)
    tasks.py        create a task with its subtasks and host locks; load and list
    transitions.py  apply the state machine's transitions guarded (compare-and-set); operations; reaping
    leases.py       claim and renew a runner's lease
    logs.py         subtask logs
    hosts.py        host locks, agent status, pid snapshots
    prune.py        deleting finished tasks older than a cut-off
"""

from __future__ import annotations

from ..records import Subtask, Task, TaskRecord
from .hosts import Hosts
from .leases import Leases
from .logs import Logs
from .prune import Prune
from .transitions import Transitions


class TaskStore(Transitions, Leases, Logs, Hosts, Prune):
    """Synchronous, durable task records on ``url`` (default: the settings' store). Thread-safe; a context
    manager that disposes its engine."""

    def __init__(self, url: str | None = None) -> None:
        super().__init__(url or default_url())

    def __enter__(self) -> TaskStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_url() -> str:
    from ..settings import Settings

    return Settings().store_url


__all__ = ["Subtask", "Task", "TaskRecord", "TaskStore", "default_url"]
