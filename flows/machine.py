"""OCP's task state machine, as pure functions over immutable records.

Each operation takes a ``TaskRecord`` (and the time, passed in) and returns a ``Transition``: the record after it,
and for the store, exactly what changed and what each changed row must still be (so a stale writer is refused).
Nothing here does I/O. The rules are OCP's task framework's (its TaskInstanceManager, SubtaskInstanceManager and
RunningTaskWorker, as ocp-express has them):

- a subtask runs when it is READY (all upstreams SUCCESSFUL); with a failure threshold, a Wait node also runs
  when its upstreams are done, whatever their outcome;
- a subtask that succeeds makes READY each PENDING downstream whose upstreams are all SUCCESSFUL;
- retry (task FAILED, not rolled back): FAILED subtasks -> READY, operation RETRY, runTime + 1;
- retry / skip one subtask: it must be FAILED; skip makes it succeed without running;
- cancel one subtask: it must be RUNNING; it goes CANCELING, and the runner ends it FAILED;
- rollback (task FAILED, rollback allowed): every subtask that ran -> READY with operation ROLLBACK;
  the task is SUCCESSFUL once all are PENDING again;
- the end of a run, a lapsed lease or an abort leave no subtask RUNNING or CANCELING.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from .errors import TaskStateError, UnknownSubtaskError
from .models import Operation, SubtaskStatus, TaskStatus, TaskType
from .plan import Kind, Plan
from .records import Subtask, Task, TaskRecord

S, T = SubtaskStatus, TaskStatus
ACTIVE = frozenset({S.RUNNING, S.CANCELING})
LAUNCH_GRACE_SECONDS = 300.0  # a task (re)opened waits this long for a runner to claim it


@dataclass(frozen=True)
class Transition:
    """What one operation did. ``expect`` holds, for each changed subtask, the statuses it must still have in the
    store; ``task_changed`` says the task row changes (its status and runner are then expected unchanged too)."""

    before: TaskRecord
    after: TaskRecord
    expect: Mapping[int, frozenset[SubtaskStatus]] = field(default_factory=dict)
    task_changed: bool = False
    lock_hosts: bool = False
    release_hosts: bool = False
    logs: tuple[tuple[int, str], ...] = ()

    @property
    def changed(self) -> tuple[Subtask, ...]:
        return tuple(self.after.subtask(sid) for sid in self.expect)


Expectations = dict[int, frozenset[SubtaskStatus]]


def _apply(
    record: TaskRecord,
    changes: dict[int, Subtask],
    expect: Expectations,
    task: Task | None = None,
    *,
    lock_hosts: bool = False,
    release_hosts: bool = False,
    logs: tuple[tuple[int, str], ...] = (),
) -> Transition:
    after = record.replace(changes, task)
    return Transition(
        before=record,
        after=after,
        expect=expect,
        task_changed=task is not None,
        lock_hosts=lock_hosts,
        release_hosts=release_hosts,
        logs=logs,
    )


def _subtask(record: TaskRecord, subtask_id: int) -> Subtask:
    if not record.has(subtask_id):
        raise UnknownSubtaskError(record.task.id, subtask_id)
    return record.subtask(subtask_id)


def _state(task: Task) -> str:
    return task.status.value + (" (rolled back)" if task.operation is Operation.ROLLBACK else "")


def new_task(
    plan: Plan,
    task_id: int,
    subtask_ids: list[int],
    at: str,
    *,
    creator: str,
    executor: str,
    type: TaskType = TaskType.MANUAL,
    name: str | None = None,
) -> TaskRecord:
    """The record a new task for ``plan`` starts as: RUNNING, its roots READY and the rest PENDING.
    ``subtask_ids`` gives each plan node (by key) its id."""
    subs = tuple(
        Subtask(
            id=subtask_ids[node.key],
            task_id=task_id,
            seq=node.key,
            kind=node.kind,
            host_id=node.host_id,
            name=node.name,
            class_name=node.class_name,
            operation=Operation.EXECUTE,
            parallel_idx=node.parallel_idx,
            prohibit_rollback=False,
            run_time=1,
            series_id=node.series_id,
            timeout=node.timeout,
            status=S.PENDING if node.upstreams else S.READY,
            create_time=at,
            upstreams=tuple(subtask_ids[k] for k in node.upstreams),
            downstreams=tuple(subtask_ids[k] for k in node.downstreams),
        )
        for node in plan.nodes
    )
    task = Task(
        id=task_id,
        name=name or plan.template.task_name,
        type=type,
        status=T.RUNNING,
        operation=Operation.EXECUTE,
        creator=creator,
        executor=executor,
        host_ids=tuple(plan.host_ids),
        prohibit_rollback=False,
        create_time=at,
        start_time=at,
        template=plan.template.key,
    )
    return TaskRecord(task=task, subtasks=subs)


# -- a run -------------------------------------------------------------------------------------------------


def may_start(record: TaskRecord, sub: Subtask, *, tolerant: bool = False) -> bool:
    """Whether ``sub`` may run now: READY with its dependencies done (upstreams SUCCESSFUL; for a rollback,
    downstreams PENDING), or a Wait node run ``tolerant`` of failures once its upstreams are done."""
    if record.task.status is not T.RUNNING:
        return False
    if sub.operation is Operation.ROLLBACK:
        return sub.status is S.READY and all(record.subtask(d).status is S.PENDING for d in sub.downstreams)
    if tolerant and sub.kind is Kind.WAIT and sub.status in (S.READY, S.PENDING):
        # Done: run, or never to run because its host is isolated (it failed an earlier step; #20's matrix).
        isolated = record.failed_hosts()
        return all(
            (up := record.subtask(u)).status in (S.SUCCESSFUL, S.FAILED)
            or (up.status is S.PENDING and up.host_id in isolated)
            for u in sub.upstreams
        )
    return sub.status is S.READY and all(record.subtask(u).status is S.SUCCESSFUL for u in sub.upstreams)


def start_subtask(
    record: TaskRecord, subtask_id: int, at: str, separator: str, *, tolerant: bool = False
) -> Transition:
    """READY -> RUNNING, a new log segment opened by ``separator``."""
    sub = _subtask(record, subtask_id)
    if not may_start(record, sub, tolerant=tolerant):
        raise TaskStateError(
            f"The subtask {subtask_id} cannot start: it is {sub.status.value} in a "
            f"{_state(record.task)} task, or an upstream is not done"
        )
    new = replace(sub, status=S.RUNNING, start_time=at, finish_time=None)
    return _apply(record, {sub.id: new}, {sub.id: frozenset({sub.status})}, logs=((sub.id, separator),))


def finish_subtask(
    record: TaskRecord, subtask_id: int, outcome: SubtaskStatus, at: str, log: tuple[str, ...] = ()
) -> Transition:
    """RUNNING (or CANCELING) -> ``outcome``: SUCCESSFUL, FAILED, or PENDING (rolled back). A success makes READY
    each PENDING downstream whose upstreams are now all SUCCESSFUL. A CANCELING subtask can only fail."""
    sub = _subtask(record, subtask_id)
    if sub.status not in ACTIVE:
        raise TaskStateError(f"The subtask {subtask_id} cannot finish: it is {sub.status.value}, not RUNNING")
    if outcome not in (S.SUCCESSFUL, S.FAILED, S.PENDING):
        raise ValueError(f"a subtask finishes SUCCESSFUL, FAILED or PENDING, got {outcome.value}")
    if sub.status is S.CANCELING:
        outcome = S.FAILED
    changes = {sub.id: replace(sub, status=outcome, finish_time=at)}
    expect = {sub.id: ACTIVE}
    if outcome is S.SUCCESSFUL and sub.operation is not Operation.ROLLBACK:
        for down_id in sub.downstreams:
            down = record.subtask(down_id)
            if down.status is S.PENDING and all(
                u == sub.id or record.subtask(u).status is S.SUCCESSFUL for u in down.upstreams
            ):
                changes[down_id] = replace(down, status=S.READY)
                expect[down_id] = frozenset({S.PENDING})
    return _apply(record, changes, expect, logs=tuple((sub.id, line) for line in log))


def cancel_subtask(record: TaskRecord, subtask_id: int) -> Transition:
    """RUNNING -> CANCELING (operation CANCEL): the runner sees it, kills its command and ends it FAILED."""
    sub = _subtask(record, subtask_id)
    if sub.status is not S.RUNNING:
        raise TaskStateError(
            f"The operation is not allowed because the subtask {subtask_id} is in {sub.status.value} state"
        )
    return _apply(
        record, {sub.id: replace(sub, status=S.CANCELING, operation=Operation.CANCEL)}, {sub.id: frozenset({S.RUNNING})}
    )


def outcome(record: TaskRecord, threshold: int | None = None) -> TaskStatus:
    """OCP's aggregate at the end of a run: SUCCESSFUL when every subtask is SUCCESSFUL (PENDING again, after a
    rollback); otherwise FAILED. With a failure ``threshold``, up to that many failed (isolated) hosts do not count."""
    rollback = record.task.operation is Operation.ROLLBACK
    goal = S.PENDING if rollback else S.SUCCESSFUL
    isolated = record.failed_hosts() if threshold is not None and not rollback else set()
    if len(isolated) > (threshold or 0):
        return T.FAILED
    counted = (s for s in record.subtasks if s.host_id not in isolated)
    return T.SUCCESSFUL if all(s.status is goal for s in counted) else T.FAILED


def aggregate_status(statuses: Iterable[SubtaskStatus | str]) -> TaskStatus:
    """OCP's task aggregate: any RUNNING -> RUNNING; else any FAILED -> FAILED; all SUCCESSFUL -> SUCCESSFUL."""
    values = {SubtaskStatus(s) for s in statuses}
    if values & {SubtaskStatus.RUNNING, SubtaskStatus.CANCELING}:
        return TaskStatus.RUNNING
    if SubtaskStatus.FAILED in values:
        return TaskStatus.FAILED
    if values == {SubtaskStatus.SUCCESSFUL}:
        return TaskStatus.SUCCESSFUL
    return TaskStatus.RUNNING


def end_run(record: TaskRecord, at: str, *, threshold: int | None = None, why: str = "") -> Transition:
    """The run is over: every subtask still RUNNING or CANCELING was interrupted and is FAILED (with ``why`` in its
    log), the task takes its outcome, its hosts and its lease are released."""
    why = why or "the run ended while this subtask was running"
    changes = {s.id: replace(s, status=S.FAILED, finish_time=at) for s in record.subtasks if s.status in ACTIVE}
    interrupted = record.replace(changes)
    status = T.FAILED if changes else outcome(interrupted, threshold)
    task = replace(record.task, status=status, finish_time=at, lease_until=0.0, runner="")
    return _apply(
        record,
        changes,
        {sid: ACTIVE for sid in changes},
        task,
        release_hosts=True,
        logs=tuple((sid, why) for sid in changes),
    )


def abort(record: TaskRecord, at: str, why: str) -> Transition:
    """FAIL a RUNNING task that no runner will finish (its lease lapsed, or its flow run could not start): its
    READY, RUNNING and CANCELING subtasks become FAILED with ``why`` in their log; hosts and lease released."""
    if record.task.status is not T.RUNNING:
        raise TaskStateError(
            f"The operation is not allowed because the task {record.task.id} is in {_state(record.task)} state"
        )
    doomed = {S.READY, *ACTIVE}
    changes = {s.id: replace(s, status=S.FAILED, finish_time=at) for s in record.subtasks if s.status in doomed}
    task = replace(record.task, status=T.FAILED, finish_time=at, lease_until=0.0, runner="")
    return _apply(
        record,
        changes,
        {sid: frozenset({record.subtask(sid).status}) for sid in changes},
        task,
        release_hosts=True,
        logs=tuple((sid, why) for sid in changes),
    )


# -- operator operations -----------------------------------------------------------------------------------


def _isolated_success(record: TaskRecord) -> bool:
    """A SUCCESSFUL run that left failed hosts isolated under its failure threshold (their FAILED subtasks)."""
    task = record.task
    return task.status is T.SUCCESSFUL and task.operation is not Operation.ROLLBACK and bool(record.failed_hosts())


def _failed_task(record: TaskRecord) -> None:
    task = record.task
    if task.status is not T.FAILED or task.operation is Operation.ROLLBACK:
        raise TaskStateError(f"The operation is not allowed because the task {task.id} is in {_state(task)} state")


def _reopen(
    record: TaskRecord, changes: dict[int, Subtask], expect: Expectations, operation: Operation, wall: float
) -> Transition:
    task = replace(
        record.task,
        status=T.RUNNING,
        operation=operation,
        finish_time=None,
        lease_until=wall + LAUNCH_GRACE_SECONDS,
        runner="",
    )
    return _apply(record, changes, expect, task, lock_hosts=True)


def _requeue(sub: Subtask) -> Subtask:
    return replace(sub, status=S.READY, operation=Operation.RETRY, run_time=sub.run_time + 1)


def retry_task(record: TaskRecord, wall: float) -> Transition:
    """FAILED subtasks -> READY (operation RETRY, runTime + 1); the task RUNNING again, its hosts locked. A task that
    succeeded under a failure threshold can be retried too: only its isolated hosts' subtasks run again (#22)."""
    if not _isolated_success(record):
        _failed_task(record)
    failed = {s.id: _requeue(s) for s in record.subtasks if s.status is S.FAILED}
    return _reopen(record, failed, {sid: frozenset({S.FAILED}) for sid in failed}, Operation.RETRY, wall)


def retry_subtask(record: TaskRecord, subtask_id: int, wall: float) -> Transition:
    _failed_task(record)
    sub = _subtask(record, subtask_id)
    if sub.status is not S.FAILED:
        raise TaskStateError(
            f"The operation is not allowed because the subtask {subtask_id} is in {sub.status.value} state"
        )
    return _reopen(record, {sub.id: _requeue(sub)}, {sub.id: frozenset({S.FAILED})}, Operation.RETRY, wall)


def skip_subtask(record: TaskRecord, subtask_id: int, wall: float) -> Transition:
    """A FAILED subtask becomes READY with operation SKIP: the run marks it SUCCESSFUL without running it."""
    _failed_task(record)
    sub = _subtask(record, subtask_id)
    if sub.status is not S.FAILED:
        raise TaskStateError(f"The subtask {subtask_id} cannot be skipped: it is {sub.status.value}, not FAILED", 4010)
    return _reopen(
        record,
        {sub.id: replace(sub, status=S.READY, operation=Operation.SKIP)},
        {sub.id: frozenset({S.FAILED})},
        Operation.RETRY,
        wall,
    )


def skip_failed(record: TaskRecord, wall: float) -> Transition:
    """Every FAILED subtask becomes READY with operation SKIP, in one transition (one by one, the first skip
    would reopen the task and the second find it RUNNING)."""
    _failed_task(record)
    failed = {
        s.id: replace(s, status=S.READY, operation=Operation.SKIP) for s in record.subtasks if s.status is S.FAILED
    }
    return _reopen(record, failed, {sid: frozenset({S.FAILED}) for sid in failed}, Operation.RETRY, wall)


def rollback_task(record: TaskRecord, wall: float) -> Transition:
    """Every subtask that ran (or was ready) -> READY with operation ROLLBACK; undone in reverse order."""
    task = record.task
    if task.status is not T.FAILED:
        raise TaskStateError(f"The operation is not allowed because the task {task.id} is in {_state(task)} state")
    if task.prohibit_rollback:
        raise TaskStateError(f"The task {task.id} cannot be rolled back", 4009)
    undo = {
        s.id: replace(s, status=S.READY, operation=Operation.ROLLBACK)
        for s in record.subtasks
        if s.status is not S.PENDING
    }
    return _reopen(
        record, undo, {sid: frozenset({record.subtask(sid).status}) for sid in undo}, Operation.ROLLBACK, wall
    )


def runnable(record: TaskRecord, tolerant_waits: bool = False) -> list[tuple[Subtask, list[int], bool]]:
    """The subtasks a run executes, in order, each with the ids it must wait for and whether it runs even when
    those failed.

    Executing: READY and PENDING subtasks whose upstreams are SUCCESSFUL or run here too; a FAILED upstream
    blocks its whole downstream — except, with ``tolerant_waits`` (a failure threshold), for Wait nodes, which
    run once their upstreams are done, whatever the outcome. Rolling back: the READY/ROLLBACK subtasks in
    reverse order, each after its downstreams (a PENDING downstream has nothing to undo).
    """
    rollback = record.task.operation is Operation.ROLLBACK
    done = S.PENDING if rollback else S.SUCCESSFUL
    subs = reversed(record.subtasks) if rollback else record.subtasks
    chosen: list[tuple[Subtask, list[int], bool]] = []
    submitted: set[int] = set()
    for sub in subs:  # plan order is topological (reversed for rollback): dependencies come first
        wanted = (
            sub.status is S.READY and sub.operation is Operation.ROLLBACK
            if rollback
            else sub.status in (S.READY, S.PENDING)
        )
        deps = sub.downstreams if rollback else sub.upstreams
        tolerant = tolerant_waits and not rollback and sub.kind is Kind.WAIT
        if wanted and (tolerant or all(d in submitted or record.subtask(d).status is done for d in deps)):
            submitted.add(sub.id)
            chosen.append((sub, [d for d in deps if d in submitted], tolerant))
    return chosen
