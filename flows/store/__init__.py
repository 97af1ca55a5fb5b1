"""The task store: the durable, synchronous record of tasks, subtasks, logs and host locks. It only persists:
OCP's rules live in ``flows/machine.py``; every transition is written guarded by what it expects.

Prefect records task-run states asynchronously (tens of seconds behind under load), so the documented view is built from
this store, which our own code writes at every transition. The URL comes from the caller (the settings' ``store_url``:
SQLite under ``$OCP_RESTART_HOME`` by default, any SQLAlchemy URL via ``OCP_RESTART_STORE_URL``).

``TaskStore`` owns one database and composes the parts below, each given the database (and the leases, where it
reaps); the store's methods are the parts' own, under the names the rest of the code calls. Reads never write.

    database.py     engine, transactions, one clear error when the database is unavailable; upgrades on open
    migrate.py      bringing a store's schema to the code's revision (Alembic; stamping stores made before it)
    migrations/     the revisions: env.py, versions/NNNN_*.py
    schema.py       the tables, as of the newest revision
    rows.py         rows <-> typed records (the only code that reads columns by name)
    tasks.py        Tasks: create a task with its subtasks and host locks; load and list
    transitions.py  Transitions: apply the state machine's transitions guarded (compare-and-set)
    operations.py   Operations: an operator's retry, skip, cancel, rollback, abort
    leases.py       Leases: claim and renew a runner's lease; reap lapsed ones
    logs.py         Logs: subtask logs
    hosts.py        Hosts: host locks, agent status, pid snapshots
    processes.py    ProcessOperations: one agent process restarted or stopped, holding its host meanwhile
    prune.py        Prune: deleting finished tasks older than a cut-off
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from ..records import Subtask, Task, TaskRecord
from .database import Database
from .hosts import Hosts
from .leases import Leases
from .logs import Logs
from .operations import Operations
from .processes import ProcessOperation, ProcessOperations
from .prune import Prune
from .tasks import Tasks
from .transitions import Transitions


class TaskStore:
    """Synchronous, durable task records on ``url``, its schema upgraded on open. Thread-safe; a context manager
    that disposes its engine."""

    def __init__(self, url: str) -> None:
        self.db = Database(url)
        self.leases = Leases(self.db)
        self.tasks = Tasks(self.db, self.leases)
        self.transitions = Transitions(self.db)
        self.operations = Operations(self.db, self.leases)
        self.logs = Logs(self.db)
        self.hosts = Hosts(self.db)
        self.pruning = Prune(self.db)
        self.processes = ProcessOperations(self.db)
        # The parts' methods under the store's names: the callers' API, with no extra call on the runner's hot path.
        self.create_task = self.tasks.create_task
        self.load = self.tasks.load
        self.load_many = self.tasks.load_many
        self.progress = self.tasks.progress
        self.task = self.tasks.task
        self.task_ids = self.tasks.task_ids
        self.apply = self.transitions.apply
        self.canceling = self.transitions.canceling
        self.retry_task = self.operations.retry_task
        self.retry_subtask = self.operations.retry_subtask
        self.skip_subtask = self.operations.skip_subtask
        self.skip_failed = self.operations.skip_failed
        self.cancel_subtask = self.operations.cancel_subtask
        self.rollback_task = self.operations.rollback_task
        self.abort_task = self.operations.abort_task
        self.renew_lease = self.leases.renew_lease
        self.extend_unclaimed = self.leases.extend_unclaimed
        self.reap_expired = self.leases.reap_expired
        self.append_logs = self.logs.append_logs
        self.log = self.logs.log
        self.locks = self.hosts.locks
        self.held_agent_statuses = self.hosts.held_agent_statuses
        self.set_host_agent_status = self.hosts.set_host_agent_status
        self.host_agent_statuses = self.hosts.host_agent_statuses
        self.host_agent_status = self.hosts.host_agent_status
        self.save_snapshot = self.hosts.save_snapshot
        self.snapshot = self.hosts.snapshot
        self.save_version = self.hosts.save_version
        self.versions = self.hosts.versions
        self.last_pids = self.hosts.last_pids
        self.prune = self.pruning.prune

    @property
    def url(self) -> str:
        return self.db.url

    @property
    def safe_url(self) -> str:
        """The URL without its password, for messages and logs."""
        return self.db.safe_url

    @property
    def engine(self) -> Engine:
        return self.db.engine

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> TaskStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["ProcessOperation", "Subtask", "Task", "TaskRecord", "TaskStore"]
