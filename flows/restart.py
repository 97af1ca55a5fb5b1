"""The batch-restart flow: one Prefect task run per DAG node, ordered by wait_for along the DAG's edges.

The same flow executes a new task, continues one after retry or skip (only subtasks that are READY or never ran),
and rolls one back (subtasks marked ROLLBACK, in reverse order). Its machinery (``run_template``, ``run_and_ask``,
``execute``, ``run_flow``) is every operation's: ``flows/agent_ops.py`` has the other operations' flows.
"""

from __future__ import annotations

import contextvars
import getpass
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING, Annotated, Any

from prefect import Flow, allow_failure, flow
from prefect.futures import PrefectFuture, wait
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from steps.inventory import Inventory, load_inventory
from steps.logline import format_time, now

from . import machine, prefect_run, report
from .actions import DECISIONS
from .background import background
from .errors import Fenced, RequestError, StaleWriteError
from .lease import Lease
from .machine import runnable
from .models import Operation, TaskStatus, TaskType
from .options import RestartOptions
from .outcome import outcome_message
from .plan import BATCH_RESTART, TaskTemplate
from .records import TaskRecord
from .run import RunContext
from .settings import Settings
from .store import TaskStore
from .submit import create_task
from .tasks import TASKS
from .view import task_instance

if TYPE_CHECKING:
    from prefect.client.schemas.objects import State


@flow(name="batch-restart-agents", log_prints=False, validate_parameters=True)
def batch_restart_agents(
    host_ids: Annotated[list[int], Field(min_length=1, description="The hosts to restart, by inventory id, in order.")],
    inventory: Annotated[
        str | None,
        Field(
            description="Path of the TOML inventory. Default: the worker's $OCP_RESTART_INVENTORY, "
            "else $OCP_RESTART_HOME/inventory.toml."
        ),
    ] = None,
    options: RestartOptions = RestartOptions(),
) -> dict[str, Any]:
    """Restart the OCP agent on ``host_ids`` through OCP's DAG; returns the task instance (OCP's JSON).

    The flow run ends in its task's state: Completed, "Completed with isolated hosts", or Failed (called from
    Python, a FAILED task raises ``TaskFailed``, whose ``task`` is the instance; ``restart_agents`` returns it
    whatever the outcome). Prefect's Retry of a failed run is OCP's retry of the same task.

    Args:
        host_ids: The hosts to restart, by inventory id, in order.
        inventory: Path of the TOML inventory.
        options: Concurrency, per-stage timeouts, rolling batches, failure threshold, host-key policy, asking the
            operator on failure.
    """
    config = Settings()  # a flow run's entry point: here, on a worker, or in the CLI's and the API's processes
    return run_template(BATCH_RESTART, host_ids, inventory, options, config)


def run_template(
    template: TaskTemplate, host_ids: list[int], inventory: str | None, options: RestartOptions, config: Settings
) -> dict[str, Any]:
    """The body every operation's flow shares: record the task of ``template`` (or take the one this run is
    linked to; Prefect's Retry of a failed run is OCP's retry of it), run it, end in its state."""
    logger = get_run_logger()
    prefect_run.guard(inventory, options, config)
    inv = load_inventory(inventory or config.inventory_path)
    with TaskStore(config.store_url) as store:
        task_id = prefect_run.linked_task()
        if task_id is None:
            scheduled = prefect_run.scheduled()
            task_id = create_task(
                store,
                inv,
                host_ids,
                options,
                creator="prefect-scheduler" if scheduled else getpass.getuser(),
                executor=config.executor_address,
                type=TaskType.SCHEDULED if scheduled else TaskType.MANUAL,
                template=template,
            )
        elif (linked := store.task(task_id)).template != template.key:
            raise RequestError(f"task {task_id} is a '{linked.name}' task; this flow runs '{template.task_name}' tasks")
        elif prefect_run.is_retry_of_this_run() and linked.status is TaskStatus.FAILED:
            logger.info(f"Prefect retries this flow run: OCP's retry of task {task_id}")
            store.retry_task(task_id)
        prefect_run.link(task_id)
        # Beside the run, not before it: one more API round trip on every run's critical path (#23).
        with background(_settling(store, logger), name="settle-stale-runs", join_seconds=10.0):
            record = run_and_ask(store, task_id, inv, options, config)
    return prefect_run.final_state(record, task_instance(record).to_wire())  # type: ignore[return-value]  # a State's data


def _settling(store: TaskStore, logger: Any) -> Callable[[threading.Event], None]:
    """Work for a helper thread, in this flow run's context: settle the flow runs Prefect still shows running
    although their task ended (``prefect_run.settle_stale_runs``), logging each."""
    context = contextvars.copy_context()

    def settle() -> None:
        try:
            for settled in prefect_run.settle_stale_runs(store):
                logger.warning(f"flow run {settled}, as its task ended (its process had lost Prefect's API)")
        except Exception as exc:  # Prefect's mirror must never fail a restart
            logger.warning(f"could not check for flow runs Prefect still shows running: {exc}")

    return lambda stop: context.run(settle)


def run_and_ask(
    store: TaskStore, task_id: int, inv: Inventory, options: RestartOptions, config: Settings
) -> TaskRecord:
    """Run the task; while it FAILS and ``ask_on_failure_seconds`` is set, ask the operator what to do next."""
    logger = get_run_logger()
    record = execute(store, task_id, inv, options, config)
    while record.task.status is TaskStatus.FAILED and options.ask_on_failure_seconds:
        action = prefect_run.ask_operator(record, options.ask_on_failure_seconds)
        logger.info(f"task {task_id}: the operator chose {action!r}")
        operation = DECISIONS[action]
        if operation is None:
            break
        operation.apply(store, task_id)
        record = execute(store, task_id, inv, options, config)
    return record


def execute(store: TaskStore, task_id: int, inv: Inventory, options: RestartOptions, config: Settings) -> TaskRecord:
    """Run what the recorded task has left to run, under a lease: one Prefect task run per subtask. Returns the
    task as it ended; artifacts are published however the run ends (an interruption is re-raised after)."""
    logger = get_run_logger()
    task = store.task(task_id)
    if task.status is not TaskStatus.RUNNING:
        logger.warning(f"task {task_id} is {task.status.value}; nothing to run")
        return store.load(task_id)
    hosts = {h.id: h for h in inv.select(task.host_ids)}
    threshold = options.failure_threshold(len(hosts))
    lease = Lease(store, task_id, config.lease_seconds)
    with lease:
        record = store.load(task_id)  # as claimed
        work = runnable(record, tolerant_waits=threshold is not None)
        logger.info(
            f"task {task_id} ({record.task.operation.value}): {len(work)} of {len(record.subtasks)} "
            f"subtasks to run on {len(hosts)} host(s)"
        )
        ctx = RunContext(task_id, store, record, hosts, options, lease, tolerant_waits=threshold is not None)
        why = ""
        pool: ThreadPoolTaskRunner[State[Any] | None] = ThreadPoolTaskRunner(max_workers=options.max_workers)
        try:
            with ctx, prefect_run.cancel_watch(lambda reason: ctx.stop(reason, grace=0.0)), pool as runner:
                try:
                    futures: dict[int, PrefectFuture[Any]] = {}
                    for sub, deps, tolerant in work:
                        host = hosts.get(sub.host_id) if sub.host_id is not None else None
                        label = f"{sub.id} {sub.name}" + (f" @ {host.id} {host.name}" if host else "")
                        if sub.operation is not Operation.EXECUTE:
                            label += f" ({sub.operation.value.lower()})"
                        # allow_failure wraps a future: Prefect takes it where its annotations say PrefectFuture.
                        upstream: list[Any] = [allow_failure(futures[d]) if tolerant else futures[d] for d in deps]
                        futures[sub.id] = runner.submit(
                            TASKS[sub.kind],
                            parameters={"run_key": ctx.key, "subtask_id": sub.id, "label": label},
                            wait_for=upstream,
                        )
                    wait(list(futures.values()))
                except BaseException as exc:  # Ctrl-C, SIGTERM, Prefect's Cancel, a bug: stop what runs, record why
                    why = interruption(exc)
                    ctx.stop(why, grace=0.0)
                    raise
        finally:
            ended = end_run(store, ctx, threshold, why)
            if ended:
                final = store.load(task_id)
                try:
                    if prefect_run.api_reachable():
                        report.publish(store, final, {h.id: h.name for h in hosts.values()}, outcome_message(final))
                    else:
                        logger.warning(
                            f"Prefect's API does not answer: the run's artifacts are not published (task {task_id} "
                            f"ended {final.task.status.value}; the task store has it: ocp-restart status {task_id})"
                        )
                except Exception as exc:  # the UI's extras must never fail a restart
                    logger.warning(f"could not publish the run's artifacts: {exc}")
    if not ended:
        raise Fenced(
            f"task {task_id}: this process lost its lease ({lease.lost}); another process may own "
            "the task now, so this one recorded nothing more"
        )
    (logger.info if final.task.status is TaskStatus.SUCCESSFUL else logger.error)(outcome_message(final))
    return final


def interruption(exc: BaseException) -> str:
    """Why a run stopped before its end, for the interrupted subtasks' logs."""
    if isinstance(exc, KeyboardInterrupt):
        return "the run was interrupted (SIGINT)"
    if isinstance(exc, SystemExit):
        return f"the run's process is exiting ({exc.code})"
    signal_number = getattr(exc, "signal", None)  # Prefect's TerminationSignal: SIGTERM to a worker's flow run
    if isinstance(signal_number, int):
        import signal

        return f"the run's process received {signal.Signals(signal_number).name}"
    return f"the run ended by an unexpected {type(exc).__name__}: {exc}"


def end_run(store: TaskStore, ctx: RunContext, threshold: int | None, why: str) -> bool:
    """Record the end of the run, unless this runner lost the task: no subtask is left RUNNING or CANCELING, the
    task takes its outcome, hosts and lease are released. False if nothing could be recorded."""
    if ctx.lease.lost is not None and not ctx.stopping:
        return False
    stamp = format_time(now())
    reason = f"{stamp} ERROR --- {why or ctx.stopping or 'the run ended while this subtask was running'}; marked FAILED"
    give_up = time.monotonic() + ctx.lease.seconds  # a stopping run's lease is given up: bound the wait anyway

    def fence() -> None:
        if (ctx.lease.lost is not None and not ctx.stopping) or time.monotonic() > give_up:
            raise Fenced(f"not recording the end of task {ctx.task_id}: the task store stayed unavailable")

    try:
        # From the store, not the run's record: an operator's CANCELING is only there.
        ctx.outage.wait(
            lambda: store.apply(
                machine.end_run(store.load(ctx.task_id), stamp, threshold=threshold, why=reason),
                runner=ctx.lease.runner,
            ),
            fence=fence,
            doing="recording the end of the run",
        )
        return True
    except (StaleWriteError, Fenced):
        return False


def restart_agents(*, task_id: int | None = None, **parameters: Any) -> dict[str, Any]:
    """The batch restart run in this process: ``run_flow`` of its flow (see there)."""
    return run_flow(batch_restart_agents, task_id=task_id, **parameters)


def run_flow(flow_: Flow[..., Any], *, task_id: int | None = None, **parameters: Any) -> dict[str, Any]:
    """Run the flow in this process and return the task instance whatever its outcome (the CLI, the API's
    embedded launcher, Python callers). ``task_id``: run that recorded task (attached, not a flow parameter).

    Prefect's flow-run heartbeat is off here: our task lease already marks a run whose process died, and the
    heartbeat thread sleeps in 1 s steps, so it held the end of every in-process run for up to a second
    (measured: ~1.0 s of a 10-host run). Runs started by a Prefect worker keep it.
    """
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with (
        temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
        prefect_run.attached(task_id) if task_id is not None else nullcontext(),
    ):
        # Named after its task from its first log line (link() renames a run that starts unnamed).
        named = flow_.with_options(flow_run_name=f"ocp-task-{task_id}") if task_id else flow_
        state: State[Any] = named(**parameters, return_state=True)  # type: ignore[assignment]  # typed by the flow's return
    return _instance_of(state)


def _instance_of(state: State[Any]) -> dict[str, Any]:
    """The task instance a finished flow run carries, whatever its state; its exception if it has none."""
    result = state.result(raise_on_failure=False)
    if isinstance(result, prefect_run.TaskFailed):
        return result.task
    if isinstance(result, BaseException):
        raise result
    return dict(result)
