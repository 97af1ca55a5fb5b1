"""The batch-restart flow: one Prefect task run per DAG node, ordered by wait_for along the DAG's edges.

The same flow executes a new task, continues one after retry or skip (only subtasks that are READY or never ran),
and rolls one back (subtasks marked ROLLBACK, in reverse order).
"""

from __future__ import annotations

import getpass
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from prefect import allow_failure, flow
from prefect.futures import wait
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from steps.context import RunContext
from steps.inventory import load_inventory
from steps.tasks import TASKS

from . import report
from .models import Operation, SubtaskStatus, TaskStatus, TaskType
from .options import RestartOptions
from .plan import Kind
from .store import TaskRecord, TaskStore, lease_seconds, runner_id
from .submit import create_task, default_inventory_path
from .view import task_instance


def runnable(record: TaskRecord, tolerant_waits: bool = False) -> list[tuple[dict, list[int], bool]]:
    """The subtasks this run executes, each with the ids it must wait for and whether it runs even when those
    failed. Pure.

    Executing: READY and PENDING subtasks whose upstreams are SUCCESSFUL or run here too; a FAILED upstream
    blocks its whole downstream — except, with ``tolerant_waits`` (a failure threshold), for Wait nodes, which
    run once their upstreams are done, whatever the outcome. Rolling back: the READY/ROLLBACK subtasks in
    reverse order, each after its downstreams (a PENDING downstream has nothing to undo).
    """
    rollback = record.task["operation"] == Operation.ROLLBACK.value
    status = {row["id"]: row["status"] for row in record.subtasks}
    done = SubtaskStatus.PENDING.value if rollback else SubtaskStatus.SUCCESSFUL.value
    rows = reversed(record.subtasks) if rollback else record.subtasks
    chosen: list[tuple[dict, list[int], bool]] = []
    submitted: set[int] = set()
    for row in rows:  # plan order is topological (reversed for rollback): dependencies come first
        wanted = (
            row["status"] == SubtaskStatus.READY.value and row["operation"] == Operation.ROLLBACK.value
            if rollback
            else row["status"] in (SubtaskStatus.READY.value, SubtaskStatus.PENDING.value)
        )
        deps = row["downstreams"] if rollback else row["upstreams"]
        tolerant = tolerant_waits and not rollback and row["kind"] is Kind.WAIT
        if wanted and (tolerant or all(d in submitted or status[d] == done for d in deps)):
            submitted.add(row["id"])
            chosen.append((row, [d for d in deps if d in submitted], tolerant))
    return chosen



def final_status(record: TaskRecord, threshold: int | None = None) -> TaskStatus:
    """SUCCESSFUL when every subtask is SUCCESSFUL (PENDING again, after a rollback); otherwise FAILED.

    With a failure ``threshold``, the subtasks of up to that many failed (isolated) hosts do not count.
    """
    goal = SubtaskStatus.PENDING if record.task["operation"] == Operation.ROLLBACK.value else SubtaskStatus.SUCCESSFUL
    isolated = record.failed_hosts() if threshold is not None and goal is SubtaskStatus.SUCCESSFUL else set()
    if len(isolated) > (threshold or 0):
        return TaskStatus.FAILED
    counted = [r for r in record.subtasks if r["host_id"] not in isolated]
    return TaskStatus.SUCCESSFUL if all(r["status"] == goal.value for r in counted) else TaskStatus.FAILED


@contextmanager
def heartbeat(store: TaskStore, task_id: int) -> Iterator[None]:
    """Renew the task's lease while this run lives; if the process dies, the lease lapses and the task FAILs."""
    seconds, stop = lease_seconds(), threading.Event()
    me = runner_id()

    def beat() -> None:
        while True:
            try:
                store.renew_lease(task_id, seconds, me)
            except Exception:  # a store hiccup must not kill the run; the next beat retries
                pass
            if stop.wait(seconds / 3):
                return

    store.renew_lease(task_id, seconds, me)
    thread = threading.Thread(target=beat, name=f"lease-{task_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


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
    inv = load_inventory(inventory or default_inventory_path())
    with TaskStore(store_url) as store:
        if task_id is None:
            scheduled = _scheduled()
            task_id = create_task(
                store, inv, host_ids, options, creator="prefect-scheduler" if scheduled else getpass.getuser(),
                type=TaskType.SCHEDULED if scheduled else TaskType.MANUAL,
            )
        _name_flow_run(task_id)
        record = store.load(task_id)
        if record.task["status"] != TaskStatus.RUNNING.value:
            logger.warning(f"task {task_id} is {record.task['status']}; nothing to run")
            return task_instance(record).to_wire()
        hosts = {h.id: h for h in inv.select(record.task["host_ids"])}
        threshold = options.failure_threshold(len(hosts))
        work = runnable(record, tolerant_waits=threshold is not None)
        logger.info(f"task {task_id} ({record.task['operation']}): {len(work)} of {len(record.subtasks)} subtasks to run "
                    f"on {len(hosts)} host(s)")
        try:
            with heartbeat(store, task_id), RunContext(task_id, store, record, hosts, options) as ctx, \
                    ThreadPoolTaskRunner(max_workers=options.max_workers) as runner:
                futures = {}
                for row, deps, tolerant in work:
                    host = hosts.get(row["host_id"])
                    label = f"{row['id']} {row['name']}" + (f" @ {host.name}" if host else "")
                    if row["operation"] != Operation.EXECUTE.value:
                        label += f" ({row['operation'].lower()})"
                    futures[row["id"]] = runner.submit(
                        TASKS[row["kind"]],
                        parameters={"run_key": ctx.key, "subtask_id": row["id"], "label": label},
                        wait_for=[allow_failure(futures[d]) if tolerant else futures[d] for d in deps],
                    )
                wait(list(futures.values()))
        finally:
            store.finish_task(task_id, final_status(store.load(task_id), threshold))
        try:
            report.publish(store, task_id, {h.id: h.name for h in hosts.values()})
        except Exception as exc:  # the UI's extras must never fail a restart
            logger.warning(f"could not publish the run's artifacts: {exc}")
        instance = task_instance(store.load(task_id))
    (logger.info if instance.status is TaskStatus.SUCCESSFUL else logger.error)(
        f"task {task_id} {instance.status.value}"
    )
    return instance.to_wire()


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
