"""The agent's task operations: POST batchRestartAgents, batchStopAgents, ``{hostId}/agent/restart`` and
``{hostId}/agent/stop``. Each validates its input, records the task of its template (its hosts locked) and starts
its flow run: the same code, one template each (flows/plan.py TEMPLATES)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from flows.errors import UnknownHostError
from flows.models import BatchRestartRequest, Envelope, TaskInstance
from flows.options import RestartOptions
from flows.plan import BATCH_RESTART, BATCH_STOP, RESTART, STOP, TaskTemplate
from flows.store import TaskStore
from flows.submit import create_task
from flows.view import task_instance
from steps.inventory import Inventory

from ...launch import Launcher
from ..envelope import ApiFailure, documented, envelope
from ..params import HostId
from ..security import HostWriter
from ..state import InventoryDep, LauncherDep, StateDep, StoreDep

router = APIRouter(tags=["hosts"])
_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": BatchRestartRequest.model_json_schema(by_alias=True)}},
    }
}
_OPTIONS = ("batchSize", "maxFailedHosts", "maxFailedPercent")


async def _batch(
    request: Request,
    user: HostWriter,
    store: StoreDep,
    inventory: InventoryDep,
    launcher: LauncherDep,
    state: StateDep,
    template: TaskTemplate,
):
    body = await _restart_request(request)
    options = RestartOptions(
        batch_size=body.batch_size,
        max_failed_hosts=body.max_failed_hosts,
        max_failed_percent=body.max_failed_percent,
    )
    # Store writes and the launch block: keep them off the event loop.
    instance = await run_in_threadpool(
        submit,
        store,
        inventory,
        launcher,
        body.host_ids,
        options,
        creator=user.name,
        executor=state.server,
        template=template,
    )
    return envelope(request, instance.to_wire())


async def batch_restart(
    request: Request, user: HostWriter, store: StoreDep, inventory: InventoryDep, launcher: LauncherDep, state: StateDep
):
    return await _batch(request, user, store, inventory, launcher, state, BATCH_RESTART)


async def batch_stop(
    request: Request, user: HostWriter, store: StoreDep, inventory: InventoryDep, launcher: LauncherDep, state: StateDep
):
    return await _batch(request, user, store, inventory, launcher, state, BATCH_STOP)


async def _single(
    request: Request,
    host_id: int,
    user: HostWriter,
    store: StoreDep,
    inventory: InventoryDep,
    launcher: LauncherDep,
    state: StateDep,
    template: TaskTemplate,
):
    instance = await run_in_threadpool(
        submit,
        store,
        inventory,
        launcher,
        [host_id],
        RestartOptions(),
        creator=user.name,
        executor=state.server,
        template=template,
    )
    return envelope(request, instance.to_wire())


async def restart_agent(
    request: Request,
    host_id: HostId,
    user: HostWriter,
    store: StoreDep,
    inventory: InventoryDep,
    launcher: LauncherDep,
    state: StateDep,
):
    return await _single(request, host_id, user, store, inventory, launcher, state, RESTART)


async def stop_agent(
    request: Request,
    host_id: HostId,
    user: HostWriter,
    store: StoreDep,
    inventory: InventoryDep,
    launcher: LauncherDep,
    state: StateDep,
):
    return await _single(request, host_id, user, store, inventory, launcher, state, STOP)


# OCP's pages use both prefixes. (path, endpoint, summary, has a body)
_ROUTES = (
    ("/compute/hosts/batchRestartAgents", batch_restart, "Batch restart basic OCP Agent processes on a host", True),
    ("/compute/hosts/batchStopAgents", batch_stop, "Batch stop basic OCP Agent processes on hosts", True),
    ("/compute/hosts/{host_id:int}/agent/restart", restart_agent, "Restart basic OCP Agent processes on a host", False),
    ("/compute/hosts/{host_id:int}/agent/stop", stop_agent, "Stop basic OCP Agent processes on a host", False),
)
for _route, _endpoint, _summary, _has_body in _ROUTES:
    for _prefix in ("", "/api/v2"):
        router.add_api_route(
            _prefix + _route,
            _endpoint,
            methods=["POST"],
            response_model=Envelope[TaskInstance],
            openapi_extra=_BODY if _has_body else None,
            summary=_summary,
            responses=documented(400, 401, 403, 404, 409, 415) if _has_body else documented(400, 401, 403, 404, 409),
        )


async def _restart_request(request: Request) -> BatchRestartRequest:
    """The body, read by hand for OCP's answers: 415 for another content type, 400 naming the field at fault."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise ApiFailure(415, 1003, f"Content type '{content_type or 'none'}' not supported; use application/json")
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested deeper than Python recurses
        raise ApiFailure(400, 1003, "Malformed JSON request") from None
    if not isinstance(body, dict):
        raise ApiFailure(400, 1003, "Malformed JSON request: expected an object with hostIds")
    try:
        return BatchRestartRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] and first["loc"][0] in _OPTIONS else "hostIds"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ApiFailure(400, 1001, f"You must specify a valid value for {name}: {message}") from None


def submit(
    store: TaskStore,
    inventory: Inventory,
    launcher: Launcher,
    host_ids: list[int],
    options: RestartOptions,
    *,
    creator: str,
    executor: str,
    template: TaskTemplate = BATCH_RESTART,
) -> TaskInstance:
    """Record the task of ``template`` and start its flow run; the task as it was recorded (roots READY).
    ``executor``: this server's address, as OCP's ``executor`` field shows it."""
    try:
        task_id = create_task(
            store, inventory, host_ids, options, creator=creator, executor=executor, template=template
        )
    except UnknownHostError as exc:  # without the inventory's path: clients need the ids, not our files
        raise UnknownHostError(exc.host_ids, "the inventory") from None
    instance = task_instance(store.load(task_id))  # before the flow moves anything: roots READY
    try:
        launcher.launch(task_id, host_ids, options, template=template.key)
    except Exception as exc:
        why = f"task {task_id} was recorded but could not be launched: {type(exc).__name__}: {exc}"
        store.abort_task(task_id, why)
        raise ApiFailure(500, 1003, why) from None
    return instance
