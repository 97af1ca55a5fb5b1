"""Creating tasks (their subtasks and host locks in one transaction) and reading them back as records."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from ..errors import HostBusyError, UnknownTaskError
from ..machine import LAUNCH_GRACE_SECONDS
from ..models import Operation, SubtaskStatus, TaskStatus, TaskType, format_time, now
from ..plan import Plan
from ..records import Task, TaskRecord
from .database import Database
from .hosts import lock_hosts
from .rows import subtask_from_row, task_from_row
from .schema import host_locks, subtasks, tasks

if TYPE_CHECKING:
    from .leases import Leases

# A progress view's read of a task's subtasks: six columns, no records built (a terminal's progress bar asks every
# 0.3 s; a full load of a 1,000-host task, 5,004 subtask records, cost ~60 ms of CPU against ~9 for this).
_PROGRESS = (
    sa.select(
        subtasks.c.id,
        subtasks.c.name,
        subtasks.c.status,
        subtasks.c.host_id,
        subtasks.c.start_time,
        subtasks.c.finish_time,
    )
    .where(subtasks.c.task_id == sa.bindparam("task_id"))
    .order_by(subtasks.c.seq)
)
_TASK_STATUS = sa.select(tasks.c.status).where(tasks.c.id == sa.bindparam("task_id"))

# What the task list may be sorted by: the API's names map onto these columns.
SORTABLE = ("id", "name", "status", "type", "create_time", "start_time", "finish_time")


def _task_row(conn: Connection, task_id: int, *, for_update: bool = False) -> RowMapping:
    """The task's row (UnknownTaskError if there is none); ``for_update`` locks it."""
    query = sa.select(tasks).where(tasks.c.id == task_id)
    row = conn.execute(query.with_for_update() if for_update else query).mappings().first()
    if row is None:
        raise UnknownTaskError(task_id)
    return row


def load_record(conn: Connection, task_id: int, *, for_update: bool = False) -> TaskRecord:
    """The task and its subtasks as the caller's transaction sees them; ``for_update`` locks the task's row."""
    task = _task_row(conn, task_id, for_update=for_update)
    rows = (
        conn.execute(sa.select(subtasks).where(subtasks.c.task_id == task_id).order_by(subtasks.c.seq)).mappings().all()
    )
    created = task["create_time"]
    return TaskRecord(task=task_from_row(task), subtasks=tuple(subtask_from_row(r, created) for r in rows))


class Tasks:
    """Creating a task (reaping lapsed leases in its transaction, with ``leases``); loading and listing."""

    def __init__(self, db: Database, leases: Leases) -> None:
        self.db, self.leases = db, leases

    def create_task(
        self,
        plan: Plan,
        *,
        creator: str,
        executor: str,
        type: TaskType = TaskType.MANUAL,
        options: dict[str, Any] | None = None,
        inventory: str = "",
        name: str | None = None,
    ) -> int:
        """Record a task for ``plan`` (roots READY, the rest PENDING) and lock its hosts, atomically.

        Raises HostBusyError if another task holds one of the hosts; then nothing is written.
        """
        stamp = format_time(now())
        try:
            with self.db.write() as conn:
                # Insert first: on SQLite that takes the write lock, so the lock check below reads current rows.
                task_id: int = conn.execute(
                    tasks.insert()
                    .returning(tasks.c.id)
                    .values(
                        name=name or plan.template.task_name,
                        template=plan.template.key,
                        type=type.value,
                        status=TaskStatus.RUNNING.value,
                        operation=Operation.EXECUTE.value,
                        creator=creator,
                        executor=executor,
                        host_ids=json.dumps(plan.host_ids),
                        prohibit_rollback=False,
                        options=json.dumps(options or {}),
                        inventory=inventory,
                        create_time=stamp,
                        start_time=stamp,
                        lease_until=time.time() + LAUNCH_GRACE_SECONDS,
                        runner="",
                    )
                ).scalar_one()
                self.leases.reap(conn)
                lock_hosts(conn, task_id, plan.host_ids, stamp)
                rows = [
                    {
                        "task_id": task_id,
                        "seq": node.key,
                        "kind": node.kind.value,
                        "host_id": node.host_id,
                        "name": node.name,
                        "class_name": node.class_name,
                        "operation": Operation.EXECUTE.value,
                        "parallel_idx": node.parallel_idx,
                        "prohibit_rollback": False,
                        "run_time": 1,
                        "series_id": node.series_id,
                        "timeout": node.timeout,
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
                    subtasks.update()
                    .where(subtasks.c.id == sa.bindparam("sid"))
                    .values(upstreams=sa.bindparam("ups"), downstreams=sa.bindparam("downs")),
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

    def _busy_error(self, host_ids: Sequence[int]) -> Exception:
        # Another process locked one of these hosts between our check and our insert (PostgreSQL).
        with self.db.read() as conn:
            busy = conn.execute(
                sa.select(host_locks.c.host_id, host_locks.c.task_id).where(host_locks.c.host_id.in_(host_ids))
            ).first()
        return HostBusyError(busy.host_id, busy.task_id) if busy else RuntimeError("lock conflict vanished")

    def load(self, task_id: int) -> TaskRecord:
        with self.db.read() as conn:
            return load_record(conn, task_id)

    def task(self, task_id: int) -> Task:
        """The task's row alone, for callers that need none of its subtasks (a 1,000-host task's full load builds
        5,004 subtask records: ~60 ms of CPU)."""
        with self.db.read() as conn:
            return task_from_row(_task_row(conn, task_id))

    def progress(self, task_id: int) -> tuple[str, list[tuple[int, str, str, int | None, str | None, str | None]]]:
        """What a progress view shows, in one read: the task's status and, in plan order, each subtask's id, name,
        status, host id, start and finish time."""
        with self.db.read() as conn:
            status = conn.execute(_TASK_STATUS, {"task_id": task_id}).scalar()
            if status is None:
                raise UnknownTaskError(task_id)
            return status, [tuple(row) for row in conn.execute(_PROGRESS, {"task_id": task_id})]

    def task_ids(
        self,
        *,
        statuses: Sequence[str] | None = None,
        creator: str | None = None,
        limit: int = 50,
        offset: int = 0,
        name: str | None = None,
        types: Sequence[str] | None = None,
        host_id: int | None = None,
        order: Sequence[tuple[str, bool]] = (),
    ) -> tuple[list[int], int]:
        """Task ids on one page and the total count. Filters: ``statuses``, ``types`` (any of), ``creator``,
        ``name`` (a case-insensitive substring), ``host_id`` (tasks on that host). ``order``: (column, ascending)
        pairs of SORTABLE columns; ties (and no order) go newest first."""
        conditions = self._list_conditions(statuses, creator, name, types, host_id)
        unknown = [column for column, _ in order if column not in SORTABLE]
        if unknown:
            raise ValueError(f"cannot sort tasks by {unknown}; sortable: {sorted(SORTABLE)}")
        keys = [tasks.c[column].asc() if ascending else tasks.c[column].desc() for column, ascending in order]
        if not any(column == "id" for column, _ in order):
            keys.append(tasks.c.id.desc())
        query = sa.select(tasks.c.id).where(*conditions).order_by(*keys).limit(limit).offset(offset)
        count = sa.select(sa.func.count()).select_from(tasks).where(*conditions)
        with self.db.read() as conn:
            ids = conn.execute(query).scalars().all()
            total = conn.execute(count).scalar_one()
        return list(ids), int(total)

    @staticmethod
    def _list_conditions(
        statuses: Sequence[str] | None,
        creator: str | None,
        name: str | None,
        types: Sequence[str] | None,
        host_id: int | None,
    ) -> list[sa.ColumnElement[bool]]:
        conditions: list[sa.ColumnElement[bool]] = []
        if statuses:
            conditions.append(tasks.c.status.in_(statuses))
        if types:
            conditions.append(tasks.c.type.in_(types))
        if creator is not None:
            conditions.append(tasks.c.creator == creator)
        if name:
            escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conditions.append(tasks.c.name.ilike(f"%{escaped}%", escape="\\"))
        if host_id is not None:
            conditions.append(tasks.c.id.in_(sa.select(subtasks.c.task_id).where(subtasks.c.host_id == host_id)))
        return conditions

    def load_many(self, task_ids: Sequence[int]) -> list[TaskRecord]:
        """Records of ``task_ids``, in that order (ids that do not exist are left out); two queries in all."""
        if not task_ids:
            return []
        with self.db.read() as conn:
            rows = {r["id"]: r for r in conn.execute(sa.select(tasks).where(tasks.c.id.in_(task_ids))).mappings()}
            children: dict[int, list[RowMapping]] = {task_id: [] for task_id in rows}
            query = sa.select(subtasks).where(subtasks.c.task_id.in_(list(rows)))
            for row in conn.execute(query.order_by(subtasks.c.task_id, subtasks.c.seq)).mappings():
                children[int(row["task_id"])].append(row)
        return [
            TaskRecord(
                task=task_from_row(rows[i]),
                subtasks=tuple(subtask_from_row(r, rows[i]["create_time"]) for r in children[i]),
            )
            for i in task_ids
            if i in rows
        ]
