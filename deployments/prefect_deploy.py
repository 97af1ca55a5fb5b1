"""Prefect deployments of the batch-restart flow: scheduled maintenance windows, Prefect UI runs, workers.

- ``deploy(...)`` registers the deployment on the Prefect server (``PREFECT_API_URL``) in a *process* work pool;
  ``prefect worker start --pool ocp-restart`` on any number of machines (with this package installed and the
  same task store URL) then runs its flow runs.
- ``serve(...)`` is the single-machine mode: one long-lived process that schedules and runs the flow itself.

The entrypoint is the module path ``flows.restart.batch_restart_agents``, so a worker needs the package
installed, not a copy of this checkout.
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


def _settings(name: str, host_ids: list[int] | None, inventory: str | None, options: RestartOptions | None,
              cron: str | None, interval: float | None, timezone: str | None) -> dict:
    """What a registered and a served deployment share: name, schedule, default parameters, description, tags."""
    return dict(name=name, schedules=schedules(cron, interval, timezone),
                parameters=parameters(host_ids, inventory, options), description=DESCRIPTION, tags=["ocp-agent"])


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
):
    """Register the deployment in ``pool``; returns its id. Idempotent: a second call updates it."""
    from prefect.deployments.runner import EntrypointType

    from flows.restart import batch_restart_agents

    ensure_work_pool(pool)
    deployment = batch_restart_agents.to_deployment(
        **_settings(name, host_ids, inventory, options, cron, interval, timezone),
        paused=paused, entrypoint_type=EntrypointType.MODULE_PATH,
    )
    return deployment.apply(work_pool_name=pool)


def serve(
    *,
    name: str = DEFAULT_NAME,
    host_ids: list[int] | None = None,
    inventory: str | None = None,
    options: RestartOptions | None = None,
    cron: str | None = None,
    interval: float | None = None,
    timezone: str | None = None,
) -> None:
    """Single machine: serve the deployment from this process (runs each flow run in a subprocess)."""
    from flows.restart import batch_restart_agents

    batch_restart_agents.serve(
        **_settings(name, host_ids, inventory, options, cron, interval, timezone), pause_on_shutdown=False,
    )
