"""OCP's task operations as a Prefect flow: retry a task, retry / skip / cancel one subtask, roll back — runnable
from the Prefect UI with a typed form, so every operation is a run linked to its task. What each action does is
``flows/actions.py``'s table, shared with the CLI and the API."""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow, get_run_logger
from pydantic import Field

from steps.inventory import MAX_ID, load_inventory

from . import prefect_run
from .actions import ACTIONS, ActionName
from .restart import run_and_ask
from .settings import Settings
from .store import TaskStore
from .view import task_instance

_ACTION_HELP = "; ".join(f"{action.name}: {action.summary}" for action in ACTIONS.values())


@flow(name="ocp-task-operation", log_prints=False, validate_parameters=True)
def task_operation(
    task_id: Annotated[int, Field(ge=1, le=MAX_ID, description="The OCP task (its flow run is named ocp-task-N).")],
    action: Annotated[ActionName, Field(description=_ACTION_HELP + ".")],
    subtask_id: Annotated[int | None, Field(ge=1, le=MAX_ID, description="For the *_subtask actions.")] = None,
) -> dict[str, Any]:
    """Apply ``action`` to the task with OCP's rules, then run what it reopened; ends in the task's state."""
    logger = get_run_logger()
    operation = ACTIONS[action]
    config = Settings()  # a flow run's entry point: here, on a worker, or in the CLI's process
    with TaskStore(config.store_url) as store:
        record = operation.apply(store, task_id, subtask_id)
        prefect_run.link(task_id, suffix=f"-{action.replace('_', '-')}")
        logger.info(f"task {task_id}: {action}" + (f" of subtask {subtask_id}" if subtask_id else ""))
        if not operation.reruns:  # the run that owns the subtask kills its command and records the end
            return task_instance(record).to_wire()
        inventory = load_inventory(record.task.inventory or config.inventory_path)
        record = run_and_ask(store, task_id, inventory, record.task.options, config)
    return prefect_run.final_state(record, task_instance(record).to_wire())  # type: ignore[return-value]  # a State's data
