"""The task store: the durable, synchronous record of tasks, subtasks, logs and host locks.

Prefect records task-run states asynchronously (reference/prefect.md), so the documented view is built from
this store, which our own code writes at every transition. SQLite under ``$OCP_RESTART_HOME`` by default
(``~/.ocp-restart/tasks.db``); any SQLAlchemy URL via ``OCP_RESTART_STORE_URL``.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .errors import HostBusyError, StoreUnavailableError, TaskStateError, UnknownSubtaskError, UnknownTaskError
from .models import Operation, SubtaskStatus, TaskStatus, TaskType, format_time, now
from .plan import TASK_NAME, Kind, Plan

metadata = sa.MetaData()

LAUNCH_GRACE_SECONDS = 300.0  # a recorded task waits this long for its flow run to start renewing the lease


def lease_seconds() -> float:
    """How long a task survives without a heartbeat from its flow run ($OCP_RESTART_LEASE_SECONDS, default 30)."""
    return float(os.environ.get("OCP_RESTART_LEASE_SECONDS", "30"))



tasks = sa.Table(
    "tasks", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("type", sa.String(20), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("operation", sa.String(20), nullable=False),
    sa.Column("creator", sa.String(200), nullable=False),
    sa.Column("executor", sa.String(200), nullable=False),
    sa.Column("host_ids", sa.Text, nullable=False),  # JSON list of ints, request order
    sa.Column("prohibit_rollback", sa.Boolean, nullable=False, default=False),
    sa.Column("options", sa.Text, nullable=False, default="{}"),  # JSON: the flow options it was created with
    sa.Column("inventory", sa.Text, nullable=False, default=""),  # the inventory file it was created from
    sa.Column("create_time", sa.String(40), nullable=False),
    sa.Column("start_time", sa.String(40), nullable=False),
    sa.Column("finish_time", sa.String(40)),
    # The lease: the process running the task renews it; when it lapses the task is marked FAILED (crash recovery).
    sa.Column("lease_until", sa.Float, nullable=False, default=0.0),
    sa.Column("runner", sa.String(200), nullable=False, default=""),
    sqlite_autoincrement=True,
)

subtasks = sa.Table(
    "subtasks", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("task_id", sa.BigInteger, sa.ForeignKey("tasks.id"), nullable=False, index=True),
    sa.Column("seq", sa.Integer, nullable=False),  # position in the plan: a topological order
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("host_id", sa.BigInteger),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("class_name", sa.String(300), nullable=False),
    sa.Column("operation", sa.String(20), nullable=False),
    sa.Column("parallel_idx", sa.Integer, nullable=False),
    sa.Column("prohibit_rollback", sa.Boolean, nullable=False),
    sa.Column("run_time", sa.Integer, nullable=False),
    sa.Column("series_id", sa.Integer, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("timeout", sa.Integer, nullable=False),
    sa.Column("upstreams", sa.Text, nullable=False, default="[]"),
    sa.Column("downstreams", sa.Text, nullable=False, default="[]"),
    sa.Column("start_time", sa.String(40)),
    sa.Column("finish_time", sa.String(40)),
    sqlite_autoincrement=True,
)

subtask_logs = sa.Table(
    "subtask_logs", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("subtask_id", sa.BigInteger, nullable=False, index=True),
    sa.Column("text", sa.Text, nullable=False),
)

host_locks = sa.Table(
    "host_locks", metadata,
    sa.Column("host_id", sa.BigInteger, primary_key=True),
    sa.Column("task_id", sa.BigInteger, nullable=False),
    sa.Column("acquired", sa.String(40), nullable=False),
)

host_snapshots = sa.Table(
    "host_snapshots", metadata,  # the agent's pids before (Prepare) and after (Finish) the restart
    sa.Column("task_id", sa.BigInteger, primary_key=True),
    sa.Column("host_id", sa.BigInteger, primary_key=True),
    sa.Column("phase", sa.String(10), primary_key=True),  # "before" | "after" pids; "starts": start times at Stop
    sa.Column("pids", sa.Text, nullable=False),
)

host_agent_status = sa.Table(
    "host_agent_status", metadata,
    sa.Column("host_id", sa.BigInteger, primary_key=True),
    sa.Column("status", sa.String(20), nullable=False),  # OCP's hostAgentStatus: AVAILABLE, OFFLINE, ...
    sa.Column("updated", sa.String(40), nullable=False),
)


def default_url() -> str:
    url = os.environ.get("OCP_RESTART_STORE_URL")
    if url:
        return url
    home = Path(os.environ.get("OCP_RESTART_HOME", "~/.ocp-restart")).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'tasks.db'}"


@dataclass(frozen=True)
class TaskRecord:
    """A task row and its subtask rows (plan order), as plain mappings."""

    task: dict
    subtasks: list[dict]

    def failed_hosts(self) -> set[int]:
        """Hosts with a FAILED subtask."""
        return {r["host_id"] for r in self.subtasks if r["host_id"] is not None and r["status"] == SubtaskStatus.FAILED.value}

    def subtask(self, subtask_id: int) -> dict:
        for row in self.subtasks:
            if row["id"] == subtask_id:
                return row
        raise KeyError(subtask_id)


class TaskStore:
    """Synchronous, durable task records. Thread-safe; a context manager that disposes its engine."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        self._sqlite = self.url.startswith("sqlite")
        kwargs: dict = {}
        if self._sqlite:
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        self.engine: Engine = sa.create_engine(self.url, **kwargs)
        if self._sqlite:
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        # SQLite allows one writer; serialising our own threads avoids 'database is locked' retries.
        self._write_lock = threading.Lock() if self._sqlite else _NullLock()
        with self._available():
            metadata.create_all(self.engine)

    @property
    def safe_url(self) -> str:
        """The URL without its password, for messages and logs."""
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    @contextmanager
    def _available(self) -> Iterator[None]:
        """Database failures (server down, read-only file, disk full) become one clear error; the transaction
        they interrupted is rolled back, so nothing is half-written."""
        try:
            yield
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            raise StoreUnavailableError(f"the task store {self.safe_url} is unavailable: {reason}") from None
        except sa.exc.DatabaseError as exc:
            if isinstance(exc, sa.exc.IntegrityError):
                raise
            reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            raise StoreUnavailableError(f"the task store {self.safe_url} refused the operation: {reason}") from None

    def __enter__(self) -> TaskStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._available(), self._write_lock, self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._available(), self.engine.connect() as conn:
            yield conn

    # -- creation -------------------------------------------------------------------------------------

    def create_task(
        self,
        plan: Plan,
        *,
        creator: str,
        executor: str,
        type: TaskType = TaskType.MANUAL,
        options: dict | None = None,
        inventory: str = "",
        name: str = TASK_NAME,
    ) -> int:
        """Record a task for ``plan`` (roots READY, the rest PENDING) and lock its hosts, atomically.

        Raises HostBusyError if another task holds one of the hosts; then nothing is written.
        """
        stamp = format_time(now())
        try:
            with self._write() as conn:
                # Insert first: on SQLite that takes the write lock, so the lock check below reads current rows.
                task_id = conn.execute(
                    tasks.insert().values(
                        name=name, type=type.value, status=TaskStatus.RUNNING.value,
                        operation=Operation.EXECUTE.value, creator=creator, executor=executor,
                        host_ids=json.dumps(plan.host_ids), prohibit_rollback=False,
                        options=json.dumps(options or {}), inventory=inventory, create_time=stamp, start_time=stamp,
                        lease_until=time.time() + LAUNCH_GRACE_SECONDS, runner="",
                    )
                ).inserted_primary_key[0]
                self._reap(conn)
                self._lock_hosts(conn, task_id, plan.host_ids, stamp)
                rows = [
                    {
                        "task_id": task_id, "seq": node.key, "kind": node.kind.value, "host_id": node.host_id,
                        "name": node.name, "class_name": node.class_name, "operation": Operation.EXECUTE.value,
                        "parallel_idx": node.parallel_idx, "prohibit_rollback": False, "run_time": 1,
                        "series_id": node.series_id, "timeout": node.timeout,
                        "status": (SubtaskStatus.READY if not node.upstreams else SubtaskStatus.PENDING).value,
                    }
                    for node in plan.nodes
                ]
                ids = [
                    r[0]
                    for r in conn.execute(
                        subtasks.insert().returning(subtasks.c.id, sort_by_parameter_order=True), rows
                    )
                ]
                conn.execute(
                    subtasks.update().where(subtasks.c.id == sa.bindparam("sid")).values(
                        upstreams=sa.bindparam("ups"), downstreams=sa.bindparam("downs")
                    ),
                    [
                        {
                            "sid": ids[node.key],
                            "ups": json.dumps([ids[k] for k in node.upstreams]),
                            "downs": json.dumps([ids[k] for k in node.downstreams]),
                        }
                        for node in plan.nodes
                    ],
                )
        except sa.exc.IntegrityError:
            raise self._busy_error(plan.host_ids) from None
        return int(task_id)

    def _lock_hosts(self, conn: Connection, task_id: int, host_ids: list[int], stamp: str) -> None:
        busy = conn.execute(
            sa.select(host_locks.c.host_id, host_locks.c.task_id)
            .where(host_locks.c.host_id.in_(host_ids), host_locks.c.task_id != task_id)
        ).first()
        if busy:
            raise HostBusyError(busy.host_id, busy.task_id)
        held = set(conn.execute(sa.select(host_locks.c.host_id).where(host_locks.c.task_id == task_id)).scalars())
        conn.execute(
            host_locks.insert(), [{"host_id": h, "task_id": task_id, "acquired": stamp} for h in host_ids if h not in held]
        )

    def _busy_error(self, host_ids: list[int]) -> Exception:
        # Another process locked one of these hosts between our check and our insert (PostgreSQL).
        with self._read() as conn:
            busy = conn.execute(
                sa.select(host_locks.c.host_id, host_locks.c.task_id).where(host_locks.c.host_id.in_(host_ids))
            ).first()
        return HostBusyError(busy.host_id, busy.task_id) if busy else RuntimeError("lock conflict vanished")

    # -- transitions ----------------------------------------------------------------------------------

    def start_subtask(self, subtask_id: int, separator: str) -> None:
        """RUNNING, with the run's separator line at the head of its new log segment."""
        with self._write() as conn:
            conn.execute(
                subtasks.update().where(subtasks.c.id == subtask_id).values(
                    status=SubtaskStatus.RUNNING.value, start_time=format_time(now()), finish_time=None
                )
            )
            conn.execute(subtask_logs.insert().values(subtask_id=subtask_id, text=separator))

    def finish_subtask(self, subtask_id: int, status: SubtaskStatus, log: Sequence[str] = ()) -> None:
        """The subtask's final status, with the last lines of its log, in one transaction."""
        with self._write() as conn:
            conn.execute(
                subtasks.update().where(subtasks.c.id == subtask_id).values(
                    status=status.value, finish_time=format_time(now())
                )
            )
            self._insert_log(conn, [(subtask_id, line) for line in log])
            if status is SubtaskStatus.SUCCESSFUL:
                # OCP: a subtask becomes READY when all its upstreams are SUCCESSFUL.
                self._promote_ready(conn, subtask_id)

    def _promote_ready(self, conn: Connection, subtask_id: int) -> None:
        """Mark READY the PENDING downstreams of ``subtask_id`` whose upstreams are all SUCCESSFUL.

        A Wait node has every host's node of the previous stage upstream: its check runs once per finishing
        upstream, so it is one short-circuiting statement with the ids inlined (integers from our own plan) —
        binding N parameters through SQLAlchemy each time was ~1.6 ms, 0.8 s of a 100-host run.
        """
        downs = json.loads(conn.execute(sa.select(subtasks.c.downstreams).where(subtasks.c.id == subtask_id)).scalar_one())
        if not downs:
            return
        pending = subtasks.c.status == SubtaskStatus.PENDING.value
        rows = conn.execute(sa.select(subtasks.c.id, subtasks.c.upstreams).where(subtasks.c.id.in_(downs), pending)).all()
        ready = [row.id for row in rows if self._all_successful(conn, json.loads(row.upstreams), but=subtask_id)]
        if ready:
            conn.execute(subtasks.update().where(subtasks.c.id.in_(ready), pending).values(status=SubtaskStatus.READY.value))

    @staticmethod
    def _all_successful(conn: Connection, ids: list[int], but: int) -> bool:
        """Whether every subtask in ``ids`` except ``but`` (which just succeeded) is SUCCESSFUL."""
        others = ",".join(str(int(i)) for i in ids if i != but)
        if not others:
            return True
        unfinished = sa.text(
            f"SELECT 1 FROM subtasks WHERE id IN ({others}) AND status <> '{SubtaskStatus.SUCCESSFUL.value}' LIMIT 1"
        )
        return conn.execute(unfinished).first() is None

    def append_log(self, subtask_id: int, text: str) -> None:
        self.append_logs([(subtask_id, text)])

    def append_logs(self, lines: Sequence[tuple[int, str]]) -> None:
        """Log lines of any subtasks, (subtask id, text) in order, in one transaction."""
        if lines:
            with self._write() as conn:
                self._insert_log(conn, lines)

    @staticmethod
    def _insert_log(conn: Connection, lines: Sequence[tuple[int, str]]) -> None:
        if lines:
            conn.execute(subtask_logs.insert(), [{"subtask_id": sid, "text": text} for sid, text in lines])

    def finish_task(self, task_id: int, status: TaskStatus) -> None:
        """Set the task's final status and release its host locks and its lease."""
        with self._write() as conn:
            conn.execute(
                tasks.update().where(tasks.c.id == task_id).values(
                    status=status.value, finish_time=format_time(now()), lease_until=0.0, runner=""
                )
            )
            conn.execute(host_locks.delete().where(host_locks.c.task_id == task_id))

    def renew_lease(self, task_id: int, seconds: float, runner: str) -> None:
        """The heartbeat of the process running the task."""
        with self._write() as conn:
            conn.execute(
                tasks.update().where(tasks.c.id == task_id, tasks.c.status == TaskStatus.RUNNING.value)
                .values(lease_until=time.time() + seconds, runner=runner)
            )

    def reap_expired(self) -> list[int]:
        """Mark FAILED every RUNNING task whose lease lapsed (its process died); returns their ids."""
        with self._write() as conn:
            return self._reap(conn)

    def _reap(self, conn: Connection) -> list[int]:
        expired = conn.execute(
            sa.select(tasks.c.id, tasks.c.runner, tasks.c.lease_until)
            .where(tasks.c.status == TaskStatus.RUNNING.value, tasks.c.lease_until < time.time())
        ).all()
        stamp = format_time(now())
        for task_id, runner, lease_until in expired:
            lapsed = datetime.fromtimestamp(lease_until).astimezone().isoformat(timespec="milliseconds")
            self._fail_task(conn, task_id, (
                f"{stamp} ERROR --- the process running task {task_id} ({runner or 'never started'}) stopped renewing "
                f"its lease at {lapsed}; marked FAILED by {runner_id()}. Retry the task to continue from here."
            ))
        return [row.id for row in expired]

    # -- operations: OCP's state machine (reference/ocp.md §1) ----------------------------------------------
    # Each validates and applies in one transaction; the caller then launches a flow run for the task.

    def retry_task(self, task_id: int) -> None:
        """FAILED subtasks -> READY (operation RETRY, runTime + 1); their never-run downstream follows them."""
        with self._write() as conn:
            task = self._task_for_operation(conn, task_id, "retry")
            failed = [r for r in self._subtasks(conn, task_id) if r["status"] == SubtaskStatus.FAILED.value]
            for row in failed:
                self._requeue(conn, row, Operation.RETRY)
            self._reopen(conn, task, Operation.RETRY)

    def retry_subtask(self, task_id: int, subtask_id: int) -> None:
        with self._write() as conn:
            task = self._task_for_operation(conn, task_id, "retry a subtask of")
            row = self._subtask_in(conn, task_id, subtask_id)
            if row["status"] != SubtaskStatus.FAILED.value:
                raise TaskStateError(f"The operation is not allowed because the subtask {subtask_id} is in {row['status']} state")
            self._requeue(conn, row, Operation.RETRY)
            self._reopen(conn, task, Operation.RETRY)

    def skip_subtask(self, task_id: int, subtask_id: int) -> None:
        """A FAILED subtask becomes SUCCESSFUL without running (operation SKIP); the task goes on."""
        with self._write() as conn:
            task = self._task_for_operation(conn, task_id, "skip a subtask of")
            row = self._subtask_in(conn, task_id, subtask_id)
            if row["status"] != SubtaskStatus.FAILED.value:
                raise TaskStateError(f"The subtask {subtask_id} cannot be skipped: it is {row['status']}, not FAILED", 4010)
            conn.execute(subtasks.update().where(subtasks.c.id == subtask_id).values(
                status=SubtaskStatus.READY.value, operation=Operation.SKIP.value))
            self._reopen(conn, task, Operation.RETRY)

    def cancel_subtask(self, task_id: int, subtask_id: int) -> None:
        """RUNNING -> CANCELING; the step sees it, kills its remote command and ends FAILED."""
        with self._write() as conn:
            self._task_row(conn, task_id)
            row = self._subtask_in(conn, task_id, subtask_id)
            if row["status"] != SubtaskStatus.RUNNING.value:
                raise TaskStateError(f"The operation is not allowed because the subtask {subtask_id} is in {row['status']} state")
            conn.execute(subtasks.update().where(subtasks.c.id == subtask_id).values(
                status=SubtaskStatus.CANCELING.value, operation=Operation.CANCEL.value))

    def rollback_task(self, task_id: int) -> None:
        """Every subtask that ran (or was ready) -> READY with operation ROLLBACK; undone in reverse order."""
        with self._write() as conn:
            task = self._task_row(conn, task_id)
            if task["status"] != TaskStatus.FAILED.value:
                raise TaskStateError(f"The operation is not allowed because the task {task_id} is in {task['status']} state")
            if task["prohibit_rollback"]:
                raise TaskStateError(f"The task {task_id} cannot be rolled back", 4009)
            for row in self._subtasks(conn, task_id):
                if row["status"] != SubtaskStatus.PENDING.value:
                    conn.execute(subtasks.update().where(subtasks.c.id == row["id"]).values(
                        status=SubtaskStatus.READY.value, operation=Operation.ROLLBACK.value))
            self._reopen(conn, task, Operation.ROLLBACK)

    def _task_row(self, conn: Connection, task_id: int) -> dict:
        row = conn.execute(sa.select(tasks).where(tasks.c.id == task_id)).mappings().first()
        if row is None:
            raise UnknownTaskError(task_id)
        return _decode(row)

    def _task_for_operation(self, conn: Connection, task_id: int, doing: str) -> dict:
        self._reap(conn)
        task = self._task_row(conn, task_id)
        if task["status"] != TaskStatus.FAILED.value or task["operation"] == Operation.ROLLBACK.value:
            state = task["status"] + (" (rolled back)" if task["operation"] == Operation.ROLLBACK.value else "")
            raise TaskStateError(f"The operation is not allowed because the task {task_id} is in {state} state")
        return task

    def _subtasks(self, conn: Connection, task_id: int) -> list[dict]:
        return [_decode(r) for r in conn.execute(
            sa.select(subtasks).where(subtasks.c.task_id == task_id).order_by(subtasks.c.seq)).mappings()]

    def _subtask_in(self, conn: Connection, task_id: int, subtask_id: int) -> dict:
        row = conn.execute(
            sa.select(subtasks).where(subtasks.c.id == subtask_id, subtasks.c.task_id == task_id)
        ).mappings().first()
        if row is None:
            raise UnknownSubtaskError(task_id, subtask_id)
        return _decode(row)

    def _requeue(self, conn: Connection, row: dict, operation: Operation) -> None:
        conn.execute(subtasks.update().where(subtasks.c.id == row["id"]).values(
            status=SubtaskStatus.READY.value, operation=operation.value, run_time=row["run_time"] + 1))

    def _reopen(self, conn: Connection, task: dict, operation: Operation) -> None:
        """The task runs again: RUNNING, its hosts locked (or HostBusyError), a launch grace on its lease."""
        self._lock_hosts(conn, task["id"], task["host_ids"], format_time(now()))
        conn.execute(tasks.update().where(tasks.c.id == task["id"]).values(
            status=TaskStatus.RUNNING.value, operation=operation.value, finish_time=None,
            lease_until=time.time() + LAUNCH_GRACE_SECONDS, runner=""))

    def abort_task(self, task_id: int, reason: str) -> None:
        """FAIL a task whose flow run could not start: its READY/RUNNING subtasks get ``reason`` in their log."""
        with self._write() as conn:
            self._fail_task(conn, task_id, f"{format_time(now())} ERROR --- {reason}")

    def _fail_task(self, conn: Connection, task_id: int, why: str) -> None:
        stamp = format_time(now())
        interrupted = conn.execute(
            sa.select(subtasks.c.id).where(
                subtasks.c.task_id == task_id,
                subtasks.c.status.in_([s.value for s in (SubtaskStatus.RUNNING, SubtaskStatus.CANCELING, SubtaskStatus.READY)]),
            )
        ).scalars().all()
        for sid in interrupted:
            conn.execute(subtask_logs.insert().values(subtask_id=sid, text=why))
        conn.execute(subtasks.update().where(subtasks.c.id.in_(interrupted))
                     .values(status=SubtaskStatus.FAILED.value, finish_time=stamp))
        conn.execute(tasks.update().where(tasks.c.id == task_id)
                     .values(status=TaskStatus.FAILED.value, finish_time=stamp, lease_until=0.0, runner=""))
        conn.execute(host_locks.delete().where(host_locks.c.task_id == task_id))

    def save_snapshot(self, task_id: int, host_id: int, pids: dict[str, int], phase: str = "before") -> None:
        key = (host_snapshots.c.task_id == task_id, host_snapshots.c.host_id == host_id, host_snapshots.c.phase == phase)
        with self._write() as conn:
            conn.execute(host_snapshots.delete().where(*key))
            conn.execute(host_snapshots.insert().values(task_id=task_id, host_id=host_id, phase=phase, pids=json.dumps(pids)))

    def snapshot(self, task_id: int, host_id: int, phase: str = "before") -> dict[str, int] | None:
        key = (host_snapshots.c.task_id == task_id, host_snapshots.c.host_id == host_id, host_snapshots.c.phase == phase)
        with self._read() as conn:
            raw = conn.execute(sa.select(host_snapshots.c.pids).where(*key)).scalar()
        return json.loads(raw) if raw else None

    def canceling(self, task_id: int) -> set[int]:
        """The task's subtasks an operator asked to cancel (CANCELING)."""
        with self._read() as conn:
            return set(conn.execute(sa.select(subtasks.c.id).where(
                subtasks.c.task_id == task_id, subtasks.c.status == SubtaskStatus.CANCELING.value)).scalars())

    # -- reads ----------------------------------------------------------------------------------------

    def load(self, task_id: int) -> TaskRecord:
        with self._read() as conn:
            task = conn.execute(sa.select(tasks).where(tasks.c.id == task_id)).mappings().first()
            if task is None:
                raise UnknownTaskError(task_id)
            rows = conn.execute(
                sa.select(subtasks).where(subtasks.c.task_id == task_id).order_by(subtasks.c.seq)
            ).mappings().all()
        return TaskRecord(task=_decode(task), subtasks=[_decode(r) for r in rows])

    def log(self, subtask_id: int) -> str:
        with self._read() as conn:
            lines = conn.execute(
                sa.select(subtask_logs.c.text).where(subtask_logs.c.subtask_id == subtask_id).order_by(subtask_logs.c.id)
            ).scalars().all()
        return "\n".join(lines)

    def task_ids(
        self, *, statuses: Sequence[str] | None = None, creator: str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[int], int]:
        """Task ids, newest first, and the total count."""
        query = sa.select(tasks.c.id)
        count = sa.select(sa.func.count()).select_from(tasks)
        if statuses:
            query = query.where(tasks.c.status.in_(statuses))
            count = count.where(tasks.c.status.in_(statuses))
        if creator is not None:
            query = query.where(tasks.c.creator == creator)
            count = count.where(tasks.c.creator == creator)
        with self._read() as conn:
            ids = conn.execute(query.order_by(tasks.c.id.desc()).limit(limit).offset(offset)).scalars().all()
            total = conn.execute(count).scalar_one()
        return list(ids), int(total)

    def set_host_agent_status(self, host_id: int, status: str) -> None:
        with self._write() as conn:
            updated = conn.execute(
                host_agent_status.update().where(host_agent_status.c.host_id == host_id)
                .values(status=status, updated=format_time(now()))
            ).rowcount
            if not updated:
                conn.execute(host_agent_status.insert().values(host_id=host_id, status=status, updated=format_time(now())))

    def host_agent_statuses(self) -> dict[int, str]:
        """host id -> the agent status last seen by a restart."""
        with self._read() as conn:
            return {r.host_id: r.status for r in conn.execute(sa.select(host_agent_status))}

    def locks(self) -> dict[int, int]:
        """host id -> the id of the task holding it."""
        with self._read() as conn:
            return {r.host_id: r.task_id for r in conn.execute(sa.select(host_locks))}


def runner_id() -> str:
    """Who runs a task: pid@host, shown when its lease lapses."""
    return f"pid {os.getpid()} on {socket.gethostname()}"


def _decode(row) -> dict:
    out = dict(row)
    for key in ("host_ids", "upstreams", "downstreams", "options"):
        if key in out and isinstance(out[key], str):
            out[key] = json.loads(out[key])
    if "kind" in out:
        out["kind"] = Kind(out["kind"])
    return out


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers (status, API) never block the flow's writes
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class _NullLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
