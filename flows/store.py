"""The task store: the durable, synchronous record of tasks, subtasks, logs and host locks.

Prefect records task-run states asynchronously (reference/prefect.md), so the documented view is built from
this store, which our own code writes at every transition. SQLite under ``$OCP_RESTART_HOME`` by default
(``~/.ocp-restart/tasks.db``); any SQLAlchemy URL via ``OCP_RESTART_STORE_URL``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .errors import HostBusyError, UnknownTaskError
from .models import Operation, SubtaskStatus, TaskStatus, TaskType, format_time, now
from .plan import TASK_NAME, Kind, Plan

metadata = sa.MetaData()

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
    sa.Column("create_time", sa.String(40), nullable=False),
    sa.Column("start_time", sa.String(40), nullable=False),
    sa.Column("finish_time", sa.String(40)),
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
        metadata.create_all(self.engine)

    def __enter__(self) -> TaskStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._write_lock, self.engine.begin() as conn:
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
        name: str = TASK_NAME,
    ) -> int:
        """Record a task for ``plan`` (roots READY, the rest PENDING) and lock its hosts, atomically.

        Raises HostBusyError if another task holds one of the hosts; then nothing is written.
        """
        stamp = format_time(now())
        try:
            with self._write() as conn:
                busy = conn.execute(
                    sa.select(host_locks.c.host_id, host_locks.c.task_id)
                    .where(host_locks.c.host_id.in_(plan.host_ids))
                ).first()
                if busy:
                    raise HostBusyError(busy.host_id, busy.task_id)
                task_id = conn.execute(
                    tasks.insert().values(
                        name=name, type=type.value, status=TaskStatus.RUNNING.value,
                        operation=Operation.EXECUTE.value, creator=creator, executor=executor,
                        host_ids=json.dumps(plan.host_ids), prohibit_rollback=False,
                        options=json.dumps(options or {}), create_time=stamp, start_time=stamp,
                    )
                ).inserted_primary_key[0]
                conn.execute(
                    host_locks.insert(),
                    [{"host_id": h, "task_id": task_id, "acquired": stamp} for h in plan.host_ids],
                )
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
            # Another process locked one of these hosts between our check and our insert.
            with self.engine.connect() as conn:
                busy = conn.execute(
                    sa.select(host_locks.c.host_id, host_locks.c.task_id)
                    .where(host_locks.c.host_id.in_(plan.host_ids))
                ).first()
            if busy is None:
                raise
            raise HostBusyError(busy.host_id, busy.task_id) from None
        return int(task_id)

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

    def finish_subtask(self, subtask_id: int, status: SubtaskStatus) -> None:
        with self._write() as conn:
            conn.execute(
                subtasks.update().where(subtasks.c.id == subtask_id).values(
                    status=status.value, finish_time=format_time(now())
                )
            )
            if status is SubtaskStatus.SUCCESSFUL:
                # OCP: a subtask becomes READY when all its upstreams are SUCCESSFUL.
                self._promote_ready(conn, subtask_id)

    def _promote_ready(self, conn: Connection, subtask_id: int) -> None:
        downs = json.loads(conn.execute(sa.select(subtasks.c.downstreams).where(subtasks.c.id == subtask_id)).scalar_one())
        for down in downs:
            row = conn.execute(sa.select(subtasks.c.upstreams, subtasks.c.status).where(subtasks.c.id == down)).one()
            if row.status != SubtaskStatus.PENDING.value:
                continue
            ups = json.loads(row.upstreams)
            states = conn.execute(sa.select(subtasks.c.status).where(subtasks.c.id.in_(ups))).scalars().all()
            if all(s == SubtaskStatus.SUCCESSFUL.value for s in states):
                conn.execute(subtasks.update().where(subtasks.c.id == down).values(status=SubtaskStatus.READY.value))

    def append_log(self, subtask_id: int, text: str) -> None:
        with self._write() as conn:
            conn.execute(subtask_logs.insert().values(subtask_id=subtask_id, text=text))

    def finish_task(self, task_id: int, status: TaskStatus) -> None:
        """Set the task's final status and release its host locks."""
        with self._write() as conn:
            conn.execute(
                tasks.update().where(tasks.c.id == task_id).values(status=status.value, finish_time=format_time(now()))
            )
            conn.execute(host_locks.delete().where(host_locks.c.task_id == task_id))

    # -- reads ----------------------------------------------------------------------------------------

    def load(self, task_id: int) -> TaskRecord:
        with self.engine.connect() as conn:
            task = conn.execute(sa.select(tasks).where(tasks.c.id == task_id)).mappings().first()
            if task is None:
                raise UnknownTaskError(task_id)
            rows = conn.execute(
                sa.select(subtasks).where(subtasks.c.task_id == task_id).order_by(subtasks.c.seq)
            ).mappings().all()
        return TaskRecord(task=_decode(task), subtasks=[_decode(r) for r in rows])

    def log(self, subtask_id: int) -> str:
        with self.engine.connect() as conn:
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
        with self.engine.connect() as conn:
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
        with self.engine.connect() as conn:
            return {r.host_id: r.status for r in conn.execute(sa.select(host_agent_status))}

    def locks(self) -> dict[int, int]:
        """host id -> the id of the task holding it."""
        with self.engine.connect() as conn:
            return {r.host_id: r.task_id for r in conn.execute(sa.select(host_locks))}


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
