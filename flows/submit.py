"""Submitting a restart: validate, plan and record a task before any flow runs. Imports no Prefect (fast CLI errors)."""

from __future__ import annotations

from pathlib import Path

from steps.inventory import Inventory

from .models import BatchRestartRequest, TaskType
from .options import RestartOptions
from .plan import build_plan
from .settings import settings
from .store import TaskStore


def default_inventory_path() -> Path:
    return settings().inventory_path


def executor_address() -> str:
    """This machine's address as OCP's ``executor`` field shows it (resolved locally, no traffic)."""
    return settings().executor_address


def create_task(
    store: TaskStore,
    inventory: Inventory,
    host_ids: list[int],
    options: RestartOptions,
    *,
    creator: str,
    type: TaskType = TaskType.MANUAL,
) -> int:
    """Validate, plan and record a task (its hosts locked); nothing runs yet. Returns the task id."""
    request = BatchRestartRequest.model_validate({"hostIds": host_ids})
    inventory.select(request.host_ids)  # unknown ids fail here, before anything is written
    plan = build_plan(
        request.host_ids, options.timeouts, batch_size=options.batch_size, isolate=options.isolates_failures
    )
    return store.create_task(
        plan, creator=creator, executor=executor_address(), type=type, options=options.model_dump(mode="json"),
        inventory=inventory.path,
    )
