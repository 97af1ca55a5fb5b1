"""One Prefect task per kind of DAG node. Each records its subtask's transitions and log in the task store."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.states import Failed, State

from flows.errors import CommandTimeout, StepError, SubtaskCancelled
from flows.models import Operation, SubtaskStatus, now
from flows.plan import STAGES, WAIT, Kind

from . import work
from .context import Step, lookup
from .subtask_log import SubtaskLog, separator

# No tags (each costs a server round-trip), no caching, no result persistence: the store is our record.
_OPTIONS = dict(cache_policy=NO_CACHE, persist_result=False, task_run_name="{label}", log_prints=False)
_NAMES = {t.kind: t.name for t in (*STAGES, WAIT)}
# A failure here may leave the agent unreachable or stopped: the host's agent shows OFFLINE until a restart succeeds.
_AGENT_DOWN_WHEN_FAILED = {Kind.PREPARE, Kind.STOP_ALL, Kind.START_ALL, Kind.FINISH}

ROLLBACK_STEPS: dict[Kind, Callable[[Step], None]] = {
    Kind.PREPARE: work.nothing_to_undo,
    Kind.RESTART_POS_PROXY: work.ensure_pos_proxy,
    Kind.STOP_ALL: work.ensure_running,
    Kind.START_ALL: work.ensure_running,
    Kind.FINISH: work.nothing_to_undo,
    Kind.WAIT: work.nothing_to_undo,
}


def run_node(run_key: str, subtask_id: int, execute: Callable[[Step], None]) -> State | None:
    """Run one subtask: RUNNING -> its step under its deadline -> SUCCESSFUL | FAILED, all recorded.

    The subtask's operation picks the work: EXECUTE/RETRY run ``execute``; SKIP succeeds without running;
    ROLLBACK runs the kind's rollback step and ends PENDING, as OCP's rolled-back subtasks do.
    """
    ctx = lookup(run_key)
    row = ctx.record.subtask(subtask_id)
    operation = Operation(row["operation"])
    host = ctx.hosts.get(row["host_id"]) if row["host_id"] is not None else None
    log = SubtaskLog(ctx.logs, subtask_id, host.label if host else "wait")
    ctx.store.start_subtask(subtask_id, separator(operation.value, now()))
    started = time.monotonic()
    step = Step(ctx, subtask_id, host, log, started + row["timeout"], row["timeout"])
    logger = get_run_logger()
    try:
        if operation is Operation.SKIP:
            log.info("skipped by an operator: marked SUCCESSFUL without running")
        elif operation is Operation.ROLLBACK:
            ROLLBACK_STEPS[row["kind"]](step)
        else:
            execute(step)
        if time.monotonic() > step.deadline:
            raise StepError(f"{row['name']} overran its timeout of {row['timeout']} s")
    except Exception as exc:  # every failure becomes a FAILED subtask with a readable log
        if isinstance(exc, StepError):
            message = exc.message
            log.error(message)
            if isinstance(exc, CommandTimeout) and exc.output:
                log.error("output before the deadline:\n" + exc.output)
        else:
            message = f"unexpected {type(exc).__name__}: {exc}"
            log.error(message + "\n" + traceback.format_exc())
        verb = "cancelled" if isinstance(exc, SubtaskCancelled) else "failed"
        log.error(f"Execute task {verb} after {time.monotonic() - started:.2f} s")
        ctx.store.finish_subtask(subtask_id, SubtaskStatus.FAILED, log.take())
        if host is not None and row["kind"] in _AGENT_DOWN_WHEN_FAILED:
            ctx.store.set_host_agent_status(host.id, "OFFLINE")
        logger.error(f"subtask {subtask_id} {row['name']} FAILED: {message}")
        return Failed(message=message)
    log.info(f"{row['name']} {'rolled back' if operation is Operation.ROLLBACK else 'done'} in {time.monotonic() - started:.2f} s")
    if operation is Operation.ROLLBACK:
        ctx.store.finish_subtask(subtask_id, SubtaskStatus.PENDING, log.take())
        return None
    ctx.store.finish_subtask(subtask_id, SubtaskStatus.SUCCESSFUL, log.take())
    if host is not None and row["kind"] is Kind.FINISH:
        ctx.store.set_host_agent_status(host.id, "AVAILABLE")
    return None


@task(name=_NAMES[Kind.PREPARE], **_OPTIONS)
def prepare(run_key: str, subtask_id: int, label: str) -> State | None:
    return run_node(run_key, subtask_id, work.prepare)


@task(name=_NAMES[Kind.RESTART_POS_PROXY], **_OPTIONS)
def restart_pos_proxy(run_key: str, subtask_id: int, label: str) -> State | None:
    return run_node(run_key, subtask_id, work.restart_pos_proxy)


@task(name=_NAMES[Kind.STOP_ALL], **_OPTIONS)
def stop_all(run_key: str, subtask_id: int, label: str) -> State | None:
    return run_node(run_key, subtask_id, work.stop_all)


@task(name=_NAMES[Kind.START_ALL], **_OPTIONS)
def start_all(run_key: str, subtask_id: int, label: str) -> State | None:
    return run_node(run_key, subtask_id, work.start_all)


@task(name=_NAMES[Kind.FINISH], **_OPTIONS)
def finish(run_key: str, subtask_id: int, label: str) -> State | None:
    return run_node(run_key, subtask_id, work.finish)


@task(name=_NAMES[Kind.WAIT], **_OPTIONS)
def wait(run_key: str, subtask_id: int, label: str) -> State | None:
    return run_node(run_key, subtask_id, work.wait)


TASKS = {
    Kind.PREPARE: prepare,
    Kind.RESTART_POS_PROXY: restart_pos_proxy,
    Kind.STOP_ALL: stop_all,
    Kind.START_ALL: start_all,
    Kind.FINISH: finish,
    Kind.WAIT: wait,
}
