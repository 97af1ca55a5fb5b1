"""Submitting a restart: validate, plan and record a task before any flow runs. Imports no Prefect (fast CLI errors)."""

from __future__ import annotations

from steps.inventory import Inventory

from .models import BatchRestartRequest, TaskType
from .options import RestartOptions
from .plan import BATCH_RESTART, TaskTemplate, build_plan
from .store import TaskStore


def create_task(
    store: TaskStore,
    inventory: Inventory,
    host_ids: list[int],
    options: RestartOptions,
    *,
    creator: str,
    executor: str,
    type: TaskType = TaskType.MANUAL,
    template: TaskTemplate = BATCH_RESTART,
) -> int:
    """Validate, plan and record a task of ``template`` (its hosts locked); nothing runs yet. Returns the task id.

    ``executor``: this machine's address as OCP's ``executor`` field shows it (``Settings.executor_address``).
    """
    request = BatchRestartRequest.model_validate({"hostIds": host_ids})
    inventory.select(request.host_ids)  # unknown ids fail here, before anything is written
    plan = build_plan(
        request.host_ids,
        options.timeouts,
        batch_size=options.batch_size,
        isolate=options.isolates_failures,
        template=template,
    )
    return store.create_task(
        plan,
        creator=creator,
        executor=executor,
        type=type,
        options=options.model_dump(mode="json"),
        inventory=inventory.path,
    )
