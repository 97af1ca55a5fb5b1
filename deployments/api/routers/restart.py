"""POST batchRestartAgents: validate the body, record the task (its hosts locked), start its flow run."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from flows.errors import UnknownHostError
from flows.models import BatchRestartRequest, Envelope, TaskInstance
from flows.options import RestartOptions
from flows.store import TaskStore
from flows.submit import create_task
from flows.view import task_instance
from steps.inventory import Inventory

from ...launch import Launcher
from ..envelope import ApiFailure, documented, envelope
from ..security import HostWriter
from ..state import InventoryDep, LauncherDep, StateDep, StoreDep

router = APIRouter(tags=["hosts"])
PATHS = ("/compute/hosts/batchRestartAgents", "/api/v2/compute/hosts/batchRestartAgents")  # OCP's pages use both
_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": BatchRestartRequest.model_json_schema(by_alias=True)}},
    }
}
_OPTIONS = ("batchSize", "maxFailedHosts", "maxFailedPercent")


async def batch_restart(
    request: Request, user: HostWriter, store: StoreDep, inventory: InventoryDep, launcher: LauncherDep, state: StateDep
):
    restart = await _restart_request(request)
    options = RestartOptions(
        batch_size=restart.batch_size,
        max_failed_hosts=restart.max_failed_hosts,
        max_failed_percent=restart.max_failed_percent,
    )
    # Store writes and the launch block: keep them off the event loop.
    instance = await run_in_threadpool(
        submit, store, inventory, launcher, restart.host_ids, options, creator=user.name, executor=state.server
    )
    return envelope(request, instance.to_wire())


for _path in PATHS:
    router.add_api_route(
        _path,
        batch_restart,
        methods=["POST"],
        response_model=Envelope[TaskInstance],
        openapi_extra=_BODY,
        summary="Batch restart basic OCP Agent processes on a host",
        responses=documented(400, 401, 403, 404, 409, 415),
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
) -> TaskInstance:
    """Record the task and start its flow run; the task as it was recorded (roots READY). ``executor``: this
    server's address, as OCP's ``executor`` field shows it."""
    try:
        task_id = create_task(store, inventory, host_ids, options, creator=creator, executor=executor)
    except UnknownHostError as exc:  # without the inventory's path: clients need the ids, not our files
        raise UnknownHostError(exc.host_ids, "the inventory") from None
    instance = task_instance(store.load(task_id))  # before the flow moves anything: roots READY
    try:
        launcher.launch(task_id, host_ids, options)
    except Exception as exc:
        why = f"task {task_id} was recorded but could not be launched: {type(exc).__name__}: {exc}"
        store.abort_task(task_id, why)
        raise ApiFailure(500, 1003, why) from None
    return instance
