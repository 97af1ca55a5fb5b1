"""OCP's task routes: the task list, a task's detail, a subtask's log, and the task operations (retry, rollback;
retry, skip or cancel one subtask)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from flows.actions import ACTIONS, ActionName
from flows.models import MAX_ID, Envelope, SubtaskInstance, TaskPage, WrappedTaskInstance
from flows.store import TaskStore
from flows.view import (
    DEFAULT_PAGE_SIZE,
    basic_task_instance,
    page,
    spring_page,
    subtask_instance,
    wrapped_task_instance,
)

from ...auth import TASK_READ
from ...launch import Launcher
from ..envelope import ApiFailure, documented, envelope
from ..models import SubtaskLog
from ..params import (
    TASK_SORT,
    PageNumber,
    PageSize,
    SubtaskId,
    TaskId,
    TaskSort,
    TaskStatuses,
    TaskTypeName,
    sort_order,
    split,
)
from ..security import AnyUser, TaskWriter, may_read_task
from ..state import LauncherDep, StoreDep

router = APIRouter(prefix="/api/v2/tasks/instances", tags=["tasks"])
NO_CLUSTERS = "OCP's cluster and tenant filters: no task of ours belongs to a cluster or tenant, so none matches"
# 400 for a state that forbids the operation (OCP's 4007; 4009 rollback, 4010 skip), 409 for a held host or a
# concurrent change.
OPERATION_ERRORS = documented(400, 401, 403, 404, 409)

# ---- operations ----------------------------------------------------------------------------------------------


def operate(
    store: TaskStore, launcher: Launcher, action: ActionName, task_id: int, subtask_id: int | None = None
) -> None:
    """Apply ``action`` (flows/actions.py: OCP's rules, applied by the store, which refuses a state that forbids
    it), then run the flow again for what it reopened unless the action says the owning run finishes it (cancel)."""
    taken = ACTIONS[action]
    taken.apply(store, task_id, subtask_id)
    if taken.reruns:
        _relaunch(store, launcher, task_id)


def _relaunch(store: TaskStore, launcher: Launcher, task_id: int) -> None:
    """Run the flow again for a task an operation has just reopened; if it cannot start, the task is FAILED."""
    task = store.task(task_id)
    try:
        launcher.launch(task_id, list(task.host_ids), task.options, template=task.template)
    except Exception as exc:
        why = f"task {task_id} could not be launched: {type(exc).__name__}: {exc}"
        store.abort_task(task_id, why)
        raise ApiFailure(500, 1003, why) from None


@router.post(
    "/{task_id}/retry",
    response_model=Envelope[WrappedTaskInstance],
    summary="Retry all failed subtasks, then what never ran",
    responses=OPERATION_ERRORS,
)
def retry_task(request: Request, task_id: TaskId, user: TaskWriter, store: StoreDep, launcher: LauncherDep):
    operate(store, launcher, "retry", task_id)
    return envelope(request, wrapped_task_instance(store.load(task_id)).to_wire())


@router.post(
    "/{task_id}/rollback",
    response_model=Envelope[WrappedTaskInstance],
    summary="Undo what ran, in reverse order: the agent runs again wherever it was stopped",
    responses=OPERATION_ERRORS,
)
def rollback_task(request: Request, task_id: TaskId, user: TaskWriter, store: StoreDep, launcher: LauncherDep):
    operate(store, launcher, "rollback", task_id)
    return envelope(request, wrapped_task_instance(store.load(task_id)).to_wire())


@router.post(
    "/{task_id}/subtasks/{subtask_id}/retry",
    response_model=Envelope[SubtaskInstance],
    summary="Retry a failed subtask",
    responses=OPERATION_ERRORS,
)
def retry_subtask(
    request: Request, task_id: TaskId, subtask_id: SubtaskId, user: TaskWriter, store: StoreDep, launcher: LauncherDep
):
    operate(store, launcher, "retry_subtask", task_id, subtask_id)
    record = store.load(task_id)
    return envelope(request, subtask_instance(record.subtask(subtask_id), record.task.executor).to_wire())


@router.post(
    "/{task_id}/subtasks/{subtask_id}/skip",
    response_model=Envelope[None],
    summary="Mark a failed subtask SUCCESSFUL without running it; the task goes on",
    responses=OPERATION_ERRORS,
)
def skip_subtask(
    request: Request, task_id: TaskId, subtask_id: SubtaskId, user: TaskWriter, store: StoreDep, launcher: LauncherDep
):
    operate(store, launcher, "skip_subtask", task_id, subtask_id)
    return envelope(request, None)


@router.post(
    "/{task_id}/subtasks/{subtask_id}/cancel",
    response_model=Envelope[None],
    summary="Cancel a running subtask: its remote command is killed and it ends FAILED",
    responses=OPERATION_ERRORS,
)
def cancel_subtask(
    request: Request, task_id: TaskId, subtask_id: SubtaskId, user: TaskWriter, store: StoreDep, launcher: LauncherDep
):
    operate(store, launcher, "cancel_subtask", task_id, subtask_id)
    return envelope(request, None)


# ---- reads (never writes: the server reaps lapsed leases in the background, see deployments/api/reaper.py) -----


@router.get(
    "/{task_id}",
    response_model=Envelope[WrappedTaskInstance],
    summary="Query details about a task",
    responses=documented(401, 403, 404),
)
def get_task(request: Request, task_id: TaskId, user: AnyUser, store: StoreDep):
    record = store.load(task_id)
    may_read_task(user, record)
    return envelope(request, wrapped_task_instance(record))


@router.get("", response_model=Envelope[TaskPage], summary="Query tasks", responses=documented(400, 401))
def list_tasks(
    request: Request,
    user: AnyUser,
    store: StoreDep,
    page_: PageNumber = 1,
    size: PageSize = DEFAULT_PAGE_SIZE,
    name: Annotated[str | None, Query(max_length=200, description="A part of the task's name, any case")] = None,
    status: TaskStatuses = None,
    task_type: Annotated[TaskTypeName | None, Query(alias="type", description="The task's type")] = None,
    host_id: Annotated[int | None, Query(alias="hostId", ge=1, le=MAX_ID, description="Tasks on this host")] = None,
    sort: TaskSort = None,
    cluster_id: Annotated[int | None, Query(alias="clusterId", ge=1, le=MAX_ID, description=NO_CLUSTERS)] = None,
    cluster_name: Annotated[str | None, Query(alias="cluterName", max_length=200, description=NO_CLUSTERS)] = None,
    tenant_id: Annotated[int | None, Query(alias="tenantId", ge=1, le=MAX_ID, description=NO_CLUSTERS)] = None,
    tenant_name: Annotated[str | None, Query(alias="tenantName", max_length=200, description=NO_CLUSTERS)] = None,
):
    number, size = spring_page(page_, size)
    if any(v is not None for v in (cluster_id, cluster_name, tenant_id, tenant_name)):
        return envelope(request, {"contents": [], "page": page(number, size, 0).to_wire()})
    order = sort_order(sort, TASK_SORT)
    creator = None if user.can(TASK_READ) else user.name  # without TASK:READ, one's own tasks only
    ids, total = store.task_ids(
        statuses=split(status),
        creator=creator,
        name=name,
        host_id=host_id,
        types=[task_type] if task_type else None,
        order=order,
        limit=size,
        offset=(number - 1) * size,
    )
    contents = [basic_task_instance(record).to_wire() for record in store.load_many(ids)]
    return envelope(request, {"contents": contents, "page": page(number, size, total).to_wire()})


@router.get(
    "/{task_id}/subtasks/{subtask_id}/log",
    response_model=Envelope[SubtaskLog],
    summary="Query the log of a subtask",
    responses=documented(401, 403, 404),
)
def subtask_log(request: Request, task_id: TaskId, subtask_id: SubtaskId, user: AnyUser, store: StoreDep):
    record = store.load(task_id)
    may_read_task(user, record)
    if not record.has(subtask_id):
        raise ApiFailure(404, 4001, f"The subtask {subtask_id} does not exist in task {task_id}")
    return envelope(request, {"log": store.log(subtask_id)})
