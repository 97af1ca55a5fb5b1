"""What a flow run shows and does in Prefect, derived from the task store: its link to its task, its final state,
the guard on what a run from the Prefect UI may ask, and the operator's decision when a task fails.

Every function here is a no-op outside a flow run, and none may fail a restart over Prefect's own trouble, except
the guard, which refuses before anything is recorded or touched.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect.client.schemas.objects import FlowRun, State
from prefect.input import RunInput
from prefect.states import Cancelled, Completed, Failed
from pydantic import Field

from steps.runner import is_decimal

from .actions import Decision as DecisionName
from .background import background
from .errors import RequestError
from .models import TaskStatus
from .options import RestartOptions
from .outcome import failed_hosts, outcome_message
from .records import TaskRecord
from .settings import Settings
from .store import TaskStore

log = logging.getLogger(__name__)

TAG_PREFIX = "ocp-task:"
_ATTACHED: contextvars.ContextVar[int | None] = contextvars.ContextVar("ocp_task", default=None)
_CANCELLED: set[Any] = set()  # ids of in-process flow runs cancelled in Prefect (they must end Cancelled)


class TaskFailed(Exception):
    """A flow run's outcome when its task FAILED: Prefect marks the run Failed. ``task`` is the task instance
    (OCP's JSON) — what ``batch_restart_agents(...)`` raises when called from Python."""

    def __init__(self, message: str, task: dict[str, Any]) -> None:
        super().__init__(message)
        self.task = task


# -- the link between a flow run and its task ------------------------------------------------------------------


@contextmanager
def attached(task_id: int) -> Iterator[None]:
    """Run the flow called inside this block for the recorded task ``task_id`` (the CLI, the API's launcher)."""
    token = _ATTACHED.set(task_id)
    try:
        yield
    finally:
        _ATTACHED.reset(token)


def _flow_run() -> FlowRun | None:
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return ctx.flow_run if ctx is not None else None


def linked_task() -> int | None:
    """The task this flow run is for: attached by the caller, or named by the run's ``ocp-task:N`` tag (set by the
    launcher, or by an earlier attempt of this same run)."""
    attached_id = _ATTACHED.get()
    if attached_id is not None:
        return attached_id
    run = _flow_run()
    for tag in run.tags if run is not None else ():
        if tag.startswith(TAG_PREFIX) and is_decimal(tag[len(TAG_PREFIX) :]):
            return int(tag[len(TAG_PREFIX) :])
    return None


def is_retry_of_this_run() -> bool:
    """Whether Prefect is running this flow run again (its Retry button): OCP's retry of the same task."""
    run = _flow_run()
    return bool(run is not None and run.run_count > 1)


def scheduled() -> bool:
    """Whether this flow run was created by a deployment's schedule."""
    run = _flow_run()
    return bool(run is not None and run.auto_scheduled)


def link(task_id: int, suffix: str = "") -> None:
    """Name and tag the flow run after its task (``ocp-task-N``, tag ``ocp-task:N``), so the Prefect UI and OCP's
    task id point at each other and a retry of the run finds its task."""
    from prefect.client.orchestration import get_client

    run = _flow_run()
    if run is None:
        return
    tags = sorted({*run.tags, f"{TAG_PREFIX}{task_id}", "ocp-agent"})
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(run.id, name=f"ocp-task-{task_id}{suffix}", tags=tags)
        run.tags, run.name = tags, f"ocp-task-{task_id}{suffix}"  # and in this process's log lines from now on
    except Exception as exc:  # cosmetic for this attempt; a retry would then start a new task
        log.warning("could not name and tag the flow run for task %s: %s", task_id, exc)


# -- the run's final state ----------------------------------------------------------------------------------------


def final_state(record: TaskRecord, instance: dict[str, Any]) -> State | dict[str, Any]:
    """The flow run's state is the task's outcome: Failed when it FAILED (``TaskFailed`` holds the instance),
    "Completed with isolated hosts" when a failure threshold let it succeed without some hosts, else Completed."""
    message = outcome_message(record)
    run = _flow_run()
    if run is not None and run.id in _CANCELLED:  # Prefect holds it CANCELLING until it ends Cancelled
        _CANCELLED.discard(run.id)
        return Cancelled(message=message, data=TaskFailed(message, instance))
    if record.task.status is TaskStatus.FAILED:
        return Failed(message=message, data=TaskFailed(message, instance))
    if record.task.status is TaskStatus.SUCCESSFUL and failed_hosts(record):
        return Completed(name="Completed with isolated hosts", message=message, data=instance)
    return instance


def settle_stale_runs(store: TaskStore, limit: int = 50) -> list[str]:
    """Give the task's outcome to flow runs Prefect still shows Pending, Running or Crashed although their task has
    ended in the store: their process lost Prefect's API before it could report (#22). Asked beside every
    run, so a later run on the same server puts them right. Returns what it settled (``ocp-task-N: STATE``)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    stale = FlowRunFilter(
        tags=FlowRunFilterTags(all_=["ocp-agent"]),
        state=FlowRunFilterState(
            type=FlowRunFilterStateType(any_=[StateType.PENDING, StateType.RUNNING, StateType.CRASHED])
        ),
    )
    current = _flow_run()
    settled = []
    with get_client(sync_client=True) as client:
        for run in client.read_flow_runs(flow_run_filter=stale, limit=limit):
            ids = [t[len(TAG_PREFIX) :] for t in run.tags if t.startswith(TAG_PREFIX)]
            task_ids = [int(i) for i in ids if is_decimal(i)]
            if not task_ids or (current is not None and run.id == current.id):
                continue
            try:
                record = store.load(task_ids[0])
            except Exception:  # a task this store does not hold (another store, pruned): not ours to settle
                continue
            if record.task.status is TaskStatus.RUNNING:
                continue
            message = f"{outcome_message(record)} (set from the task store: the run's process lost Prefect's API)"
            if record.task.status is TaskStatus.FAILED:
                state: State = Failed(message=message)
            elif failed_hosts(record):
                state = Completed(name="Completed with isolated hosts", message=message)
            else:
                state = Completed(message=message)
            client.set_flow_run_state(run.id, state, force=True)
            settled.append(f"{run.name}: {state.name}")
    return settled


# -- Prefect's API itself ------------------------------------------------------------------------------------------


def api_reachable(timeout: float = 2.0) -> bool:
    """Whether Prefect's API answers its health check within ``timeout`` s (True without a configured API: an
    in-process server). Asked before the run's extras, so that a server gone mid-run (#22) costs one bounded probe
    instead of the client's retries (~60 s per call)."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return True
    try:
        return httpx.get(f"{url.rstrip('/')}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


# -- Cancel of a run no worker watches ---------------------------------------------------------------------------


@contextmanager
def cancel_watch(on_cancel: Callable[[str], None], interval: float = 1.0) -> Iterator[None]:
    """Prefect's Cancel for a flow run that runs in this process (the CLI, the API's embedded launcher): nothing
    else watches it, so poll its state and call ``on_cancel(reason)`` once it is CANCELLING; the run then ends
    Cancelled (``final_state``). A worker's runs get Cancel as SIGTERM instead."""
    run = _flow_run()
    if run is None or run.deployment_id is not None:
        yield
        return
    from prefect.client.orchestration import get_client

    def watch(stop: threading.Event) -> None:
        with get_client(sync_client=True) as client:
            while not stop.wait(interval):
                try:
                    state = client.read_flow_run(run.id).state
                except Exception:  # Prefect unreachable for a moment: the run goes on
                    continue
                if state is not None and state.is_cancelling():
                    _CANCELLED.add(run.id)
                    on_cancel("the flow run was cancelled in Prefect")
                    return

    with background(watch, name="cancel-watch"):
        yield


# -- what a run from the Prefect UI may ask ---------------------------------------------------------------------


def guard(inventory: str | None, options: RestartOptions, config: Settings) -> None:
    """Refuse a deployment run that widens what its deployment allows: another inventory than the deployment's
    (unless inside $OCP_RESTART_INVENTORY_DIR), or trusting new host keys where the deployment does not."""
    run = _flow_run()
    if run is None or run.deployment_id is None or _ATTACHED.get() is not None:
        return
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        allowed = client.read_deployment(run.deployment_id).parameters or {}
    fixed = allowed.get("inventory")
    if inventory and inventory != fixed:
        where = config.inventory_dir
        inside = where is not None and Path(inventory).expanduser().resolve().is_relative_to(
            where.expanduser().resolve()
        )
        if not inside:
            raise RequestError(
                f"inventory {inventory!r} is refused: this deployment runs with "
                f"{fixed or 'the worker default inventory'}"
                + (
                    f", or an inventory under {where}"
                    if where
                    else "; set OCP_RESTART_INVENTORY_DIR on the worker to allow others"
                )
                + ". Nothing was executed."
            )
    if (
        options.accept_new_host_keys
        and not RestartOptions.model_validate(allowed.get("options") or {}).accept_new_host_keys
    ):
        raise RequestError(
            "accept_new_host_keys is refused: this deployment does not trust new host keys "
            "(register it with that option to allow it). Nothing was executed."
        )


# -- asking the operator ----------------------------------------------------------------------------------------


class Decision(RunInput):
    """What to do with the FAILED task (the form Prefect's UI shows on a paused run)."""

    action: DecisionName = Field(
        description="retry: run the failed subtasks again; skip: mark them SUCCESSFUL without running and go on; "
        "rollback: start the agent again wherever it was stopped; stop: leave the task FAILED."
    )


def ask_operator(record: TaskRecord, timeout: int) -> DecisionName:
    """Pause the flow run and wait for the operator's Decision; "stop" when the pause times out."""
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

    try:
        decision = pause_flow_run(
            wait_for_input=Decision.with_initial_data(description=outcome_message(record), action="retry"),
            timeout=timeout,
            poll_interval=2,
        )
    except FlowPauseTimeout:
        return "stop"
    return decision.action
