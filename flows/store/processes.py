"""Process operations: the record of each restart or stop of one agent process (who, when, outcome, output), and
the host lock it holds while it runs.

A running operation holds its host in ``host_locks`` as a task does, with ``task_id`` = minus the operation's id
(task ids are positive): a task and a process operation on the same host exclude each other through the same
primary key, and either finds the other in the same HostBusyError (409, OCP's 20021). An operation whose process
died before finishing is reaped once its lease (its deadline and a grace) has passed: FAILED, its host released.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from ..errors import HostBusyError
from ..models import format_time, now
from .database import Database
from .schema import host_locks, process_operations

RUNNING, SUCCESSFUL, FAILED = "RUNNING", "SUCCESSFUL", "FAILED"
MAX_OUTPUT = 64_000  # characters of an operation's output kept (its end)


@dataclass(frozen=True)
class ProcessOperation:
    """One restart or stop of one agent process, as recorded."""

    id: int
    host_id: int
    alias: str
    action: str
    creator: str
    status: str
    start_time: str
    finish_time: str | None
    pid_before: int | None
    pid_after: int | None
    output: str

    def to_wire(self) -> dict[str, object]:
        return {
            "id": self.id,
            "hostId": self.host_id,
            "alias": self.alias,
            "action": self.action.upper(),
            "creator": self.creator,
            "status": self.status,
            "startTime": self.start_time,
            "finishTime": self.finish_time,
            "pidBefore": self.pid_before,
            "pidAfter": self.pid_after,
            "output": self.output,
        }


def lock_holder(operation_id: int) -> int:
    """What ``host_locks.task_id`` holds for a process operation."""
    return -operation_id


def _from_row(row: RowMapping) -> ProcessOperation:
    return ProcessOperation(
        id=int(row["id"]),
        host_id=int(row["host_id"]),
        alias=row["alias"],
        action=row["action"],
        creator=row["creator"],
        status=row["status"],
        start_time=row["start_time"],
        finish_time=row["finish_time"],
        pid_before=row["pid_before"],
        pid_after=row["pid_after"],
        output=row["output"] or "",
    )


def reap_operations(conn: Connection) -> list[int]:
    """In the caller's transaction: RUNNING operations whose lease passed (their process died or froze) become
    FAILED and release their host. Returns their ids."""
    stale = conn.execute(
        sa.select(process_operations.c.id, process_operations.c.output).where(
            process_operations.c.status == RUNNING, process_operations.c.lease_until < time.time()
        )
    ).all()
    stamp = format_time(now())
    for row in stale:
        note = f"{stamp} ERROR --- abandoned: the process running this operation did not finish it in time"
        conn.execute(
            process_operations.update()
            .where(process_operations.c.id == row.id, process_operations.c.status == RUNNING)
            .values(status=FAILED, finish_time=stamp, output=_capped(f"{row.output}\n{note}".lstrip("\n")))
        )
        conn.execute(host_locks.delete().where(host_locks.c.task_id == lock_holder(row.id)))
    return [row.id for row in stale]


def _capped(text: str) -> str:
    return text if len(text) <= MAX_OUTPUT else "...\n" + text[-MAX_OUTPUT:]


class ProcessOperations:
    """Begin (taking the host), finish (releasing it), list."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def begin(
        self, host_id: int, alias: str, action: str, creator: str, *, seconds: float, pid_before: int | None
    ) -> int:
        """Record a RUNNING operation and hold its host for at most ``seconds`` (then it is reaped); its id.
        HostBusyError (nothing written) if a task or another operation holds the host."""
        stamp = format_time(now())
        try:
            with self.db.write() as conn:
                op_id = int(
                    conn.execute(
                        process_operations.insert()
                        .returning(process_operations.c.id)
                        .values(
                            host_id=host_id,
                            alias=alias,
                            action=action,
                            creator=creator,
                            status=RUNNING,
                            start_time=stamp,
                            lease_until=time.time() + seconds,
                            pid_before=pid_before,
                            output="",
                        )
                    ).scalar_one()
                )
                reap_operations(conn)
                busy = conn.execute(sa.select(host_locks.c.task_id).where(host_locks.c.host_id == host_id)).scalar()
                if busy is not None:
                    raise HostBusyError(host_id, int(busy))
                conn.execute(host_locks.insert().values(host_id=host_id, task_id=lock_holder(op_id), acquired=stamp))
        except sa.exc.IntegrityError:  # another process locked it between our check and our insert (PostgreSQL)
            with self.db.read() as conn:
                holder = conn.execute(sa.select(host_locks.c.task_id).where(host_locks.c.host_id == host_id)).scalar()
            raise HostBusyError(host_id, int(holder or 0)) from None
        return op_id

    def finish(
        self, op_id: int, status: str, output: str, *, pid_before: int | None = None, pid_after: int | None = None
    ) -> bool:
        """Record the outcome and release the host; False if the operation was reaped meanwhile (its output is kept
        all the same)."""
        stamp = format_time(now())
        with self.db.write() as conn:
            done = conn.execute(
                process_operations.update()
                .where(process_operations.c.id == op_id, process_operations.c.status == RUNNING)
                .values(
                    status=status,
                    finish_time=stamp,
                    pid_after=pid_after,
                    output=_capped(output),
                    **({} if pid_before is None else {"pid_before": pid_before}),
                )
            ).rowcount
            if not done:
                conn.execute(
                    process_operations.update()
                    .where(process_operations.c.id == op_id)
                    .values(output=_capped(output + "\n(finished after it was reaped)"))
                )
            conn.execute(host_locks.delete().where(host_locks.c.task_id == lock_holder(op_id)))
        return bool(done)

    def list(self, host_id: int | None = None, limit: int = 20) -> list[ProcessOperation]:
        """The latest operations (of one host, or all), newest first."""
        query = sa.select(process_operations).order_by(process_operations.c.id.desc()).limit(limit)
        if host_id is not None:
            query = query.where(process_operations.c.host_id == host_id)
        with self.db.read() as conn:
            return [_from_row(row) for row in conn.execute(query).mappings()]

    def get(self, op_id: int) -> ProcessOperation | None:
        with self.db.read() as conn:
            row = conn.execute(sa.select(process_operations).where(process_operations.c.id == op_id)).mappings().first()
        return _from_row(row) if row else None
