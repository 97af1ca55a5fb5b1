"""Prefect deployments of the batch-restart flow: scheduled maintenance windows, Prefect UI runs, workers.

- ``deploy(...)`` registers the deployment on the Prefect server (``PREFECT_API_URL``) in a *process* work pool;
  ``prefect worker start --pool ocp-restart`` on any number of machines (with this package installed and the
  same task store URL) then runs its flow runs.
- ``serve(...)`` is the single-machine mode: one long-lived process that schedules and runs the flow itself.

The deployments: ``batch-restart-agents/<name>`` (the restart, with its schedule and default parameters),
``ocp-task-operation/<name>-operations`` (retry, skip, cancel, roll back a task from the UI), and one per other
agent operation, same name: ``restart-agent/<name>``, ``stop-agent/<name>``, ``batch-stop-agents/<name>`` (the
last with the same default hosts and its own schedule, ``stop_cron``: a stop before a maintenance window, the
batch restart's ``cron`` after it). The API's deployment launcher finds them by that name. Entrypoints are module
paths (``flows.restart.batch_restart_agents``, ``flows.operations.task_operation``), so a worker needs the
package installed, not a copy of this checkout.
"""

from __future__ import annotations

from typing import Any

from flows.options import RestartOptions

DEFAULT_POOL = "ocp-restart"
DEFAULT_NAME = "batch-restart"
DESCRIPTION = (
    "Batch restart basic OCP Agent processes on hosts, OCP's DAG: Prepare -> Restart pos proxy -> Stop all -> "
    "Start all -> Finish, a Wait node between stages. Progress and logs: the task store / the OCP-compatible API."
)


def schedules(cron: str | None = None, interval: float | None = None, timezone: str | None = None) -> list:
    """Prefect schedules for a maintenance window: a cron expression in ``timezone`` (default UTC), or an interval."""
    from prefect.schedules import Cron, Interval

    out = []
    if cron:
        out.append(Cron(cron, timezone=timezone or "UTC"))
    if interval:
        out.append(Interval(interval, timezone=timezone or "UTC"))
    return out


def parameters(host_ids: list[int] | None, inventory: str | None, options: RestartOptions | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if host_ids:
        out["host_ids"] = host_ids
    if inventory:
        out["inventory"] = inventory
    if options is not None:
        out["options"] = options.model_dump(mode="json")
    return out


def ensure_work_pool(name: str = DEFAULT_POOL) -> None:
    """Create the process work pool if it does not exist."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            try:
                client.create_work_pool(WorkPoolCreate(name=name, type="process"))
            except ObjectAlreadyExists:
                pass


def _settings(
    name: str,
    host_ids: list[int] | None,
    inventory: str | None,
    options: RestartOptions | None,
    cron: str | None,
    interval: float | None,
    timezone: str | None,
) -> dict:
    """What a registered and a served deployment share: name, schedule, default parameters, description, tags."""
    return dict(
        name=name,
        schedules=schedules(cron, interval, timezone),
        parameters=parameters(host_ids, inventory, options),
        description=DESCRIPTION,
        tags=["ocp-agent"],
    )


def operation_name(name: str) -> str:
    """The task-operation deployment that goes with the restart deployment ``name``."""
    return f"{name}-operations"


def _deployments(
    name: str,
    host_ids: list[int] | None,
    inventory: str | None,
    options: RestartOptions | None,
    cron: str | None,
    interval: float | None,
    timezone: str | None,
    paused: bool = False,
    stop_cron: str | None = None,
) -> list:
    """The restart deployment (schedule, default parameters) and the task-operation one (retry, skip, rollback,
    cancel from the UI), both by module path: a served run imports the real module (a flow pickled by value
    loses its annotations' names: "Model is not fully defined")."""
    from prefect.deployments.runner import EntrypointType

    from flows.operations import task_operation
    from flows.restart import batch_restart_agents

    restart = batch_restart_agents.to_deployment(
        **_settings(name, host_ids, inventory, options, cron, interval, timezone),
        paused=paused,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    operation = task_operation.to_deployment(
        name=operation_name(name),
        description="OCP task operations: retry a FAILED task, retry / skip / cancel one "
        "subtask, roll back. Runs are named ocp-task-N-<action>.",
        tags=["ocp-agent"],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    return [
        restart,
        operation,
        *_operation_deployments(name, host_ids, inventory, options, stop_cron, timezone, paused),
    ]


def _operation_deployments(
    name: str,
    host_ids: list[int] | None,
    inventory: str | None,
    options: RestartOptions | None,
    stop_cron: str | None,
    timezone: str | None,
    paused: bool,
) -> list:
    """restart-agent, stop-agent (one host, asked for at each run) and batch-stop-agents (the default hosts and
    ``stop_cron``), under the batch restart's deployment name."""
    from prefect.deployments.runner import EntrypointType

    from flows.agent_ops import batch_stop_agents, restart_agent, stop_agent

    out = []
    for flow_, description in (
        (
            restart_agent,
            "Restart OCP agent on one host: Prepare -> Restart pos proxy -> Stop all -> Start all -> Finish.",
        ),
        (stop_agent, "Stop OCP agent on one host: Prepare stop -> Stop all -> Finish."),
        (batch_stop_agents, "Batch stop OCP agent: Prepare stop -> Stop all -> Finish, a Wait node between stages."),
    ):
        batch = flow_ is batch_stop_agents
        out.append(
            flow_.to_deployment(
                name=name,
                schedules=schedules(stop_cron, None, timezone) if batch else [],
                parameters=parameters(host_ids if batch else None, inventory, options),
                description=description,
                tags=["ocp-agent"],
                paused=paused,
                entrypoint_type=EntrypointType.MODULE_PATH,
            )
        )
    return out


def deploy(
    *,
    name: str = DEFAULT_NAME,
    pool: str = DEFAULT_POOL,
    host_ids: list[int] | None = None,
    inventory: str | None = None,
    options: RestartOptions | None = None,
    cron: str | None = None,
    interval: float | None = None,
    timezone: str | None = None,
    paused: bool = False,
    notify_webhook: str | None = None,
    stop_cron: str | None = None,
):
    """Register the deployments in ``pool``; returns the restart deployment's id. Idempotent: a second call
    updates them. ``notify_webhook``: an automation POSTs there when a run of either fails."""
    ensure_work_pool(pool)
    ids = [
        d.apply(work_pool_name=pool)
        for d in _deployments(name, host_ids, inventory, options, cron, interval, timezone, paused, stop_cron)
    ]
    if notify_webhook:
        notify_on_failure(notify_webhook, ids, name)
    return ids[0]


def serve(
    *,
    name: str = DEFAULT_NAME,
    host_ids: list[int] | None = None,
    inventory: str | None = None,
    options: RestartOptions | None = None,
    cron: str | None = None,
    interval: float | None = None,
    timezone: str | None = None,
    stop_cron: str | None = None,
) -> None:
    """Single machine: serve the deployments from this process (each flow run in a subprocess)."""
    from prefect import serve as prefect_serve

    prefect_serve(
        *_deployments(name, host_ids, inventory, options, cron, interval, timezone, stop_cron=stop_cron),
        pause_on_shutdown=False,
    )


WEBHOOK_PAYLOAD = (
    '{"event": "ocp-restart.run.failed", "flow_run": "{{ flow_run.name }}", "flow_run_id": "{{ flow_run.id }}", '
    '"deployment": "{{ deployment.name }}", "state": "{{ flow_run.state.name }}", '
    '"message": {{ flow_run.state.message | tojson }}}'
)


def notify_on_failure(url: str, deployment_ids: list, name: str) -> None:
    """A Prefect automation that POSTs ``WEBHOOK_PAYLOAD`` (JSON) to ``url`` when a run of these deployments
    fails: ``flow_run`` is ``ocp-task-N``, ``message`` names the failed hosts and what to run next."""
    from prefect.automations import Automation, CallWebhook
    from prefect.blocks.webhook import Webhook
    from prefect.events.schemas.automations import EventTrigger, Posture

    block_name = f"ocp-restart-{name}-failed"
    block_id = Webhook(url=url, method="POST", headers={"Content-Type": "application/json"}).save(
        block_name, overwrite=True
    )
    try:  # idempotent: a second deploy replaces it
        Automation.read(name=block_name).delete()
    except ValueError:  # none by that name yet
        pass
    Automation(
        name=block_name,
        description=f"POST {url} when a run of the ocp-restart deployment {name!r} (or a task operation) fails",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Failed"},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.id": [f"prefect.deployment.{d}" for d in deployment_ids]},
            posture=Posture.Reactive,
            threshold=1,
            within=0,
        ),
        actions=[CallWebhook(block_document_id=block_id, payload=WEBHOOK_PAYLOAD)],
    ).create()
