"""OCP's task operations as a Prefect flow: retry a task, retry / skip / cancel one subtask, roll back — runnable
from the Prefect UI with a typed form, and the way the CLI runs them, so every run is linked to its task."""

from __future__ import annotations

from typing import Annotated, Literal

from prefect import flow, get_run_logger
from pydantic import Field

from steps.inventory import MAX_ID, load_inventory

from . import prefect_run
from .errors import RequestError
from .options import RestartOptions
from .records import TaskRecord
from .restart import run_and_ask
from .settings import Settings
from .store import TaskStore
from .view import task_instance

Action = Literal["retry", "rollback", "retry_subtask", "skip_subtask", "cancel_subtask"]


@flow(name="ocp-task-operation", log_prints=False, validate_parameters=True)
def task_operation(
    task_id: Annotated[int, Field(ge=1, le=MAX_ID, description="The OCP task (its flow run is named ocp-task-N).")],
    action: Annotated[Action, Field(description="retry: a FAILED task's failed subtasks and what never ran; "
                                                "rollback: start the agent again wherever the task stopped it; "
                                                "retry_subtask / skip_subtask: one FAILED subtask; "
                                                "cancel_subtask: one RUNNING subtask.")],
    subtask_id: Annotated[int | None, Field(ge=1, le=MAX_ID, description="For the *_subtask actions.")] = None,
) -> dict:
    """Apply ``action`` to the task with OCP's rules, then run what it reopened; ends in the task's state."""
    logger = get_run_logger()
    if action.endswith("_subtask") and subtask_id is None:
        raise RequestError(f"action {action!r} needs a subtask_id, got none")
    config = Settings()
    with TaskStore(config.store_url) as store:
        record = _apply(store, task_id, action, subtask_id)
        prefect_run.link(task_id, suffix=f"-{action.replace('_', '-')}")
        logger.info(f"task {task_id}: {action}" + (f" of subtask {subtask_id}" if subtask_id else ""))
        if action == "cancel_subtask":  # the run that owns the subtask kills its command and records the end
            return task_instance(record).to_wire()
        options = RestartOptions.model_validate(dict(record.task.options))
        inventory = load_inventory(record.task.inventory or config.inventory_path)
        record = run_and_ask(store, task_id, inventory, options, config)
    return prefect_run.final_state(record, task_instance(record).to_wire())


def _apply(store: TaskStore, task_id: int, action: Action, subtask_id: int | None) -> TaskRecord:
    if action == "retry":
        return store.retry_task(task_id)
    if action == "rollback":
        return store.rollback_task(task_id)
    return {"retry_subtask": store.retry_subtask, "skip_subtask": store.skip_subtask,
            "cancel_subtask": store.cancel_subtask}[action](task_id, subtask_id)


def run_operation(**parameters) -> dict:
    """Run ``task_operation`` in this process (the CLI) and return the task instance whatever its outcome."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from .restart import _instance_of

    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        return _instance_of(task_operation(**parameters, return_state=True))
