"""One Prefect task per kind of DAG node. Each records its subtask's transitions and log in the task store."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from typing import Any

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.logging import get_run_logger
from prefect.states import Failed

from steps import agent_logs, nodes
from steps.logline import format_time, now, separator
from steps.step import Step

from . import machine
from .errors import AgentError, CommandTimeout, Fenced, StepError, SubtaskCancelled
from .logs import SubtaskLog
from .models import Operation, SubtaskStatus
from .outcome import version_mismatch
from .plan import TEMPLATES, WAIT, Kind, template_of
from .run import HostStep, RunContext, lookup

# A Prefect task's name: the first template's name for the kind (Prepare stop's is its own kind).
_NAMES = {s.kind: s.name for t in reversed(TEMPLATES.values()) for s in (*t.stages, WAIT)}
# A failure here may leave the agent unreachable or stopped: the host's agent shows OFFLINE until a restart succeeds.
_AGENT_DOWN_WHEN_FAILED = {
    Kind.PREPARE,
    Kind.PREPARE_STOP,
    Kind.STOP_ALL,
    Kind.START_ALL,
    Kind.FINISH,
    Kind.FINISH_STOP,
}
_FINISHES = {Kind.FINISH, Kind.FINISH_STOP}
_STARTS_AGAIN = {Kind.STOP_ALL, Kind.START_ALL}  # their rollback leaves the agent running (ensure_running)

ROLLBACK_STEPS: dict[Kind, Callable[[Step], None]] = {
    Kind.PREPARE: nodes.nothing_to_undo,
    Kind.PREPARE_STOP: nodes.nothing_to_undo,
    Kind.RESTART_POS_PROXY: nodes.ensure_pos_proxy,
    Kind.STOP_ALL: nodes.ensure_running,
    Kind.START_ALL: nodes.ensure_running,
    Kind.FINISH: nodes.nothing_to_undo,
    Kind.FINISH_STOP: nodes.nothing_to_undo,
}


NodeFunction = Callable[[str, int, str], "State | None"]


def _node_task(kind: Kind) -> Callable[[NodeFunction], Task[[str, int, str], State | None]]:
    """The Prefect task of one node kind. No tags (each costs a server round-trip), no caching, no result
    persistence: the store is our record."""
    return task(
        name=_NAMES[kind], cache_policy=NO_CACHE, persist_result=False, task_run_name="{label}", log_prints=False
    )


def wait_barrier(run: RunContext, log: SubtaskLog) -> None:
    """A Wait node: nothing runs remotely. Prefect starts it when every upstream subtask succeeded — or, with a
    failure threshold, when they are all done: then it fails only if more hosts failed than the threshold."""
    _versions(run, log)
    threshold = run.options.failure_threshold(len(run.hosts))
    if threshold is None:
        log.info("all upstream subtasks are SUCCESSFUL")
        return
    failed = sorted(run.record.failed_hosts())
    if len(failed) > threshold:
        raise AgentError(
            f"{len(failed)} host(s) failed ({failed}), more than the threshold of {threshold}: stopping here"
        )
    if failed:
        log.warning(f"isolated {len(failed)} failed host(s) {failed} (threshold {threshold}); the others go on")
    else:
        log.info("all upstream subtasks are SUCCESSFUL")


def _versions(run: RunContext, log: SubtaskLog) -> None:
    """The Wait node after Prepare says whether the batch's hosts run different agent versions (OCP's alert
    host_agent_version_not_same, #20): each Prepare recorded its host's."""
    if not any(run.record.subtask(u).kind is Kind.PREPARE for u in run.record.subtask(log.subtask_id).upstreams):
        return
    versions = run.store.versions(run.task_id)
    mismatch = version_mismatch(versions)
    if mismatch:
        log.warning(mismatch)
    elif versions:
        log.info(f"every host read runs agent version {next(iter(versions.values()))}")


def run_node(run_key: str, subtask_id: int, execute: Callable[[Step], None] | None) -> State | None:
    """Run one subtask: RUNNING -> its step under its deadline -> SUCCESSFUL | FAILED, all recorded.

    The subtask's operation picks the work: EXECUTE/RETRY run ``execute``; SKIP succeeds without running;
    ROLLBACK runs the kind's rollback step and ends PENDING, as OCP's rolled-back subtasks do. A runner that lost
    its lease (Fenced) writes nothing more: whoever took the task over owns its records now.
    """
    ctx = lookup(run_key)
    logger = get_run_logger()
    sub = ctx.record.subtask(subtask_id)
    operation = sub.operation
    host = ctx.hosts.get(sub.host_id) if sub.host_id is not None else None
    log = SubtaskLog(ctx.logs, subtask_id, host.label if host else "wait", mirror=logger)
    if ctx.stopping:
        logger.warning(f"subtask {subtask_id} {sub.name} not started: {ctx.stopping}")
        return Failed(message=ctx.stopping)
    try:
        ctx.advance(
            lambda r: machine.start_subtask(
                r, subtask_id, format_time(now()), separator(operation.value, now()), tolerant=ctx.tolerant_waits
            )
        )
    except Fenced as exc:
        logger.error(f"subtask {subtask_id} {sub.name} not started: {exc.message}")
        return Failed(message=exc.message)
    started = time.monotonic()
    deadline = started + sub.timeout
    tails = ""  # the agent's own log lines, read when its step failed on the host
    try:
        if operation is Operation.SKIP:
            log.info("skipped by an operator: marked SUCCESSFUL without running")
        elif sub.kind is Kind.WAIT:
            if operation is Operation.ROLLBACK:
                log.info("nothing to undo")
            else:
                wait_barrier(ctx, log)
        else:
            assert host is not None and execute is not None, (
                f"subtask {subtask_id}: a host node needs a host and a step"
            )
            step = HostStep(ctx, subtask_id, host, log, deadline, sub.timeout)
            try:
                (ROLLBACK_STEPS[sub.kind] if operation is Operation.ROLLBACK else execute)(step)
            except (AgentError, CommandTimeout):
                if ctx.connected(host.id):  # read before Finish closes the session; logged after the error
                    tails = agent_logs.read_or_why(step.runner(), host.agent_home, deadline, stop=step.cancelled)
                raise
            finally:
                if sub.kind in _FINISHES:
                    ctx.close_session(host.id)
        if time.monotonic() > deadline:
            raise StepError(f"{sub.name} overran its timeout of {sub.timeout} s")
        if subtask_id in ctx.canceling():
            raise SubtaskCancelled("cancelled by an operator as it finished")  # OCP: CANCELING ends FAILED
    except Fenced as exc:  # this runner lost the task: another may own it now, so nothing more is written
        log.publish()
        logger.error(f"subtask {subtask_id} {sub.name}: {exc.message}")
        return Failed(message=exc.message)
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
        if tails:  # why, in the agent's own words (#20): the log ends with the agent's newest log lines
            log.error(tails)
        if not _finish(ctx, logger, subtask_id, SubtaskStatus.FAILED, log):
            return Failed(message="this runner lost its lease")
        if host is not None and sub.kind in _AGENT_DOWN_WHEN_FAILED:
            ctx.store.set_host_agent_status(host.id, "OFFLINE")
        return Failed(message=message)
    log.info(
        f"{sub.name} {'rolled back' if operation is Operation.ROLLBACK else 'done'} "
        f"in {time.monotonic() - started:.2f} s"
    )
    outcome = SubtaskStatus.PENDING if operation is Operation.ROLLBACK else SubtaskStatus.SUCCESSFUL
    if not _finish(ctx, logger, subtask_id, outcome, log):
        return Failed(message="this runner lost its lease")
    if host is not None:
        _agent_status_after(ctx, sub.kind, operation, host.id)
    return None


def _agent_status_after(ctx: RunContext, kind: Kind, operation: Operation, host_id: int) -> None:
    """The host's agent status (OCP's hostAgentStatus) as a node that succeeded leaves it: the template's done
    status (AVAILABLE after a restart, OFFLINE after a stop) at its Finish; AVAILABLE after a rollback started the
    agent again. (While a task holds the host, its lock says so: the template's ``busy_status``.)"""
    template = template_of(ctx.record.task.template)
    if operation is Operation.ROLLBACK:
        if kind in _STARTS_AGAIN:
            ctx.store.set_host_agent_status(host_id, "AVAILABLE")
    elif kind is template.chain[-1]:
        ctx.store.set_host_agent_status(host_id, template.done_status)


def _finish(
    ctx: RunContext,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    subtask_id: int,
    outcome: SubtaskStatus,
    log: SubtaskLog,
) -> bool:
    """Record the subtask's end with its last log lines; False if this runner may no longer write."""
    log.publish()
    try:
        ctx.advance(lambda r: machine.finish_subtask(r, subtask_id, outcome, format_time(now()), tuple(log.take())))
        return True
    except Fenced as exc:
        logger.error(f"subtask {subtask_id}: its end ({outcome.value}) is not recorded: {exc.message}")
        return False


@_node_task(Kind.PREPARE)
def prepare(run_key: str, subtask_id: int, label: str) -> State | None:
    return run_node(run_key, subtask_id, nodes.prepare)


@_node_task(Kind.PREPARE_STOP)
def prepare_stop(run_key: str, subtask_id: int, label: str) -> State | None:
    return run_node(run_key, subtask_id, nodes.prepare_stop)


@_node_task(Kind.RESTART_POS_PROXY)
def restart_pos_proxy(run_key: str, subtask_id: int, label: str) -> State | None:
    return run_node(run_key, subtask_id, nodes.restart_pos_proxy)


@_node_task(Kind.STOP_ALL)
def stop_all(run_key: str, subtask_id: int, label: str) -> State | None:
    return run_node(run_key, subtask_id, nodes.stop_all)


@_node_task(Kind.START_ALL)
def start_all(run_key: str, subtask_id: int, label: str) -> State | None:
    return run_node(run_key, subtask_id, nodes.start_all)


@_node_task(Kind.FINISH)
def finish(run_key: str, subtask_id: int, label: str) -> State | None:
    return run_node(run_key, subtask_id, nodes.finish)


@_node_task(Kind.FINISH_STOP)
def finish_stop(run_key: str, subtask_id: int, label: str) -> State | None:
    return run_node(run_key, subtask_id, nodes.finish_stop)


@_node_task(Kind.WAIT)
def wait(run_key: str, subtask_id: int, label: str) -> State | None:
    return run_node(run_key, subtask_id, None)


TASKS = {
    Kind.PREPARE: prepare,
    Kind.RESTART_POS_PROXY: restart_pos_proxy,
    Kind.STOP_ALL: stop_all,
    Kind.START_ALL: start_all,
    Kind.FINISH: finish,
    Kind.WAIT: wait,
    Kind.PREPARE_STOP: prepare_stop,
    Kind.FINISH_STOP: finish_stop,
}


class _QuietCompletion(logging.Filter):
    """Drops Prefect's "Finished in state Completed()" line of our node tasks: the task run's state says it, and our
    subtask's own record (``SubtaskLog.publish``) ends "... done in N s". Logged under the API log handler's lock by
    each of the pool's threads, it was ~15% of a task run's CPU in our process (py-spy, 1,000 no-op task runs,
    32 threads; #23). Other lines (a failure's, a NotReady's) and other tasks' stay."""

    NAMES = frozenset(_NAMES.values())

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno == logging.INFO
            and getattr(record, "task_name", None) in self.NAMES
            and str(record.msg).startswith("Finished in state Completed")
        )


logging.getLogger("prefect.task_runs").addFilter(_QuietCompletion())
