"""How ``store-0.1.0.sql`` was made: a task store written by ocp-restart 0.1.0 (commit 3ee786c, before the store
had migrations), dumped as SQL text. Kept to show what the fixture holds; re-running it with later code would
write a later schema, so the dump itself is the fixture.

    python tests/data/make_store_0_1_0.py tests/data/store-0.1.0.sql

What it holds: a SUCCESSFUL task (hosts 1, 2) with before/after pid snapshots and AVAILABLE agents; a FAILED task
(host 3) with a failed subtask's log, a "starts" snapshot and an OFFLINE agent; a RUNNING task (hosts 4, 5) claimed
by a runner with a long lease, holding its host locks, one subtask RUNNING and one CANCELING; and a last task pruned,
so that the next task id SQLite's AUTOINCREMENT hands out is past the highest id left in the table.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from pathlib import Path

from flows import machine
from flows.models import SubtaskStatus, TaskStatus
from flows.plan import build_plan
from flows.store import TaskStore
from flows.store.schema import tasks

RUNNER = "pid 4242 on fixture-host [0a1b2c3d]"
TEN_YEARS = 10 * 365 * 86400.0


def at(second: int) -> str:
    return f"2026-11-30T10:00:{second:02d}.000+08:00"


def run_ready(store: TaskStore, task_id: int, outcome=SubtaskStatus.SUCCESSFUL, limit: int = 1000) -> None:
    """Start and finish READY subtasks in plan order, ``limit`` of them, each with a log line."""
    for _ in range(limit):
        record = store.load(task_id)
        ready = [s for s in record.subtasks if machine.may_start(record, s)]
        if not ready:
            return
        sub = ready[0]
        store.apply(machine.start_subtask(record, sub.id, at(sub.seq), f"############{{EXECUTE}}{{{sub.seq}}}####"))
        store.append_logs([(sub.id, f"{sub.name}: done")])
        store.apply(machine.finish_subtask(store.load(task_id), sub.id, outcome, at(sub.seq + 1), (f"{sub.name} ok",)))


def make(path: Path) -> None:
    with TaskStore(f"sqlite:///{path}") as store:
        ok = store.create_task(
            build_plan([1, 2]),
            creator="admin",
            executor="10.0.0.1",
            options={"max_workers": 8},
            inventory="/etc/ocp-restart/inventory.toml",
        )
        store.renew_lease(ok, TEN_YEARS, RUNNER, claim=True)
        run_ready(store, ok)
        for host in (1, 2):
            store.save_snapshot(ok, host, {"ocp_agentd": 100 + host, "ocp_mgragent": 200 + host}, "before")
            store.save_snapshot(ok, host, {"ocp_agentd": 300 + host, "ocp_mgragent": 400 + host}, "after")
            store.set_host_agent_status(host, "AVAILABLE")
        store.apply(machine.end_run(store.load(ok), at(50)), runner=RUNNER)

        failed = store.create_task(build_plan([3]), creator="ops", executor="10.0.0.2")
        store.renew_lease(failed, TEN_YEARS, RUNNER, claim=True)
        run_ready(store, failed, limit=1)
        record = store.load(failed)
        [nxt] = [s for s in record.subtasks if machine.may_start(record, s)]
        store.apply(machine.start_subtask(record, nxt.id, at(20), "####{EXECUTE}####"), runner=RUNNER)
        store.save_snapshot(failed, 3, {"ocp_agentd": 31}, "before")
        store.save_snapshot(failed, 3, {"ocp_agentd": 1764460800}, "starts")
        store.set_host_agent_status(3, "OFFLINE")
        store.append_logs([(nxt.id, "ssh: connect to host 3: Connection refused")], task_id=failed, runner=RUNNER)
        store.apply(
            machine.finish_subtask(store.load(failed), nxt.id, SubtaskStatus.FAILED, at(21), ("exit 255",)),
            runner=RUNNER,
        )
        store.apply(machine.end_run(store.load(failed), at(22)), runner=RUNNER)

        running = store.create_task(build_plan([4, 5]), creator="admin", executor="10.0.0.1")
        store.renew_lease(running, TEN_YEARS, RUNNER, claim=True)
        run_ready(store, running, limit=3)
        record = store.load(running)
        first, second = [s for s in record.subtasks if machine.may_start(record, s)][:2]
        store.apply(machine.start_subtask(record, first.id, at(30), "####{EXECUTE}####"), runner=RUNNER)
        store.apply(machine.start_subtask(store.load(running), second.id, at(31), "####{EXECUTE}####"), runner=RUNNER)
        store.cancel_subtask(running, second.id)
        store.save_snapshot(running, 4, {"ocp_agentd": 41}, "before")

        pruned = store.create_task(build_plan([6]), creator="admin", executor="10.0.0.1")
        store.apply(machine.end_run(store.load(pruned), at(40)))
        with store.engine.begin() as conn:
            conn.execute(tasks.update().where(tasks.c.id == pruned).values(finish_time="2020-01-01T00:00:00.000+08:00"))
        assert store.prune(older_than_days=365) == [pruned]
        assert [store.load(t).task.status for t in (ok, failed, running)] == [
            TaskStatus.SUCCESSFUL,
            TaskStatus.FAILED,
            TaskStatus.RUNNING,
        ]


def main(out: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "tasks.db"
        make(db)
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        Path(out).write_text("\n".join(conn.iterdump()) + "\n")
        conn.close()


if __name__ == "__main__":
    main(sys.argv[1])
