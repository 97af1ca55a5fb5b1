"""Process operations in the task store: the record, and the host lock they share with tasks."""

from __future__ import annotations

import time

import pytest

from flows.errors import HostBusyError
from flows.plan import build_plan
from flows.store import TaskStore
from flows.store.processes import FAILED, RUNNING, SUCCESSFUL


@pytest.fixture
def store(tmp_path):
    with TaskStore(f"sqlite:///{tmp_path / 'tasks.db'}") as s:
        yield s


def begin(store: TaskStore, host: int = 1, seconds: float = 60) -> int:
    return store.processes.begin(host, "ocp_monagent", "restart", "alice", seconds=seconds, pid_before=42)


def test_an_operation_is_recorded_and_holds_its_host_until_it_finishes(store):
    """RUNNING while it holds the host; SUCCESSFUL with its output and pids after; the host free again."""
    op = begin(store)
    assert store.locks() == {1: -op} and store.processes.get(op).status == RUNNING
    assert store.processes.finish(
        op, SUCCESSFUL, "$ ocp_agentctl service stop ocp_monagent\nok", pid_before=42, pid_after=43
    )
    done = store.processes.get(op)
    assert (done.status, done.creator, done.pid_before, done.pid_after) == (SUCCESSFUL, "alice", 42, 43)
    assert "service stop" in done.output and done.finish_time and store.locks() == {}
    assert [o.id for o in store.processes.list(host_id=1)] == [op] and store.processes.list(host_id=2) == []


def test_a_task_and_a_process_operation_exclude_each_other(store):
    """A task refuses an operation on its host (20021 naming the task), and an operation refuses a task (naming
    the operation); the refused one writes nothing."""
    task = store.create_task(build_plan([1]), creator="admin", executor="x")
    with pytest.raises(HostBusyError, match=f"TaskId: {task}") as refused:
        begin(store)
    assert refused.value.code == 20021 and store.processes.list() == []
    op = begin(store, host=2)
    with pytest.raises(HostBusyError, match=f"process operation {op}"):
        store.create_task(build_plan([2]), creator="admin", executor="x")
    with pytest.raises(HostBusyError, match=f"process operation {op}"):
        begin(store, host=2)
    assert store.locks() == {1: task, 2: -op}


def test_an_abandoned_operation_is_reaped_failed_and_frees_its_host(store):
    """An operation whose process died holds its host only until its lease passes; then FAILED, saying why."""
    op = begin(store, seconds=0.01)
    time.sleep(0.05)
    store.reap_expired()
    reaped = store.processes.get(op)
    assert reaped.status == FAILED and "abandoned" in reaped.output and store.locks() == {}
    assert not store.processes.finish(op, SUCCESSFUL, "late", pid_after=1)
    assert store.processes.get(op).status == FAILED
