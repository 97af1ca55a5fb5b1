"""The task store (a real SQLite file): ids, locks, transitions, logs, and the view built from it."""

from __future__ import annotations

import pytest

from flows import machine
from flows.errors import HostBusyError, UnknownTaskError
from flows.machine import aggregate_status
from flows.models import SubtaskStatus, TaskStatus
from flows.plan import build_plan
from flows.store import TaskStore
from flows.view import task_instance


@pytest.fixture
def store(tmp_path):
    with TaskStore(f"sqlite:///{tmp_path / 'tasks.db'}") as s:
        yield s


def create(store, hosts):
    return store.create_task(build_plan(hosts), creator="admin", executor="10.0.0.1")


def test_created_task_has_documented_initial_states(store):
    """Roots READY, the rest PENDING, task RUNNING; edges use the store's ids."""
    task_id = create(store, [1, 2])
    view = task_instance(store.load(task_id))
    assert view.status is TaskStatus.RUNNING and len(view.subtasks) == 14
    ids = {s.id for s in view.subtasks}
    assert all(set(s.upstreams) <= ids and set(s.downstreams) <= ids for s in view.subtasks)
    assert [s.status for s in view.subtasks if not s.upstreams] == [SubtaskStatus.READY] * 2
    assert {s.status for s in view.subtasks if s.upstreams} == {SubtaskStatus.PENDING}
    assert view.context.list_map == {"host_ids": ["1", "2"]}


def _task_of(store: TaskStore, subtask_id: int) -> int:
    return next(t for t in store.task_ids(limit=1000)[0] if store.load(t).has(subtask_id))


def start(store: TaskStore, subtask_id: int, separator: str) -> None:
    record = store.load(_task_of(store, subtask_id))
    store.apply(machine.start_subtask(record, subtask_id, "t", separator))


def finish(store: TaskStore, subtask_id: int, outcome: SubtaskStatus, log=()) -> None:
    record = store.load(_task_of(store, subtask_id))
    store.apply(machine.finish_subtask(record, subtask_id, outcome, "t", tuple(log)))


def test_ids_are_unique_across_tasks(store):
    """Two tasks never share a task or subtask id."""
    a, b = create(store, [1]), create(store, [2])
    sa_ids = {s.id for s in store.load(a).subtasks}
    sb_ids = {s.id for s in store.load(b).subtasks}
    assert a != b and not sa_ids & sb_ids


def test_a_locked_host_refuses_a_second_task_and_writes_nothing(store):
    """HostBusyError names the holding task; the refused task leaves no rows or locks."""
    first = create(store, [1, 2])
    with pytest.raises(HostBusyError, match=f"TaskId: {first}") as err:
        create(store, [3, 2])
    assert err.value.code == 20021
    assert store.locks() == {1: first, 2: first}
    assert store.task_ids() == ([first], 1)


def test_finishing_a_task_releases_its_locks(store):
    """After the end of its run the hosts can be restarted again."""
    first = create(store, [1])
    store.apply(machine.end_run(store.load(first), "t"))
    assert store.locks() == {}
    create(store, [1])


def test_success_promotes_downstream_to_ready(store):
    """A subtask becomes READY once all its upstreams are SUCCESSFUL."""
    record = store.load(create(store, [1, 2]))
    prep_a, prep_b, wait = record.subtasks[0], record.subtasks[1], record.subtasks[2]
    start(store, prep_a.id, "sep")
    finish(store, prep_a.id, SubtaskStatus.SUCCESSFUL)
    assert store.load(record.task.id).subtask(wait.id).status == "PENDING"
    start(store, prep_b.id, "sep")
    finish(store, prep_b.id, SubtaskStatus.SUCCESSFUL)
    assert store.load(record.task.id).subtask(wait.id).status == "READY"


def test_a_progress_read_shows_what_a_full_load_shows(store):
    """The progress view's lean read gives the task's status and each subtask's columns as the record has them."""
    record = store.load(create(store, [1, 2]))
    start(store, record.subtasks[0].id, "sep")
    finish(store, record.subtasks[0].id, SubtaskStatus.FAILED)
    record = store.load(record.task.id)
    status, rows = store.progress(record.task.id)
    assert status == record.task.status.value
    assert rows == [(s.id, s.name, s.status.value, s.host_id, s.start_time, s.finish_time) for s in record.subtasks]
    assert rows[0][2] == "FAILED" and rows[0][4] and rows[0][5]
    with pytest.raises(UnknownTaskError):
        store.progress(999)


def test_a_task_read_alone_is_the_records_task(store):
    """store.task(id) reads the task's row alone and gives what a full load's ``.task`` gives."""
    task_id = create(store, [1, 2])
    assert store.task(task_id) == store.load(task_id).task
    with pytest.raises(UnknownTaskError, match="The task 999 does not exist"):
        store.task(999)


def test_log_lines_keep_their_order(store):
    """The separator comes first, then lines in the order written."""
    sid = store.load(create(store, [1])).subtasks[0].id
    start(store, sid, "############{EXECUTE}{t}############")
    for i in range(5):
        store.append_logs([(sid, f"line {i}")])
    assert store.log(sid).split("\n") == ["############{EXECUTE}{t}############"] + [f"line {i}" for i in range(5)]


def test_batched_log_lines_keep_each_subtasks_order(store):
    """The run's log writer (issue #6: one transaction per 0.25 s, not per line) keeps every subtask's lines in
    order, however its batches and a subtask's final lines interleave, across threads."""
    import threading
    import time

    from flows.logs import LogWriter

    sids = [row.id for row in store.load(create(store, list(range(1, 9)))).subtasks[:8]]

    def step(writer: LogWriter, sid: int) -> None:
        start(store, sid, "sep")
        for i in range(300):
            writer.add(sid, f"{sid} line {i}")
            if i % 20 == 0:
                time.sleep(0.001)  # let batches cut through the sequence
        finish(store, sid, SubtaskStatus.SUCCESSFUL, writer.take(sid))

    with LogWriter(store, interval=0.002) as writer:
        threads = [threading.Thread(target=step, args=(writer, sid)) for sid in sids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for sid in sids:
        assert store.log(sid).split("\n") == ["sep"] + [f"{sid} line {i}" for i in range(300)]


def test_a_second_store_object_sees_the_same_file(store, tmp_path):
    """Another connection (another process in real life) reads what was written."""
    task_id = create(store, [1])
    with TaskStore(store.url) as other:
        assert other.load(task_id).task.status == "RUNNING"


def test_unknown_task(store):
    """Loading a missing task raises UnknownTaskError (OCP 4001)."""
    with pytest.raises(UnknownTaskError, match="The task 999 does not exist"):
        store.load(999)


@pytest.mark.parametrize(
    "statuses, expected",
    [
        (["SUCCESSFUL", "RUNNING", "FAILED"], TaskStatus.RUNNING),
        (["SUCCESSFUL", "FAILED", "PENDING"], TaskStatus.FAILED),
        (["SUCCESSFUL", "SUCCESSFUL"], TaskStatus.SUCCESSFUL),
        (["SUCCESSFUL", "READY"], TaskStatus.RUNNING),
    ],
)
def test_aggregate_status(statuses, expected):
    """OCP's aggregate: RUNNING beats FAILED beats SUCCESSFUL."""
    assert aggregate_status(statuses) is expected


def test_prune_deletes_old_finished_tasks_and_keeps_running_ones(store):
    """prune removes finished tasks (and their subtasks, logs, snapshots) older than the cut-off; a RUNNING task
    and a recent one stay (issue #14)."""
    import sqlalchemy as sa

    from flows.models import format_time, now
    from flows.store.schema import subtask_logs, subtasks, tasks

    old, recent, running = create(store, [1]), create(store, [2]), create(store, [3])
    for task_id in (old, recent):
        store.append_logs([(store.load(task_id).subtasks[0].id, "a line")])
        store.save_snapshot(task_id, 1, {"ocp_agentd": 1})
        store.apply(machine.end_run(store.load(task_id), "2026-11-30T10:00:00.000+00:00"))
    with store.engine.begin() as conn:
        conn.execute(tasks.update().where(tasks.c.id == old).values(finish_time="2020-01-01T00:00:00.000+08:00"))
    with store.engine.begin() as conn:
        conn.execute(tasks.update().where(tasks.c.id == recent).values(finish_time=format_time(now())))
    assert store.prune(older_than_days=30) == [old]
    assert store.task_ids()[0] == [running, recent]
    with store.engine.connect() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(subtasks).where(subtasks.c.task_id == old)).scalar()
            == 0
        )
        assert conn.execute(sa.select(sa.func.count()).select_from(subtask_logs)).scalar() == 1
    assert store.snapshot(old, 1) is None and store.snapshot(recent, 1) == {"ocp_agentd": 1}


def test_artifact_rows_are_narrow_and_name_each_pid(store):
    """The run's table artifact: "ok" for SUCCESSFUL, other statuses in OCP's words, pids named by process (#13)."""
    from flows.report import host_rows

    task_id = create(store, [7])
    at = "2026-12-01T10:00:00.000+00:00", "2026-12-01T10:00:01.500+00:00"
    for sub, outcome in zip(store.load(task_id).subtasks, [SubtaskStatus.SUCCESSFUL] * 2 + [SubtaskStatus.FAILED]):
        store.apply(machine.start_subtask(store.load(task_id), sub.id, at[0], "t"))
        store.apply(machine.finish_subtask(store.load(task_id), sub.id, outcome, at[1], ()))
    store.save_snapshot(task_id, 7, {"ocp_agentd": 11, "ocp_mgragent": 12, "ocp_monagent": 13}, "before")
    [row] = host_rows(store, store.load(task_id), {7: "db-7"})
    assert row["host"] == "7 db-7"
    assert (row["prepare"], row["pos proxy"], row["stop"]) == ("ok 1.5s", "FAILED 1.5s", "PENDING")
    assert (row["agentd pid"], row["mgragent pid"], row["monagent pid"]) == ("11 → -", "12 → -", "13 → -")


def _lapse(store: TaskStore, task_id: int) -> None:
    """The task's lease lapsed a minute ago, as if its runner died."""
    import time

    from flows.store.schema import tasks

    with store.engine.begin() as conn:
        conn.execute(tasks.update().where(tasks.c.id == task_id).values(lease_until=time.time() - 60))


def _read_everything(store: TaskStore, task_ids: list[int]) -> None:
    subtask = store.load(task_ids[0]).subtasks[0].id
    store.load_many(task_ids)
    for filters in (
        {},
        {"statuses": ["RUNNING"]},
        {"types": ["MANUAL"]},
        {"creator": "admin"},
        {"name": "restart"},
        {"host_id": 1},
        {"order": [("name", True)]},
    ):
        store.task_ids(**filters)
    store.log(subtask)
    store.canceling(task_ids[0])
    store.locks()
    store.host_agent_statuses()
    store.host_agent_status(1)
    store.snapshot(task_ids[0], 1)
    store.last_pids(1)


def test_reads_write_nothing_not_even_a_lapsed_lease(store, monkeypatch):
    """load, load_many, task_ids (every filter), log, locks and the host reads issue no INSERT, UPDATE, DELETE or
    DDL and open no write transaction: a task whose lease lapsed stays RUNNING until something reaps it."""
    import sqlalchemy as sa

    lapsed, other = create(store, [1]), create(store, [2])
    store.save_snapshot(lapsed, 1, {"ocp_agentd": 1})
    store.set_host_agent_status(1, "AVAILABLE")
    _lapse(store, lapsed)
    statements: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda conn, cursor, sql, *rest: statements.append(sql))

    def no_write():
        raise AssertionError("a read opened a write transaction")

    monkeypatch.setattr(store.db, "write", no_write)
    _read_everything(store, [lapsed, other])
    monkeypatch.undo()
    assert statements, "the listener saw the reads"
    writes = [sql for sql in statements if sql.split()[0].upper() not in ("SELECT", "WITH")]
    assert writes == []
    assert store.load(lapsed).task.status == "RUNNING"
    assert store.reap_expired() == [lapsed] and store.load(lapsed).task.status == "FAILED"


def test_a_read_only_store_serves_every_read(store, tmp_path):
    """The same reads on a store opened read-only (SQLite ``mode=ro``), as an API may be given one."""
    task_id = create(store, [1])
    with TaskStore(f"sqlite:///file:{tmp_path / 'tasks.db'}?mode=ro&uri=true") as read_only:
        _read_everything(read_only, [task_id])
        assert read_only.load(task_id).task.id == task_id


def test_a_runners_claim_reaps_lapsed_leases_but_never_its_own_task(store):
    """Claiming a task (a runner's start) reaps every other lapsed task in the same transaction; the claimed task,
    lapsed too, is claimed as before."""
    lapsed, claimed = create(store, [1]), create(store, [2])
    _lapse(store, lapsed)
    _lapse(store, claimed)
    assert store.renew_lease(claimed, 30, "runner-a", claim=True)
    assert store.load(lapsed).task.status == "FAILED" and store.locks() == {2: claimed}
    assert "stopped renewing its lease" in store.log(store.load(lapsed).subtasks[0].id)
    assert (store.load(claimed).task.status, store.load(claimed).task.runner) == ("RUNNING", "runner-a")


def test_a_renewal_reaps_nothing(store):
    """The heartbeat's renewals (no claim) write the lease alone: reaping is for claims and other writes."""
    lapsed, running = create(store, [1]), create(store, [2])
    assert store.renew_lease(running, 30, "runner-a", claim=True)
    _lapse(store, lapsed)
    assert store.renew_lease(running, 30, "runner-a")
    assert store.load(lapsed).task.status == "RUNNING"


def test_the_agent_status_is_a_typed_value(store):
    """host_agent_status: None before the first restart, then AgentStatus(status, updated)."""
    from flows.store.hosts import AgentStatus

    assert store.host_agent_status(1) is None
    store.set_host_agent_status(1, "OFFLINE")
    status = store.host_agent_status(1)
    assert isinstance(status, AgentStatus) and status.status == "OFFLINE" and status.updated.startswith("20")
