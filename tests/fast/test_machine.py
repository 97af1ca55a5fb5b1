"""OCP's task state machine (flows/machine.py), driven by Hypothesis through random operation sequences on several
tasks sharing a few hosts; the invariants are checked after every step (issue #11)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from flows import machine
from flows.errors import TaskStateError
from flows.models import Operation, SubtaskStatus, TaskStatus
from flows.plan import TEMPLATES, Kind, build_plan
from flows.records import TaskRecord

S, T = SubtaskStatus, TaskStatus
HOSTS = (1, 2, 3)


class TaskWorld(RuleBasedStateMachine):
    """Tasks as the store would hold them, host locks as the store keeps them, and every run's starts."""

    @initialize()
    def empty(self) -> None:
        self.tasks: dict[int, TaskRecord] = {}
        self.tolerant: dict[int, int | None] = {}  # task id -> failure threshold (None: any failure stops)
        self.locks: dict[int, int] = {}  # host -> task
        self.executions: Counter[int] = Counter()  # subtask id -> runs that were executions (not skip, not rollback)
        self.next_id = 1

    # -- helpers ----------------------------------------------------------------------------------------

    def _commit(self, t: machine.Transition) -> None:
        """What the store does with a transition: check the expectations, then write it."""
        task_id = t.before.task.id
        current = self.tasks[task_id]
        assert current is t.before
        for sid, expected in t.expect.items():
            assert current.subtask(sid).status in expected, (sid, current.subtask(sid).status, expected)
        for sub in t.changed:
            old = current.subtask(sub.id)
            assert sub.run_time - old.run_time in (0, 1), "runTime moves by one at most"
            if sub.run_time != old.run_time:
                assert old.status is S.FAILED and sub.status is S.READY and sub.operation is Operation.RETRY, (
                    "runTime grows only when a failed subtask is queued to run again"
                )
            if (
                sub.status is S.RUNNING
                and old.status is not S.RUNNING
                and sub.operation not in (Operation.SKIP, Operation.ROLLBACK)
            ):
                self.executions[sub.id] += 1
        if t.lock_hosts:
            busy = [h for h in t.after.task.host_ids if self.locks.get(h, task_id) != task_id]
            if busy:
                raise _Busy()
            self.locks.update({h: task_id for h in t.after.task.host_ids})
        if t.release_hosts:
            self.locks = {h: k for h, k in self.locks.items() if k != task_id}
        self.tasks[task_id] = t.after

    def _pick(self, data, predicate):
        found = [(r, s) for r in self.tasks.values() for s in r.subtasks if predicate(r, s)]
        if not found:
            return None
        return data.draw(st.sampled_from(found))

    def _try(self, operation) -> None:
        try:
            self._commit(operation())
        except (TaskStateError, _Busy):
            pass  # refused: nothing may have changed (the commit raises before writing)

    # -- rules ------------------------------------------------------------------------------------------

    @rule(
        hosts=st.lists(st.sampled_from(HOSTS), min_size=1, max_size=2, unique=True),
        threshold=st.one_of(st.none(), st.integers(0, 1)),
        batch=st.booleans(),
        template=st.sampled_from(sorted(TEMPLATES)),
    )
    def create(self, hosts, threshold, batch, template) -> None:
        """A task of any operation: batch restart, restart, stop, batch stop (a single-host one takes one host)."""
        chosen = TEMPLATES[template]
        if chosen.single_host:
            hosts, threshold = hosts[:1], None
        if any(h in self.locks for h in hosts):
            return  # the store refuses it (HostBusyError) and writes nothing
        plan = build_plan(hosts, batch_size=1 if batch else None, isolate=threshold is not None, template=chosen)
        task_id = len(self.tasks) + 1
        ids = list(range(self.next_id, self.next_id + len(plan.nodes)))
        self.next_id += len(plan.nodes)
        self.tasks[task_id] = machine.new_task(plan, task_id, ids, "t0", creator="c", executor="e")
        self.tolerant[task_id] = threshold
        self.locks.update({h: task_id for h in hosts})

    @rule(data=st.data())
    def start(self, data) -> None:
        picked = self._pick(data, lambda r, s: machine.may_start(r, s, tolerant=self.tolerant[r.task.id] is not None))
        if picked:
            record, sub = picked
            self._commit(
                machine.start_subtask(record, sub.id, "t1", "sep", tolerant=self.tolerant[record.task.id] is not None)
            )

    @rule(data=st.data(), succeed=st.booleans())
    def finish(self, data, succeed) -> None:
        picked = self._pick(data, lambda r, s: s.status in machine.ACTIVE)
        if picked:
            record, sub = picked
            good = S.PENDING if sub.operation is Operation.ROLLBACK else S.SUCCESSFUL
            self._commit(machine.finish_subtask(record, sub.id, good if succeed else S.FAILED, "t2"))

    @rule(data=st.data())
    def cancel(self, data) -> None:
        picked = self._pick(data, lambda r, s: s.status is S.RUNNING)
        if picked:
            self._commit(machine.cancel_subtask(picked[0], picked[1].id))

    @rule(data=st.data())
    def end_run(self, data) -> None:
        """A run ends: normally, by an exception, a signal; whatever is running is interrupted."""
        running = [r for r in self.tasks.values() if r.task.status is T.RUNNING]
        if running:
            record = data.draw(st.sampled_from(running))
            self._commit(machine.end_run(record, "t3", threshold=self.tolerant[record.task.id], why="stopped"))

    @rule(data=st.data())
    def reap(self, data) -> None:
        """A lapsed lease, or a flow run that never started."""
        running = [r for r in self.tasks.values() if r.task.status is T.RUNNING]
        if running:
            self._commit(machine.abort(data.draw(st.sampled_from(running)), "t4", "lease lapsed"))

    @rule(data=st.data())
    def retry_task(self, data) -> None:
        if self.tasks:
            record = data.draw(st.sampled_from(list(self.tasks.values())))
            self._try(lambda: machine.retry_task(record, 0.0))

    @rule(data=st.data())
    def rollback(self, data) -> None:
        if self.tasks:
            record = data.draw(st.sampled_from(list(self.tasks.values())))
            self._try(lambda: machine.rollback_task(record, 0.0))

    @rule(data=st.data(), skip=st.booleans())
    def retry_or_skip_subtask(self, data, skip) -> None:
        picked = self._pick(data, lambda r, s: True)
        if picked:
            record, sub = picked
            op = machine.skip_subtask if skip else machine.retry_subtask
            self._try(lambda: op(record, sub.id, 0.0))

    # -- invariants -------------------------------------------------------------------------------------

    @invariant()
    def a_finished_task_has_nothing_running(self) -> None:
        for record in self.tasks.values():
            if record.task.status is not T.RUNNING:
                assert not [s.id for s in record.subtasks if s.status in machine.ACTIVE]

    @invariant()
    def nothing_runs_before_its_upstreams_succeeded(self) -> None:
        for record in self.tasks.values():
            for sub in record.subtasks:
                if sub.status not in machine.ACTIVE or sub.operation is Operation.ROLLBACK:
                    continue
                if sub.operation is Operation.CANCEL and record.task.operation is Operation.ROLLBACK:
                    continue  # a rollback step cancelled while it ran: it undid, its upstreams wait their turn
                ups = {record.subtask(u).status for u in sub.upstreams}
                if sub.kind is Kind.WAIT and self.tolerant[record.task.id] is not None:
                    isolated = record.failed_hosts()  # their later steps never run: PENDING for good
                    done = [
                        record.subtask(u).status in (S.SUCCESSFUL, S.FAILED) or record.subtask(u).host_id in isolated
                        for u in sub.upstreams
                    ]
                    assert all(done), (sub, ups)
                else:
                    assert ups <= {S.SUCCESSFUL}, (sub, ups)

    @invariant()
    def the_task_status_is_ocps_aggregate(self) -> None:
        for record in self.tasks.values():
            statuses = {s.status for s in record.subtasks}
            if machine.aggregate_status(statuses) is T.RUNNING and statuses & machine.ACTIVE:
                assert record.task.status is T.RUNNING
            if record.task.status is T.SUCCESSFUL:
                assert machine.outcome(record, self.tolerant[record.task.id]) is T.SUCCESSFUL
                if self.tolerant[record.task.id] is None or record.task.operation is Operation.ROLLBACK:
                    goal = S.PENDING if record.task.operation is Operation.ROLLBACK else S.SUCCESSFUL
                    assert statuses == {goal}
            if record.task.status is T.FAILED and self.tolerant[record.task.id] is None:
                assert statuses != {S.SUCCESSFUL}

    @invariant()
    def run_time_counts_executions(self) -> None:
        for record in self.tasks.values():
            for sub in record.subtasks:
                assert self.executions[sub.id] <= sub.run_time, (sub.id, self.executions[sub.id], sub.run_time)

    @invariant()
    def a_host_is_held_by_at_most_one_running_task(self) -> None:
        for task_id in self.locks.values():
            assert self.tasks[task_id].task.status is T.RUNNING
        for record in self.tasks.values():
            if record.task.status is T.RUNNING:
                assert all(self.locks.get(h) == record.task.id for h in record.task.host_ids)


class _Busy(Exception):
    """A host of a reopened task is held by another task: the store refuses the whole transition."""


TaskWorld.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
test_task_state_machine = TaskWorld.TestCase


def test_a_canceling_subtask_can_only_fail():
    """A subtask an operator cancelled ends FAILED even if its step returned normally."""
    record = machine.new_task(build_plan([1]), 1, list(range(1, 10)), "t", creator="c", executor="e")
    record = machine.start_subtask(record, 1, "t", "sep").after
    record = machine.cancel_subtask(record, 1).after
    assert machine.finish_subtask(record, 1, S.SUCCESSFUL, "t").after.subtask(1).status is S.FAILED


def test_an_interrupted_run_leaves_nothing_running_and_retry_requeues_it():
    """Regression test for issue #11 probe 3: a run that ends while a subtask runs fails that subtask (it was
    left RUNNING under a FAILED task), so retry requeues it (runTime 2)."""
    record = machine.new_task(build_plan([1, 2]), 1, list(range(1, 15)), "t", creator="c", executor="e")
    record = machine.start_subtask(record, 1, "t", "sep").after
    ended = machine.end_run(record, "t", why="interrupted (SIGINT)")
    assert ended.after.task.status is T.FAILED and ended.after.subtask(1).status is S.FAILED
    assert ended.logs == ((1, "interrupted (SIGINT)"),) and ended.release_hosts
    retried = machine.retry_task(ended.after, 0.0).after
    assert retried.subtask(1).status is S.READY and retried.subtask(1).run_time == 2
    assert retried.task.status is T.RUNNING


@pytest.mark.parametrize("op", ["retry_task", "rollback_task"])
def test_operations_on_a_running_task_are_refused_with_4007(op):
    """retry and rollback need a FAILED task: OCP's TASK_STATE_INVALID (4007) names the state."""
    record = machine.new_task(build_plan([1]), 7, list(range(1, 10)), "t", creator="c", executor="e")
    with pytest.raises(TaskStateError, match="task 7 is in RUNNING state") as err:
        getattr(machine, op)(record, 0.0)
    assert err.value.code == 4007


def test_a_tolerant_wait_starts_when_an_isolated_hosts_later_steps_never_ran():
    """With a failure threshold, a host that failed Prepare never runs its later steps (they stay PENDING); the
    next stage's Wait node must still start once every other host is done. Regression (#20's field matrix): it
    raised TaskStateError ("cannot start ... an upstream is not done") and no Finish ran."""
    plan = build_plan([1, 2, 3], isolate=True)
    record = machine.new_task(plan, 1, list(range(1, 20)), "t", creator="c", executor="e")

    def run(record, sub, outcome, tolerant=False):
        record = machine.start_subtask(record, sub.id, "t", "sep", tolerant=tolerant).after
        return machine.finish_subtask(record, sub.id, outcome, "t").after

    prepares = [s for s in record.subtasks if s.kind is Kind.PREPARE]
    for sub, outcome in zip(prepares, (S.FAILED, S.SUCCESSFUL, S.SUCCESSFUL)):
        record = run(record, sub, outcome)
    waits = [s for s in record.subtasks if s.kind is Kind.WAIT]
    record = run(record, waits[0], S.SUCCESSFUL, tolerant=True)  # upstreams all done: 1 FAILED, 2 SUCCESSFUL
    for sub in record.subtasks:
        if sub.kind is Kind.RESTART_POS_PROXY and sub.host_id != 1:
            record = run(record, sub, S.SUCCESSFUL)
    assert record.subtask(next(s.id for s in record.subtasks if s.kind is Kind.RESTART_POS_PROXY)).status is S.PENDING
    assert machine.may_start(record, record.subtask(waits[1].id), tolerant=True)
    assert machine.start_subtask(record, waits[1].id, "t", "sep", tolerant=True).after.subtask(waits[1].id).status is (
        S.RUNNING
    )


def test_a_task_that_succeeded_with_isolated_hosts_retries_only_those_hosts_in_their_order():
    """#22 (flaky fleets): a run SUCCESSFUL under a failure threshold with host 1 isolated (its Stop all FAILED) can be
    retried: only host 1's FAILED Stop all is READY again, its later steps run after it (runnable), nothing else; a
    SUCCESSFUL task without a failed host is still refused (4007)."""
    plan = build_plan([1, 2], isolate=True)
    record = machine.new_task(plan, 1, list(range(1, 15)), "t", creator="c", executor="e")
    clean = record
    for sub in record.subtasks:
        if sub.kind is Kind.WAIT:
            outcome = S.SUCCESSFUL
        elif sub.host_id == 1 and sub.kind in (Kind.START_ALL, Kind.FINISH):
            continue  # never ran: host 1 is isolated
        else:
            outcome = S.FAILED if (sub.host_id == 1 and sub.kind is Kind.STOP_ALL) else S.SUCCESSFUL
        record = machine.start_subtask(record, sub.id, "t", "sep", tolerant=True).after
        record = machine.finish_subtask(record, sub.id, outcome, "t").after
    ended = machine.end_run(record, "t", threshold=1).after
    assert ended.task.status is T.SUCCESSFUL
    retried = machine.retry_task(ended, 0.0).after
    assert retried.task.status is T.RUNNING
    stop_1 = next(s for s in retried.subtasks if s.host_id == 1 and s.kind is Kind.STOP_ALL)
    assert [s.id for s in retried.subtasks if s.status is S.READY] == [stop_1.id]
    work = {sub.id: deps for sub, deps, _ in machine.runnable(retried, tolerant_waits=True)}
    later = [s for s in retried.subtasks if s.host_id == 1 and s.kind in (Kind.START_ALL, Kind.FINISH)]
    assert set(work) == {stop_1.id, *(s.id for s in later)}
    assert work[later[0].id] == [stop_1.id] and work[later[1].id] == [later[0].id]
    done = clean
    for sub in clean.subtasks:
        done = machine.start_subtask(done, sub.id, "t", "sep").after
        done = machine.finish_subtask(done, sub.id, S.SUCCESSFUL, "t").after
    with pytest.raises(TaskStateError, match="SUCCESSFUL state"):
        machine.retry_task(machine.end_run(done, "t").after, 0.0)
