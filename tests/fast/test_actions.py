"""One table of task operations, used by the CLI, the API, the Prefect operations flow and a paused run (#19)."""

from __future__ import annotations

from typing import get_args

import pytest

from flows import machine
from flows.actions import ACTIONS, DECISIONS, ActionName, Decision
from flows.errors import RequestError
from flows.models import Operation, SubtaskStatus, TaskStatus
from flows.plan import build_plan
from flows.store import TaskStore


@pytest.fixture
def store(tmp_path):
    with TaskStore(f"sqlite:///{tmp_path / 'tasks.db'}") as store:
        yield store


def _failed_task(store: TaskStore) -> int:
    """A task on two hosts whose two Prepare subtasks FAILED."""
    task_id = store.create_task(build_plan([1, 2]), creator="admin", executor="10.0.0.1")
    for sub in store.load(task_id).subtasks[:2]:
        store.apply(machine.start_subtask(store.load(task_id), sub.id, "2026-12-05T00:00:00Z", "--"))
        store.apply(machine.finish_subtask(store.load(task_id), sub.id, SubtaskStatus.FAILED, "2026-12-05T00:00:01Z"))
    store.apply(machine.end_run(store.load(task_id), "2026-12-05T00:00:02Z"))
    assert store.load(task_id).task.status is TaskStatus.FAILED
    return task_id


class TestTable:
    def test_every_action_named_in_the_type_is_in_the_table(self):
        """ActionName (the Prefect form's choices) and ACTIONS name the same actions."""
        assert set(ACTIONS) == set(get_args(ActionName))

    def test_every_answer_of_a_paused_run_maps_to_an_action_or_stop(self):
        """retry, skip (every failed subtask) and rollback are actions; stop does nothing."""
        assert set(DECISIONS) == set(get_args(Decision))
        assert DECISIONS["skip"] is ACTIONS["skip_failed"] and DECISIONS["stop"] is None

    def test_the_cli_offers_each_action(self):
        """`ocp-restart retry|rollback` and `subtask retry|skip|cancel` are the table's actions."""
        from deployments.cli import build_parser
        from flows.settings import Settings

        parser = build_parser(Settings())
        commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse has no public way
        subtask_actions = next(a for a in commands["subtask"]._actions if a.dest == "action").choices
        offered = {"retry", "rollback"} | {f"{name}_subtask" for name in subtask_actions}
        assert offered <= set(ACTIONS)
        assert {"retry", "rollback"} <= set(commands)

    def test_only_cancel_leaves_the_run_to_its_owner(self):
        """Every action but cancel_subtask runs the task's flow again."""
        assert {name for name, action in ACTIONS.items() if not action.reruns} == {"cancel_subtask"}


class TestApply:
    def test_a_subtask_action_without_a_subtask_is_refused_before_anything_is_written(self, store):
        """retry_subtask with no subtask id is a RequestError naming the action; the task is unchanged."""
        task_id = _failed_task(store)
        before = store.load(task_id)
        with pytest.raises(RequestError, match="action 'retry_subtask' needs a subtask id, got none"):
            ACTIONS["retry_subtask"].apply(store, task_id)
        assert store.load(task_id) == before

    def test_retry_reopens_the_failed_subtasks(self, store):
        """retry puts the task back to RUNNING with its failed subtasks READY."""
        task_id = _failed_task(store)
        record = ACTIONS["retry"].apply(store, task_id)
        assert record.task.status is TaskStatus.RUNNING
        assert [s.status for s in record.subtasks[:2]] == [SubtaskStatus.READY] * 2

    def test_skip_failed_skips_every_failed_subtask(self, store):
        """skip_failed (a paused run's "skip") reopens every FAILED subtask as a SKIP; the task goes on.

        Regression (#19): the pause decision skipped the subtasks one by one, and the second skip found the task
        RUNNING again and raised TaskStateError.
        """
        task_id = _failed_task(store)
        record = ACTIONS["skip_failed"].apply(store, task_id)
        assert [(s.status, s.operation) for s in record.subtasks[:2]] == [(SubtaskStatus.READY, Operation.SKIP)] * 2
        assert record.task.status is TaskStatus.RUNNING
