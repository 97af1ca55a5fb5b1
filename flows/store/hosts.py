"""What the store keeps per host: locks held by tasks, the agent's status, and its pids around a restart."""

from __future__ import annotations

import json

import sqlalchemy as sa

from ..models import format_time, now
from .database import Database
from .schema import host_agent_status, host_locks, host_snapshots


class Hosts(Database):
    def locks(self) -> dict[int, int]:
        """host id -> the id of the task holding it."""
        with self._read() as conn:
            return {r.host_id: r.task_id for r in conn.execute(sa.select(host_locks))}

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

    def save_snapshot(self, task_id: int, host_id: int, pids: dict[str, int], phase: str = "before") -> None:
        """The agent's pids before (Prepare) and after (Finish) the restart; "starts": start times at Stop."""
        key = (host_snapshots.c.task_id == task_id, host_snapshots.c.host_id == host_id, host_snapshots.c.phase == phase)
        with self._write() as conn:
            conn.execute(host_snapshots.delete().where(*key))
            conn.execute(host_snapshots.insert().values(task_id=task_id, host_id=host_id, phase=phase, pids=json.dumps(pids)))

    def snapshot(self, task_id: int, host_id: int, phase: str = "before") -> dict[str, int] | None:
        key = (host_snapshots.c.task_id == task_id, host_snapshots.c.host_id == host_id, host_snapshots.c.phase == phase)
        with self._read() as conn:
            raw = conn.execute(sa.select(host_snapshots.c.pids).where(*key)).scalar()
        return json.loads(raw) if raw else None
