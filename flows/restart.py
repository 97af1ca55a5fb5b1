"""The batch-restart flow: one Prefect task run per DAG node, ordered by wait_for along the DAG's edges."""

from __future__ import annotations

import getpass

from prefect import flow
from prefect.futures import wait
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from steps.context import RunContext
from steps.inventory import load_inventory
from steps.tasks import TASKS

from .models import SubtaskStatus, TaskStatus
from .options import RestartOptions
from .store import TaskStore
from .submit import create_task, default_inventory_path
from .view import task_instance


@flow(name="batch-restart-agents", log_prints=False, validate_parameters=True)
def batch_restart_agents(
    host_ids: list[int],
    inventory: str | None = None,
    options: RestartOptions = RestartOptions(),
    task_id: int | None = None,
    store_url: str | None = None,
) -> dict:
    """Restart the OCP agent on ``host_ids`` through OCP's DAG; returns the task instance (OCP's JSON).

    ``inventory`` defaults to $OCP_RESTART_INVENTORY or $OCP_RESTART_HOME/inventory.toml; ``task_id`` runs a task
    already recorded (by the CLI or the API) instead of creating one; ``store_url`` overrides the task store.
    """
    logger = get_run_logger()
    inv = load_inventory(inventory or default_inventory_path())
    with TaskStore(store_url) as store:
        if task_id is None:
            task_id = create_task(store, inv, host_ids, options, creator=getpass.getuser())
        _name_flow_run(task_id)
        record = store.load(task_id)
        hosts = {h.id: h for h in inv.select(record.task["host_ids"])}
        logger.info(f"task {task_id}: restarting the OCP agent on {len(hosts)} host(s), {len(record.subtasks)} subtasks")
        try:
            with RunContext(task_id, store, record, hosts, options) as ctx, ThreadPoolTaskRunner(
                max_workers=options.max_workers
            ) as runner:
                futures = {}
                for row in record.subtasks:  # plan order is topological: upstream futures exist already
                    host = hosts.get(row["host_id"])
                    label = f"{row['id']} {row['name']}" + (f" @ {host.name}" if host else "")
                    futures[row["id"]] = runner.submit(
                        TASKS[row["kind"]],
                        parameters={"run_key": ctx.key, "subtask_id": row["id"], "label": label},
                        wait_for=[futures[up] for up in row["upstreams"]],
                    )
                wait(list(futures.values()))
        finally:
            statuses = [row["status"] for row in store.load(task_id).subtasks]
            final = (
                TaskStatus.SUCCESSFUL
                if all(s == SubtaskStatus.SUCCESSFUL.value for s in statuses)
                else TaskStatus.FAILED
            )
            store.finish_task(task_id, final)
        instance = task_instance(store.load(task_id))
    (logger.info if instance.status is TaskStatus.SUCCESSFUL else logger.error)(
        f"task {task_id} {instance.status.value}"
    )
    return instance.to_wire()


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
