"""What the store keeps per host: locks held by tasks, the agent's status, and its pids around a restart."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import HostBusyError
from ..models import format_time, now
from ..plan import Kind, template_of
from .database import Database
from .schema import host_agent_status, host_locks, host_snapshots, subtasks, tasks


@dataclass(frozen=True)
class AgentStatus:
    """The agent's status as the last restart of its host left it, and when that was set (OCP's time)."""

    status: str
    updated: str


@dataclass(frozen=True)
class PidSighting:
    """The agent's pids as the latest restart of a host saw them: at its Finish ("after") if it got there, else at
    its Prepare ("before"). ``seen``: when that subtask ended (or began, while it runs); ``stopped``: the restart's
    Stop began since, and no Finish followed."""

    task_id: int
    phase: str
    pids: dict[str, int] = field(default_factory=dict)
    seen: str | None = None
    stopped: bool = False


# Built once with bound parameters (each is run once or more per host and subtask; see transitions.py).
VERSION_PHASE = "version"  # a host_snapshots row holding the agent's version (JSON text), not pids
_SNAPSHOT_KEY = (
    host_snapshots.c.task_id == sa.bindparam("task_id"),
    host_snapshots.c.host_id == sa.bindparam("host_id"),
    host_snapshots.c.phase == sa.bindparam("phase"),
)
_DELETE_SNAPSHOT = host_snapshots.delete().where(*_SNAPSHOT_KEY)
_INSERT_SNAPSHOT = host_snapshots.insert()
_READ_SNAPSHOT = sa.select(host_snapshots.c.pids).where(*_SNAPSHOT_KEY)
_UPDATE_AGENT_STATUS = (
    host_agent_status.update()
    .where(host_agent_status.c.host_id == sa.bindparam("host"))
    .values(status=sa.bindparam("new_status"), updated=sa.bindparam("new_updated"))
)
_INSERT_AGENT_STATUS = host_agent_status.insert()


def lock_hosts(conn: Connection, task_id: int, host_ids: Sequence[int], stamp: str) -> None:
    """Lock ``host_ids`` for ``task_id`` in the caller's transaction (those it holds already stay); HostBusyError
    if another task holds one."""
    busy = conn.execute(
        sa.select(host_locks.c.host_id, host_locks.c.task_id).where(
            host_locks.c.host_id.in_(host_ids), host_locks.c.task_id != task_id
        )
    ).first()
    if busy:
        raise HostBusyError(busy.host_id, busy.task_id)
    held = set(conn.execute(sa.select(host_locks.c.host_id).where(host_locks.c.task_id == task_id)).scalars())
    conn.execute(
        host_locks.insert(), [{"host_id": h, "task_id": task_id, "acquired": stamp} for h in host_ids if h not in held]
    )


class Hosts:
    """Host locks (read), agent statuses and pid snapshots."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def locks(self) -> dict[int, int]:
        """host id -> the id of the task holding it."""
        with self.db.read() as conn:
            return {r.host_id: r.task_id for r in conn.execute(sa.select(host_locks))}

    def held_agent_statuses(self) -> dict[int, str]:
        """host id -> the agent status while something holds it: the holding task's template's ``busy_status``
        (RESTARTING for a restart, STOPPING for a stop); RESTARTING for a process operation (no task row)."""
        query = sa.select(host_locks.c.host_id, tasks.c.template).outerjoin(tasks, tasks.c.id == host_locks.c.task_id)
        with self.db.read() as conn:
            return {
                r.host_id: template_of(r.template).busy_status if r.template else "RESTARTING"
                for r in conn.execute(query)
            }

    def set_host_agent_status(self, host_id: int, status: str) -> None:
        stamp = format_time(now())
        with self.db.write() as conn:
            new = {"host": host_id, "new_status": status, "new_updated": stamp}
            updated = conn.execute(_UPDATE_AGENT_STATUS, new).rowcount
            if not updated:
                conn.execute(_INSERT_AGENT_STATUS, {"host_id": host_id, "status": status, "updated": stamp})

    def host_agent_statuses(self) -> dict[int, str]:
        """host id -> the agent status last seen by a restart."""
        with self.db.read() as conn:
            return {r.host_id: r.status for r in conn.execute(sa.select(host_agent_status))}

    def host_agent_status(self, host_id: int) -> AgentStatus | None:
        """The agent's status as the last restart of the host left it; None before the first."""
        with self.db.read() as conn:
            row = conn.execute(
                sa.select(host_agent_status.c.status, host_agent_status.c.updated).where(
                    host_agent_status.c.host_id == host_id
                )
            ).first()
        return AgentStatus(status=row.status, updated=row.updated) if row else None

    def save_snapshot(self, task_id: int, host_id: int, pids: dict[str, int], phase: str = "before") -> None:
        """The agent's pids before (Prepare) and after (Finish) the restart; "starts": start times at Stop."""
        key = {"task_id": task_id, "host_id": host_id, "phase": phase}
        with self.db.write() as conn:
            conn.execute(_DELETE_SNAPSHOT, key)
            conn.execute(_INSERT_SNAPSHOT, {**key, "pids": json.dumps(pids)})

    def snapshot(self, task_id: int, host_id: int, phase: str = "before") -> dict[str, int] | None:
        with self.db.read() as conn:
            raw = conn.execute(_READ_SNAPSHOT, {"task_id": task_id, "host_id": host_id, "phase": phase}).scalar()
        return json.loads(raw) if raw else None

    def save_version(self, task_id: int, host_id: int, version: str) -> None:
        """The agent's version as the task's Prepare read it on the host (kept beside its pids)."""
        key = {"task_id": task_id, "host_id": host_id, "phase": VERSION_PHASE}
        with self.db.write() as conn:
            conn.execute(_DELETE_SNAPSHOT, key)
            conn.execute(_INSERT_SNAPSHOT, {**key, "pids": json.dumps(version)})

    def versions(self, task_id: int) -> dict[int, str]:
        """host id -> the agent's version the task's Prepare read there (hosts not read yet: absent)."""
        query = sa.select(host_snapshots.c.host_id, host_snapshots.c.pids).where(
            host_snapshots.c.task_id == task_id, host_snapshots.c.phase == VERSION_PHASE
        )
        with self.db.read() as conn:
            rows = conn.execute(query).all()
        found = {int(row.host_id): json.loads(row.pids) for row in rows}
        return {host: version for host, version in found.items() if isinstance(version, str)}

    def last_pids(self, host_id: int) -> PidSighting | None:
        """The agent's pids as last seen on the host by a restart (see PidSighting); None before the first."""
        with self.db.read() as conn:
            latest = conn.execute(
                sa.select(sa.func.max(host_snapshots.c.task_id)).where(
                    host_snapshots.c.host_id == host_id, host_snapshots.c.phase != VERSION_PHASE
                )
            ).scalar()
            if latest is None:
                return None
            phases = {
                r.phase: r.pids
                for r in conn.execute(
                    sa.select(host_snapshots.c.phase, host_snapshots.c.pids).where(
                        host_snapshots.c.task_id == latest, host_snapshots.c.host_id == host_id
                    )
                )
            }
            phase = "after" if "after" in phases else "before"
            # A stop records no "after": its pids stay "before" with the "starts" its Stop all read (stopped).
            kinds = [Kind.FINISH.value] if phase == "after" else [Kind.PREPARE.value, Kind.PREPARE_STOP.value]
            when = sa.func.coalesce(subtasks.c.finish_time, subtasks.c.start_time)
            seen = conn.execute(
                sa.select(when).where(
                    subtasks.c.task_id == latest, subtasks.c.host_id == host_id, subtasks.c.kind.in_(kinds)
                )
            ).scalar()
        pids = json.loads(phases[phase]) if phase in phases else {}
        return PidSighting(
            task_id=int(latest), phase=phase, pids=pids, seen=seen, stopped=phase == "before" and "starts" in phases
        )
