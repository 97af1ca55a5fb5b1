"""The OCP-compatible HTTP API (FastAPI): batchRestartAgents, task queries, hosts; Basic auth with OCP's roles.

Every response is OCP's envelope: ``{data?, successful, timestamp, duration, status, traceId, server}``, errors
with ``error{code, message}``.
"""


import base64
import binascii
import json
import math
import re
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from flows.errors import OcpRestartError, UnknownHostError
from flows.models import (
    MAX_ID,
    ApiError,
    BatchRestartRequest,
    Envelope,
    ErrorEnvelope,
    Subtask,
    TaskInstance,
    TaskStatus,
    new_trace_id,
    now,
)
from flows.options import RestartOptions
from flows.store import TaskStore
from flows.submit import create_task, executor_address
from flows.view import subtask as subtask_view
from flows.view import task_instance
from steps.inventory import Inventory, load_inventory

from .auth import HOST_READ, HOST_WRITE, TASK_READ, TASK_WRITE, LoginThrottle, User, Users
from .launch import Launcher, make_launcher

_TRACE = re.compile(r"^[0-9a-fA-F]{16}$")
MAX_PAGE_SIZE = 2000
_STATUS_LIST = r"^(RUNNING|FAILED|SUCCESSFUL)(,(RUNNING|FAILED|SUCCESSFUL))*$"


@dataclass
class ApiConfig:
    inventory: str
    users: str
    store_url: str | None = None
    launcher: str = "embedded"


class ApiFailure(Exception):
    """An error answer: HTTP status, OCP code, message."""

    def __init__(self, status: int, code: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


# ---- wire shapes beyond the task instance --------------------------------------------------------------


class Page(BaseModel):
    number: int
    size: int
    totalElements: int
    totalPages: int


class BasicTaskInstance(BaseModel):
    id: int
    name: str
    status: TaskStatus
    type: str
    creator: str
    executor: str
    operation: str
    startTime: str
    taskDefinitionId: int = -1


class TaskPage(BaseModel):
    contents: list[BasicTaskInstance]
    page: Page


class HostView(BaseModel):
    id: int
    name: str
    innerIpAddress: str
    sshPort: int
    status: str
    hostAgentStatus: str | None


class HostPage(BaseModel):
    contents: list[HostView]
    page: Page


class SubtaskLog(BaseModel):
    log: str


# ---- the app ---------------------------------------------------------------------------------------------


def create_app(config: ApiConfig, *, launcher: Launcher | None = None) -> FastAPI:
    inventory: Inventory = load_inventory(config.inventory)
    users = Users(config.users)
    throttle = LoginThrottle()
    store = TaskStore(config.store_url)
    launcher = launcher or make_launcher(config.launcher, config.inventory, store.url)
    server = executor_address()

    app = FastAPI(
        title="ocp-agent-restart",
        version="0.1.0",
        description="OCP-compatible batch restart of OCP agents. HTTP Basic auth; OCP's response envelope.",
    )
    app.state.store, app.state.launcher, app.state.inventory = store, launcher, inventory

    @app.middleware("http")
    async def _clock(request: Request, call_next):
        request.state.started = time.perf_counter()
        header = request.headers.get("x-trace-id", "")
        request.state.trace_id = header.lower() if _TRACE.match(header) else new_trace_id()
        return await call_next(request)

    def envelope(request: Request, data: Any, status: int = 200) -> JSONResponse:
        body = Envelope[Any](
            data=data, timestamp=now(), duration=_elapsed_ms(request), status=status,
            trace_id=request.state.trace_id, server=server,
        ).to_wire()
        if data is None:  # OCP's no-data responses omit the field
            body.pop("data")
        return JSONResponse(body, status_code=status)

    def failure(request: Request, status: int, code: int, message: str, headers: dict | None = None) -> JSONResponse:
        body = ErrorEnvelope(
            timestamp=now(), duration=_elapsed_ms(request), status=status,
            trace_id=getattr(request.state, "trace_id", new_trace_id()), server=server,
            error=ApiError(code=code, message=message),
        ).to_wire()
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(ApiFailure)
    async def _api_failure(request: Request, exc: ApiFailure):
        return failure(request, exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(OcpRestartError)
    async def _domain_error(request: Request, exc: OcpRestartError):
        return failure(request, exc.http_status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body"))
        return failure(request, 400, 1001, f"You must specify a valid value for {field}: {first.get('msg')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:  # OCP answers an unknown route with 400 and this message
            return failure(request, 400, 1003, f"Could not find the {request.method} method for URL {request.url.path}")
        if exc.status_code == 405:
            return failure(request, 405, 1003, f"Request method {request.method} is not supported for URL {request.url.path}",
                           headers=dict(exc.headers or {}))
        return failure(request, exc.status_code, 1003, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        return failure(request, 500, 1003, f"Unhandled exception, type={type(exc).__name__}")

    def authenticated(request: Request) -> User:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic" or not token:
            raise ApiFailure(401, 3000, "You are not logged on. Use HTTP Basic authentication.",
                             {"WWW-Authenticate": 'Basic realm="ocp-restart"'})
        client = request.client.host if request.client else "unknown"
        wait = throttle.retry_after(client)
        if wait > 0:
            raise ApiFailure(429, 0, "Excessive number of requests. Too many failed logins; try again later.",
                             _rate_headers(throttle.limit, 0, wait))
        try:
            name, _, password = base64.b64decode(token, validate=True).decode("utf-8").partition(":")
            user = users.authenticate(name, password)
        except (binascii.Error, UnicodeDecodeError):
            user = None
        if user is None:
            remaining = throttle.failed(client)
            raise ApiFailure(401, 3000, "You are not logged on: wrong user name or password.",
                             {"WWW-Authenticate": 'Basic realm="ocp-restart"',
                              **_rate_headers(throttle.limit, remaining, throttle.window)})
        throttle.succeeded(client)
        return user

    def require(permission: str):
        def check(user: Annotated[User, Depends(authenticated)]) -> User:
            if not user.can(permission):
                raise ApiFailure(403, 3100, f"You are not authorized to perform the corresponding operations ({permission} is needed)")
            return user
        return check

    def may_read_task(user: User, record) -> None:
        if not user.can(TASK_READ) and record.task.creator != user.name:
            raise ApiFailure(403, 3100, "You are not authorized to perform the corresponding operations (TASK:READ is needed)")

    restart_body = {"requestBody": {"required": True, "content": {"application/json": {
        "schema": BatchRestartRequest.model_json_schema(by_alias=True)}}}}

    async def batch_restart(request: Request, user: Annotated[User, Depends(require(HOST_WRITE))]):
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise ApiFailure(415, 1003, f"Content type '{content_type or 'none'}' not supported; use application/json")
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            raise ApiFailure(400, 1003, "Malformed JSON request") from None
        if not isinstance(body, dict):
            raise ApiFailure(400, 1003, "Malformed JSON request: expected an object with hostIds")
        try:
            request_ = BatchRestartRequest.model_validate(body)
        except ValidationError as exc:
            loc = exc.errors()[0]["loc"]
            name = str(loc[0]) if loc and loc[0] in ("batchSize", "maxFailedHosts", "maxFailedPercent") else "hostIds"
            raise ApiFailure(400, 1001, f"You must specify a valid value for {name}: {_first_message(exc)}") from None
        options = RestartOptions(batch_size=request_.batch_size, max_failed_hosts=request_.max_failed_hosts,
                                 max_failed_percent=request_.max_failed_percent)
        # Store writes and the launch block: keep them off the event loop.
        instance = await run_in_threadpool(submit, request_.host_ids, options, user.name)
        return envelope(request, instance.to_wire())

    def submit(host_ids: list[int], options: RestartOptions, creator: str) -> TaskInstance:
        try:
            task_id = create_task(store, inventory, host_ids, options, creator=creator)
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

    for path in ("/compute/hosts/batchRestartAgents", "/api/v2/compute/hosts/batchRestartAgents"):
        app.add_api_route(
            path, batch_restart, methods=["POST"], response_model=Envelope[TaskInstance], openapi_extra=restart_body,
            summary="Batch restart basic OCP Agent processes on a host", tags=["hosts"],
            responses=_errors(400, 401, 403, 404, 409, 415),
        )

    def relaunch(task_id: int) -> None:
        """Run the flow again for a task an operation has just reopened."""
        task = store.load(task_id).task
        try:
            launcher.launch(task_id, list(task.host_ids), RestartOptions.model_validate(dict(task.options)))
        except Exception as exc:
            why = f"task {task_id} could not be launched: {type(exc).__name__}: {exc}"
            store.abort_task(task_id, why)
            raise ApiFailure(500, 1003, why) from None

    TaskId = Annotated[int, Path(ge=1, le=MAX_ID)]
    SubtaskId = Annotated[int, Path(ge=1, le=MAX_ID)]
    Manager = Annotated[User, Depends(require(TASK_WRITE))]

    @app.post("/api/v2/tasks/instances/{task_id}/retry", response_model=Envelope[TaskInstance], tags=["tasks"],
              summary="Retry all failed subtasks, then what never ran", responses=_errors(400, 401, 403, 404, 409))
    def retry_task(request: Request, task_id: TaskId, user: Manager):
        store.retry_task(task_id)
        relaunch(task_id)
        return envelope(request, task_instance(store.load(task_id)).to_wire())

    @app.post("/api/v2/tasks/instances/{task_id}/rollback", response_model=Envelope[TaskInstance], tags=["tasks"],
              summary="Undo what ran, in reverse order: the agent runs again wherever it was stopped",
              responses=_errors(400, 401, 403, 404, 409))
    def rollback_task(request: Request, task_id: TaskId, user: Manager):
        store.rollback_task(task_id)
        relaunch(task_id)
        return envelope(request, task_instance(store.load(task_id)).to_wire())

    @app.post("/api/v2/tasks/instances/{task_id}/subtasks/{subtask_id}/retry", response_model=Envelope[Subtask],
              tags=["tasks"], responses=_errors(400, 401, 403, 404, 409))
    def retry_subtask(request: Request, task_id: TaskId, subtask_id: SubtaskId, user: Manager):
        store.retry_subtask(task_id, subtask_id)
        relaunch(task_id)
        return envelope(request, subtask_view(store.load(task_id).subtask(subtask_id)).to_wire())

    @app.post("/api/v2/tasks/instances/{task_id}/subtasks/{subtask_id}/skip", response_model=Envelope[None],
              tags=["tasks"], summary="Mark a failed subtask SUCCESSFUL without running it; the task goes on",
              responses=_errors(400, 401, 403, 404, 409))
    def skip_subtask(request: Request, task_id: TaskId, subtask_id: SubtaskId, user: Manager):
        store.skip_subtask(task_id, subtask_id)
        relaunch(task_id)
        return envelope(request, None)

    @app.post("/api/v2/tasks/instances/{task_id}/subtasks/{subtask_id}/cancel", response_model=Envelope[None],
              tags=["tasks"], summary="Cancel a running subtask: its remote command is killed and it ends FAILED",
              responses=_errors(400, 401, 403, 404))
    def cancel_subtask(request: Request, task_id: TaskId, subtask_id: SubtaskId, user: Manager):
        store.cancel_subtask(task_id, subtask_id)
        return envelope(request, None)

    @app.get("/api/v2/tasks/instances/{task_id}", response_model=Envelope[TaskInstance], tags=["tasks"],
             responses=_errors(401, 403, 404))
    def get_task(request: Request, task_id: Annotated[int, Path(ge=1, le=MAX_ID)],
                 user: Annotated[User, Depends(authenticated)]):
        store.reap_expired()
        record = store.load(task_id)
        may_read_task(user, record)
        return envelope(request, task_instance(record).to_wire())

    @app.get("/api/v2/tasks/instances", response_model=Envelope[TaskPage], tags=["tasks"], responses=_errors(400, 401))
    def list_tasks(request: Request, user: Annotated[User, Depends(authenticated)],
                   page: Annotated[int, Query(ge=1, le=10**9)] = 1,
                   size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 10,
                   status: Annotated[str | None, Query(max_length=100, pattern=_STATUS_LIST,
                                                       description="comma list: RUNNING,FAILED,SUCCESSFUL")] = None):
        statuses = [s.strip() for s in status.split(",") if s.strip()] if status else None
        bad = [s for s in statuses or [] if s not in TaskStatus.__members__]
        if bad:
            raise ApiFailure(400, 1001, f"You must specify a valid value for status: {bad} is not in {list(TaskStatus.__members__)}")
        creator = None if user.can(TASK_READ) else user.name
        store.reap_expired()
        ids, total = store.task_ids(statuses=statuses, creator=creator, limit=size, offset=(page - 1) * size)
        contents = []
        for task_id in ids:
            t = store.load(task_id).task
            contents.append(BasicTaskInstance(
                id=t.id, name=t.name, status=t.status, type=t.type.value, creator=t.creator,
                executor=t.executor, operation=t.operation.value, startTime=t.start_time).model_dump(mode="json"))
        return envelope(request, {"contents": contents, "page": _page(page, size, total)})

    @app.get("/api/v2/tasks/instances/{task_id}/subtasks/{subtask_id}/log", response_model=Envelope[SubtaskLog],
             tags=["tasks"], responses=_errors(401, 403, 404))
    def subtask_log(request: Request, task_id: Annotated[int, Path(ge=1, le=MAX_ID)],
                    subtask_id: Annotated[int, Path(ge=1, le=MAX_ID)], user: Annotated[User, Depends(authenticated)]):
        record = store.load(task_id)
        may_read_task(user, record)
        if not record.has(subtask_id):
            raise ApiFailure(404, 4001, f"The subtask {subtask_id} does not exist in task {task_id}")
        return envelope(request, {"log": store.log(subtask_id)})

    def host_view(host_id: int) -> dict:
        host = inventory.hosts[host_id]
        locked = store.locks()
        agent = "RESTARTING" if host_id in locked else store.host_agent_statuses().get(host_id)
        return HostView(id=host.id, name=host.name, innerIpAddress=host.address, sshPort=host.ssh_port,
                        status="ONLINE", hostAgentStatus=agent).model_dump()

    @app.get("/api/v2/compute/hosts", response_model=Envelope[HostPage], tags=["hosts"], responses=_errors(400, 401, 403))
    def list_hosts(request: Request, user: Annotated[User, Depends(require(HOST_READ))],
                   page: Annotated[int, Query(ge=1, le=10**9)] = 1,
                   size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 10):
        ids = sorted(inventory.hosts)
        chunk = ids[(page - 1) * size: page * size]
        return envelope(request, {"contents": [host_view(h) for h in chunk], "page": _page(page, size, len(ids))})

    # ":int": a non-numeric segment (e.g. GET .../hosts/batchRestartAgents) is not a host id but another route.
    @app.get("/api/v2/compute/hosts/{host_id:int}", response_model=Envelope[HostView], tags=["hosts"],
             responses=_errors(401, 403, 404))
    def get_host(request: Request, host_id: Annotated[int, Path(ge=1, le=MAX_ID)],
                 user: Annotated[User, Depends(require(HOST_READ))]):
        if host_id not in inventory.hosts:
            raise UnknownHostError([host_id], "the inventory")
        return envelope(request, host_view(host_id))

    def openapi() -> dict:
        """FastAPI documents validation errors as 422; ours are OCP's 400 envelope."""
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            for path in schema["paths"].values():
                for operation in path.values():
                    responses = operation.get("responses", {})
                    if responses.pop("422", None) is not None and "400" not in responses:
                        responses["400"] = {"description": "OCP's error envelope (invalid parameter)",
                                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app


def _rate_headers(limit: int, remaining: int, reset: float) -> dict[str, str]:
    """OCP's throttling headers (RateLimit-Limit/Remaining/Reset), and Retry-After when nothing remains."""
    headers = {"RateLimit-Limit": str(limit), "RateLimit-Remaining": str(remaining), "RateLimit-Reset": str(math.ceil(reset))}
    if remaining == 0:
        headers["Retry-After"] = str(math.ceil(reset))
    return headers


def _page(number: int, size: int, total: int) -> dict:
    return {"number": number, "size": size, "totalElements": total, "totalPages": math.ceil(total / size) if size else 0}


def _elapsed_ms(request: Request) -> int:
    started = getattr(request.state, "started", None)
    return int((time.perf_counter() - started) * 1000) if started else 0


def _first_message(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return str(err["msg"]).removeprefix("Value error, ")


def _errors(*statuses: int) -> dict:
    """Documented error answers: the given ones, 429 wherever credentials are checked, 503 (store down) always."""
    documented = set(statuses) | ({429} if 401 in statuses else set()) | {503}
    return {s: {"model": ErrorEnvelope, "description": "OCP's error envelope"} for s in sorted(documented)}

