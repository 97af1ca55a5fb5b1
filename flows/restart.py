"""The batch-restart flow: one Prefect task run per DAG node, ordered by wait_for along the DAG's edges.

The same flow executes a new task, continues one after retry or skip (only subtasks that are READY or never ran),
and rolls one back (subtasks marked ROLLBACK, in reverse order).
"""

from __future__ import annotations

import getpass
from typing import Annotated

from prefect import allow_failure, flow
from prefect.futures import wait
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from steps.inventory import load_inventory
from steps.logline import format_time, now

from . import machine, report
from .errors import Fenced, StaleWriteError
from .lease import Lease
from .machine import runnable
from .models import Operation, TaskStatus, TaskType
from .options import RestartOptions
from .run import RunContext
from .settings import Settings
from .store import TaskStore
from .submit import create_task
from .tasks import TASKS
from .view import task_instance


@flow(name="batch-restart-agents", log_prints=False, validate_parameters=True)
def batch_restart_agents(
    host_ids: Annotated[list[int], Field(min_length=1, description="The hosts to restart, by inventory id, in order.")],
    inventory: Annotated[
        str | None, Field(description="Path of the TOML inventory. Default: $OCP_RESTART_INVENTORY, else "
                                      "$OCP_RESTART_HOME/inventory.toml.")
    ] = None,
    options: RestartOptions = RestartOptions(),
    task_id: Annotated[
        int | None, Field(description="Internal: run a task already recorded (by the API, the CLI, a retry).")
    ] = None,
    store_url: Annotated[
        str | None, Field(description="SQLAlchemy URL of the task store. Default: $OCP_RESTART_STORE_URL, else "
                                      "SQLite under $OCP_RESTART_HOME.")
    ] = None,
) -> dict:
    """Restart the OCP agent on ``host_ids`` through OCP's DAG; returns the task instance (OCP's JSON).

    Args:
        host_ids: The hosts to restart, by inventory id, in order.
        inventory: Path of the TOML inventory.
        options: Concurrency, per-stage timeouts, rolling batches, failure threshold, host-key policy.
        task_id: Internal: run a task already recorded (by the API, the CLI, or a retry/skip/rollback).
        store_url: SQLAlchemy URL of the task store.
    """
    logger = get_run_logger()
    config = Settings()
    inv = load_inventory(inventory or config.inventory_path)
    with TaskStore(store_url or config.store_url) as store:
        if task_id is None:
            scheduled = _scheduled()
            task_id = create_task(
                store, inv, host_ids, options, creator="prefect-scheduler" if scheduled else getpass.getuser(),
                type=TaskType.SCHEDULED if scheduled else TaskType.MANUAL,
            )
        _name_flow_run(task_id)
        record = store.load(task_id)
        if record.task.status is not TaskStatus.RUNNING:
            logger.warning(f"task {task_id} is {record.task.status.value}; nothing to run")
            return task_instance(record).to_wire()
        hosts = {h.id: h for h in inv.select(record.task.host_ids)}
        threshold = options.failure_threshold(len(hosts))
        lease = Lease(store, task_id, config.lease_seconds)
        with lease:
            record = store.load(task_id)  # as claimed
            work = runnable(record, tolerant_waits=threshold is not None)
            logger.info(f"task {task_id} ({record.task.operation.value}): {len(work)} of {len(record.subtasks)} "
                        f"subtasks to run on {len(hosts)} host(s)")
            ctx = RunContext(task_id, store, record, hosts, options, lease, tolerant_waits=threshold is not None)
            why = ""
            try:
                with ctx, ThreadPoolTaskRunner(max_workers=options.max_workers) as runner:
                    try:
                        futures = {}
                        for sub, deps, tolerant in work:
                            host = hosts.get(sub.host_id)
                            label = f"{sub.id} {sub.name}" + (f" @ {host.name}" if host else "")
                            if sub.operation is not Operation.EXECUTE:
                                label += f" ({sub.operation.value.lower()})"
                            futures[sub.id] = runner.submit(
                                TASKS[sub.kind],
                                parameters={"run_key": ctx.key, "subtask_id": sub.id, "label": label},
                                wait_for=[allow_failure(futures[d]) if tolerant else futures[d] for d in deps],
                            )
                        wait(list(futures.values()))
                    except BaseException as exc:  # Ctrl-C, SIGTERM, a bug: stop what runs, record why
                        why = interruption(exc)
                        ctx.stop(why, grace=0.0)
                        raise
            finally:
                ended = end_run(store, ctx, threshold, why)
        if not ended:
            raise Fenced(f"task {task_id}: this process lost its lease ({lease.lost}); another process may own "
                         "the task now, so this one recorded nothing more")
        try:
            report.publish(store, task_id, {h.id: h.name for h in hosts.values()})
        except Exception as exc:  # the UI's extras must never fail a restart
            logger.warning(f"could not publish the run's artifacts: {exc}")
        instance = task_instance(store.load(task_id))
    (logger.info if instance.status is TaskStatus.SUCCESSFUL else logger.error)(
        f"task {task_id} {instance.status.value}"
    )
    return instance.to_wire()


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
    try:
        # From the store, not the run's record: an operator's CANCELING is only there.
        store.apply(machine.end_run(store.load(ctx.task_id), stamp, threshold=threshold, why=reason),
                    runner=ctx.lease.runner)
        return True
    except StaleWriteError:
        return False


def run_here(**parameters) -> dict:
    """Run the flow in this process (the CLI, the API's embedded launcher), without Prefect's flow-run heartbeat.

    Our task lease already marks a run whose process died, and the heartbeat thread sleeps in 1 s steps, so it
    held the end of every in-process run for up to a second (measured: ~1.0 s of a 10-host run). Runs started by
    a Prefect worker keep it: there Prefect's own crash detection watches the worker's subprocess.
    """
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        return batch_restart_agents(**parameters)


def _scheduled() -> bool:
    """Whether this flow run was created by a deployment's schedule."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return bool(ctx and ctx.flow_run and ctx.flow_run.auto_scheduled)


def _name_flow_run(task_id: int) -> None:
    """Name the flow run after the task, so the Prefect UI and OCP's task id point at each other."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(ctx.flow_run.id, name=f"ocp-task-{task_id}")
    except Exception as exc:  # cosmetic: never fail a restart over a name
        get_run_logger().warning(f"could not rename the flow run: {exc}")
