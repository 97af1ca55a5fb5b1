"""The OCP-compatible HTTP API (FastAPI): batchRestartAgents, task queries and operations, hosts and their agent,
OCP's probes; HTTP Basic or OCP access-key authentication with OCP's roles.

Every response is OCP's envelope: ``{data?, successful, timestamp, duration, status, traceId, server}``, errors
with ``error{code, message}`` — except OCP's probes, which answer bare as OCP does (``/api/v2/time`` the time as
text, ``/api/v2/info`` an object).
"""


import base64
import binascii
import importlib.metadata
import json
import math
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, StringConstraints, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from flows.errors import OcpRestartError, UnknownHostError
from flows.models import (
    MAX_ID,
    ApiError,
    BatchRestartRequest,
    Envelope,
    ErrorEnvelope,
    HostAgent,
    HostAgentProcessPage,
    SubtaskInstance,
    TaskInstance,
    TaskPage,
    WrappedTaskInstance,
    format_time,
    new_trace_id,
    now,
)
from flows.options import RestartOptions
from flows.settings import Settings
from flows.store import TaskStore
from flows.submit import create_task, executor_address
from flows.view import (
    DEFAULT_PAGE_SIZE,
    basic_task_instance,
    host_agent,
    page,
    spring_page,
    spring_sort,
    subtask_instance,
    task_instance,
    wrapped_task_instance,
)
from steps.inventory import Host, Inventory, load_inventory

from .auth import (
    HOST_READ,
    HOST_WRITE,
    SIGNED_SCHEME,
    TASK_READ,
    TASK_WRITE,
    LoginThrottle,
    SignedRequest,
    User,
    Users,
    client_address,
    date_error,
    sign,
    signature_matches,
    strings_to_sign,
    trusted_networks,
)
from .launch import Launcher, make_launcher

_TRACE = re.compile(r"^[0-9a-fA-F]{16}$")
INT32 = 2**31 - 1
_DIRECTION = "(,([aA][sS][cC]|[dD][eE][sS][cC]))?"
TASK_SORT = {"id": "id", "name": "name", "status": "status", "type": "type", "createTime": "create_time",
             "startTime": "start_time", "finishTime": "finish_time"}
HOST_SORT = {"id": "id", "name": "name", "innerIpAddress": "address"}
TASK_STATUSES = ("RUNNING", "FAILED", "SUCCESSFUL")
TaskTypeName = Literal["MANUAL", "SYS_ONECE", "SCHEDULED", "SYS_SCHEDULED"]  # as OCP's task list spells them [sic]
HOST_STATUSES = ("NEW", "AVAILABLE", "ONLINE", "OFFLINE", "DELETING")
SERVICE_TYPES = ("OB_CLUSTER", "OB_PROXY", "OCP_AGENT", "BACKUP_AGENT", "RESTORE_AGENT", "BACKUP_RESTORE_AGENT", "OMS")
CHALLENGE = {"WWW-Authenticate": 'Basic realm="ocp-restart"'}
NO_CLUSTERS = "OCP's cluster and tenant filters: no task of ours belongs to a cluster or tenant, so none matches"


def _comma_list(values: tuple[str, ...]) -> str:
    """A pattern for one value of an OCP StringArray parameter: a value, or a comma list of them."""
    one = "(" + "|".join(values) + ")"
    return f"^{one}(,{one})*$"


def _sort_pattern(fields: dict[str, str]) -> str:
    one = "(" + "|".join(fields) + ")"
    return f"^{one}(,{one})*{_DIRECTION}$"


# OCP's paging parameters: Spring's one-indexed paging (see flows.view.spring_page); any 32-bit integer is taken.
PageNumber = Annotated[int, Query(alias="page", ge=-INT32 - 1, le=INT32,
                                  description="The page, from 1; 0 or less is the first page.")]
PageSize = Annotated[int, Query(ge=-INT32 - 1, le=INT32,
                                description="Items per page (default 10); 0 or less is 10, above 2000 is 2000.")]


def _list_param(values: tuple[str, ...], what: str, alias: str | None = None):
    """An OCP StringArray query parameter: repeated (``status=A&status=B``) or a comma list (``status=A,B``)."""
    item = Annotated[str, StringConstraints(pattern=_comma_list(values))]
    return Annotated[list[item] | None, Query(alias=alias, description=f"{what}: {', '.join(values)}; repeated or "
                                                                       "comma-separated")]


def _sort_param(fields: dict[str, str]):
    item = Annotated[str, StringConstraints(pattern=_sort_pattern(fields))]
    return Annotated[list[item] | None, Query(description=f"Spring's sort: one of {', '.join(fields)}, optionally "
                                                          "followed by ,asc or ,desc; repeatable")]


TaskStatuses = _list_param(TASK_STATUSES, "Task statuses")
TaskSort = _sort_param(TASK_SORT)
HostStatuses = _list_param(HOST_STATUSES, "Host statuses")
HostSort = _sort_param(HOST_SORT)
IncludedServices = _list_param(SERVICE_TYPES, "Only hosts running a service of these types", "includedServiceType")
ExcludedServices = _list_param(SERVICE_TYPES, "No hosts running a service of these types", "excludedServiceType")


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


# ---- wire shapes beyond flows.models -----------------------------------------------------------------------


class ServiceSummary(BaseModel):
    name: str
    version: str | None = None
    type: str
    softwarePackageId: int | None = None


class HostView(BaseModel):
    id: int
    name: str
    innerIpAddress: str
    sshPort: int
    status: str
    hostAgentStatus: str | None
    services: list[ServiceSummary]


class PageModel(BaseModel):
    number: int
    size: int
    totalElements: int
    totalPages: int


class HostPage(BaseModel):
    contents: list[HostView]
    page: PageModel


class SubtaskLog(BaseModel):
    log: str


class Info(BaseModel):
    """OCP's ``/api/v2/info`` (bare, not in the envelope). The Java fields are null: this is not a Java build."""

    name: str
    group: str
    artifact: str
    buildTime: str | None
    buildVersion: str
    buildJavaVersion: str | None = None
    springBootVersion: str | None = None
    server: str


AGENT_SERVICE = ServiceSummary(name="ocp_agent", type="OCP_AGENT")


# ---- the app ---------------------------------------------------------------------------------------------


def create_app(config: ApiConfig, *, launcher: Launcher | None = None) -> FastAPI:
    inventory: Inventory = load_inventory(config.inventory)
    users = Users(config.users)
    throttle = LoginThrottle(Settings().login_limit)
    proxies = trusted_networks(Settings().trusted_proxies)
    store = TaskStore(config.store_url)
    launcher = launcher or make_launcher(config.launcher, config.inventory, store.url)
    server = executor_address()

    app = FastAPI(
        title="ocp-agent-restart",
        version=VERSION,
        description="OCP-compatible batch restart of OCP agents. HTTP Basic auth or OCP's access-key signature "
                    f"(Authorization: {SIGNED_SCHEME} AK:SIGNATURE, with Date); OCP's response envelope.",
    )
    app.state.store, app.state.launcher, app.state.inventory = store, launcher, inventory

    @app.middleware("http")
    async def _clock(request: Request, call_next):
        request.state.started = time.perf_counter()
        header = request.headers.get("x-trace-id", "")
        request.state.trace_id = header.lower() if _TRACE.match(header) else new_trace_id()
        return await call_next(request)

    def envelope(request: Request, data: Any, status: int = 200) -> Response:
        """OCP's envelope around ``data`` (a model or plain JSON data), serialized by pydantic in one pass: a
        5,004-subtask task detail costs 27 ms of CPU this way, 64 ms as a dict through json.dumps."""
        body = Envelope[Any](
            data=data, timestamp=now(), duration=_elapsed_ms(request), status=status,
            trace_id=request.state.trace_id, server=server,
        )
        # OCP's no-data responses omit the field.
        content = body.model_dump_json(by_alias=True, exclude={"data"} if data is None else None)
        return Response(content, status_code=status, media_type="application/json")

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
        shown = repr(first.get("input"))
        shown = shown if len(shown) <= 100 else shown[:100] + "..."
        return failure(request, 400, 1001, f"You must specify a valid value for {field}: {first.get('msg')} (got {shown})")

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

    # ---- who is asking -----------------------------------------------------------------------------------------

    def client_of(request: Request) -> str:
        peer = request.client.host if request.client else "unknown"
        return client_address(peer, request.headers.getlist("x-forwarded-for"), proxies)

    def refuse(who: str, client: str, why: str) -> None:
        """A failed login: counted against (who, client), answered 401 with the attempts left."""
        remaining = throttle.failed(who, client)
        raise ApiFailure(401, 3000, f"You are not logged on: {why}.",
                         {**CHALLENGE, **_rate_headers(throttle.limit, remaining, throttle.window)})

    def not_throttled(who: str, client: str) -> None:
        wait = throttle.retry_after(who, client)
        if wait > 0:
            raise ApiFailure(429, 0, "Excessive number of requests. Too many failed logins; try again later.",
                             _rate_headers(throttle.limit, 0, wait))

    def basic_login(client: str, token: str) -> User:
        try:
            name, colon, password = base64.b64decode(token, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            name, colon, password = "", "", ""
        not_throttled(name, client)
        user = users.authenticate(name, password) if colon else None
        if user is None:
            refuse(name, client, "wrong user name or password")
        throttle.succeeded(name, client)
        return user

    def signed_login(request: Request, client: str, scheme: str, token: str, body: bytes) -> User:
        """OCP's access-key signature (see deployments/auth.py)."""
        if scheme != SIGNED_SCHEME:
            raise ApiFailure(401, 3000, f"You are not logged on: the signature algorithm of {scheme!r} is not "
                                        f"supported; use {SIGNED_SCHEME}", CHALLENGE)
        key_id, colon, signature = token.partition(":")
        if not (colon and key_id and signature):
            raise ApiFailure(401, 3000, f"You are not logged on: expected Authorization: {SIGNED_SCHEME} "
                                        "ACCESS_KEY_ID:SIGNATURE", CHALLENGE)
        found = users.access_key(key_id)
        who = found.user.name if found else f"access key {key_id[:64]}"
        not_throttled(who, client)
        stale = date_error(request.headers.get("date", ""))
        if stale:
            refuse(who, client, stale)
        signed = SignedRequest(
            method=request.method, path=request.scope.get("raw_path", b"").decode("latin-1") or request.url.path,
            query=request.scope.get("query_string", b"").decode("latin-1"), body=body,
            content_type=request.headers.get("content-type", ""), date=request.headers.get("date", ""),
            host=request.headers.get("host", ""), ocp_headers=tuple(request.headers.items()),
        )
        if found is None:
            sign(_DUMMY_SECRET, strings_to_sign(signed)[0])  # the same work as a known key
            refuse(who, client, f"no user holds the access key {key_id[:64]!r}")
        if not signature_matches(found.secret, signature, signed):
            refuse(who, client, "the signature does not match the request; the server signed "
                                f"{strings_to_sign(signed)[0]!r} (with the body's MD5 in hex, if any, and the "
                                "query sorted)")
        throttle.succeeded(who, client)
        return found.user

    async def authenticated(request: Request) -> User:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        client = client_of(request)
        if scheme.lower() == "basic" and token:
            return await run_in_threadpool(basic_login, client, token.strip())
        if scheme.upper().startswith("OCP-ACCESS-KEY-"):
            too_big = _unbounded_body(request)
            if too_big:
                raise ApiFailure(401, 3000, f"You are not logged on: {too_big}", CHALLENGE)
            body = await request.body()
            return await run_in_threadpool(signed_login, request, client, scheme, token.strip(), body)
        raise ApiFailure(401, 3000, "You are not logged on. Use HTTP Basic authentication or an OCP access key "
                                    f"(Authorization: {SIGNED_SCHEME} ACCESS_KEY_ID:SIGNATURE).", CHALLENGE)

    def require(permission: str):
        def check(user: Annotated[User, Depends(authenticated)]) -> User:
            if not user.can(permission):
                raise ApiFailure(403, 3100, f"You are not authorized to perform the corresponding operations ({permission} is needed)")
            return user
        return check

    def may_read_task(user: User, record) -> None:
        if not user.can(TASK_READ) and record.task.creator != user.name:
            raise ApiFailure(403, 3100, "You are not authorized to perform the corresponding operations (TASK:READ is needed)")

    # ---- batchRestartAgents ------------------------------------------------------------------------------------

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

    # ---- tasks -------------------------------------------------------------------------------------------------

    def relaunch(task_id: int) -> None:
        """Run the flow again for a task an operation has just reopened."""
        task = store.load(task_id).task
        try:
            launcher.launch(task_id, list(task.host_ids), RestartOptions.model_validate(dict(task.options)))
        except Exception as exc:
            why = f"task {task_id} could not be launched: {type(exc).__name__}: {exc}"
            store.abort_task(task_id, why)
            raise ApiFailure(500, 1003, why) from None

    def detail(task_id: int) -> dict:
        return wrapped_task_instance(store.load(task_id)).to_wire()

    TaskId = Annotated[int, Path(ge=1, le=MAX_ID)]
    SubtaskId = Annotated[int, Path(ge=1, le=MAX_ID)]
    Manager = Annotated[User, Depends(require(TASK_WRITE))]
    Anyone = Annotated[User, Depends(authenticated)]
    # 400 for a state that forbids the operation (OCP's 4007; 4009 rollback, 4010 skip), 409 for a held host or
    # a concurrent change.
    operation_errors = _errors(400, 401, 403, 404, 409)

    @app.post("/api/v2/tasks/instances/{task_id}/retry", response_model=Envelope[WrappedTaskInstance], tags=["tasks"],
              summary="Retry all failed subtasks, then what never ran", responses=operation_errors)
    def retry_task(request: Request, task_id: TaskId, user: Manager):
        store.retry_task(task_id)
        relaunch(task_id)
        return envelope(request, detail(task_id))

    @app.post("/api/v2/tasks/instances/{task_id}/rollback", response_model=Envelope[WrappedTaskInstance],
              tags=["tasks"], summary="Undo what ran, in reverse order: the agent runs again wherever it was stopped",
              responses=operation_errors)
    def rollback_task(request: Request, task_id: TaskId, user: Manager):
        store.rollback_task(task_id)
        relaunch(task_id)
        return envelope(request, detail(task_id))

    @app.post("/api/v2/tasks/instances/{task_id}/subtasks/{subtask_id}/retry", response_model=Envelope[SubtaskInstance],
              tags=["tasks"], summary="Retry a failed subtask", responses=operation_errors)
    def retry_subtask(request: Request, task_id: TaskId, subtask_id: SubtaskId, user: Manager):
        store.retry_subtask(task_id, subtask_id)
        relaunch(task_id)
        record = store.load(task_id)
        return envelope(request, subtask_instance(record.subtask(subtask_id), record.task.executor).to_wire())

    @app.post("/api/v2/tasks/instances/{task_id}/subtasks/{subtask_id}/skip", response_model=Envelope[None],
              tags=["tasks"], summary="Mark a failed subtask SUCCESSFUL without running it; the task goes on",
              responses=operation_errors)
    def skip_subtask(request: Request, task_id: TaskId, subtask_id: SubtaskId, user: Manager):
        store.skip_subtask(task_id, subtask_id)
        relaunch(task_id)
        return envelope(request, None)

    @app.post("/api/v2/tasks/instances/{task_id}/subtasks/{subtask_id}/cancel", response_model=Envelope[None],
              tags=["tasks"], summary="Cancel a running subtask: its remote command is killed and it ends FAILED",
              responses=operation_errors)
    def cancel_subtask(request: Request, task_id: TaskId, subtask_id: SubtaskId, user: Manager):
        store.cancel_subtask(task_id, subtask_id)
        return envelope(request, None)

    @app.get("/api/v2/tasks/instances/{task_id}", response_model=Envelope[WrappedTaskInstance], tags=["tasks"],
             summary="Query details about a task", responses=_errors(401, 403, 404))
    def get_task(request: Request, task_id: TaskId, user: Anyone):
        store.reap_expired()
        record = store.load(task_id)
        may_read_task(user, record)
        return envelope(request, wrapped_task_instance(record))

    @app.get("/api/v2/tasks/instances", response_model=Envelope[TaskPage], tags=["tasks"], summary="Query tasks",
             responses=_errors(400, 401))
    def list_tasks(
        request: Request, user: Anyone, page_: PageNumber = 1,
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
        statuses = _split(status)
        order = _order(sort, TASK_SORT)
        creator = None if user.can(TASK_READ) else user.name
        store.reap_expired()
        ids, total = store.task_ids(statuses=statuses, creator=creator, name=name, host_id=host_id,
                                    types=[task_type] if task_type else None, order=order,
                                    limit=size, offset=(number - 1) * size)
        contents = [basic_task_instance(record).to_wire() for record in store.load_many(ids)]
        return envelope(request, {"contents": contents, "page": page(number, size, total).to_wire()})

    @app.get("/api/v2/tasks/instances/{task_id}/subtasks/{subtask_id}/log", response_model=Envelope[SubtaskLog],
             tags=["tasks"], summary="Query the log of a subtask", responses=_errors(401, 403, 404))
    def subtask_log(request: Request, task_id: TaskId, subtask_id: SubtaskId, user: Anyone):
        record = store.load(task_id)
        may_read_task(user, record)
        if not record.has(subtask_id):
            raise ApiFailure(404, 4001, f"The subtask {subtask_id} does not exist in task {task_id}")
        return envelope(request, {"log": store.log(subtask_id)})

    # ---- hosts and their agent ---------------------------------------------------------------------------------

    def agent_status(host_id: int, locks: dict[int, int], statuses: dict[int, str]) -> str | None:
        """RESTARTING while a task holds the host, else the last status a restart saw (None before the first)."""
        return "RESTARTING" if host_id in locks else statuses.get(host_id)

    def host_views(hosts: list[Host]) -> list[dict]:
        locks, statuses = store.locks(), store.host_agent_statuses()
        return [HostView(id=h.id, name=h.name, innerIpAddress=h.address, sshPort=h.ssh_port, status="ONLINE",
                         hostAgentStatus=agent_status(h.id, locks, statuses), services=[AGENT_SERVICE]).model_dump()
                for h in hosts]

    def known_host(host_id: int) -> Host:
        if host_id not in inventory.hosts:
            raise UnknownHostError([host_id], "the inventory")
        return inventory.hosts[host_id]

    HostReader = Annotated[User, Depends(require(HOST_READ))]
    HostId = Annotated[int, Path(ge=1, le=MAX_ID)]

    @app.get("/api/v2/compute/hosts", response_model=Envelope[HostPage], tags=["hosts"], summary="Query hosts",
             responses=_errors(400, 401, 403))
    def list_hosts(
        request: Request, user: HostReader, page_: PageNumber = 1,
        size: PageSize = DEFAULT_PAGE_SIZE,
        status: HostStatuses = None,
        keyword: Annotated[str | None, Query(max_length=200, description="A part of the host's name, address or a "
                                                                         "service's name, any case")] = None,
        included: IncludedServices = None,
        excluded: ExcludedServices = None,
        sort: HostSort = None,
    ):
        number, size = spring_page(page_, size)
        hosts = _sorted_hosts(list(inventory.hosts.values()), _order(sort, HOST_SORT))
        views = [v for v in host_views(hosts) if _host_matches(v, _split(status), keyword, _split(included),
                                                                 _split(excluded))]
        chunk = views[(number - 1) * size: number * size]
        return envelope(request, {"contents": chunk, "page": page(number, size, len(views)).to_wire()})

    # ":int": a non-numeric segment (e.g. GET .../hosts/batchRestartAgents) is not a host id but another route.
    @app.get("/api/v2/compute/hosts/{host_id:int}", response_model=Envelope[HostView], tags=["hosts"],
             summary="Query details about a host", responses=_errors(401, 403, 404))
    def get_host(request: Request, host_id: HostId, user: HostReader):
        return envelope(request, host_views([known_host(host_id)])[0])

    def agent_of(host: Host) -> HostAgent:
        locks, statuses = store.locks(), store.host_agent_statuses()
        stored = store.host_agent_status(host.id)
        sighting = store.last_pids(host.id)
        return host_agent(
            host_id=host.id, address=host.address, user=host.user, agent_home=host.agent_home,
            status=agent_status(host.id, locks, statuses), pids=sighting.pids if sighting else {},
            seen=(sighting.seen or format_time(now())) if sighting else None,
            stopped=bool(sighting and sighting.stopped),
            available=stored[1] if stored and stored[0] == "AVAILABLE" else None,
        )

    def get_agent(request: Request, host_id: HostId, user: HostReader):
        store.reap_expired()
        return envelope(request, agent_of(known_host(host_id)).to_wire())

    def list_agent_processes(request: Request, host_id: HostId, user: HostReader,
                             page_: PageNumber = 1,
                             size: PageSize = DEFAULT_PAGE_SIZE):
        number, size = spring_page(page_, size)
        store.reap_expired()
        processes = agent_of(known_host(host_id)).to_wire()["processes"]
        chunk = processes[(number - 1) * size: number * size]
        return envelope(request, {"contents": chunk, "page": page(number, size, len(processes)).to_wire()})

    for prefix in ("/api/v2", ""):  # OCP's agent pages write the path without /api/v2, their samples with it
        app.add_api_route(f"{prefix}/compute/hosts/{{host_id:int}}/agent", get_agent, methods=["GET"],
                          response_model=Envelope[HostAgent], tags=["hosts"], responses=_errors(401, 403, 404),
                          summary="Query OCP Agent details on a host: its status, and its processes' pids as last "
                                  "seen on the host")
        app.add_api_route(f"{prefix}/compute/hosts/{{host_id:int}}/agent/processes", list_agent_processes,
                          methods=["GET"], response_model=Envelope[HostAgentProcessPage], tags=["hosts"],
                          responses=_errors(400, 401, 403, 404), summary="Query OCP Agent processes on a host")

    # ---- OCP's probes ------------------------------------------------------------------------------------------

    @app.get("/api/v2/time", response_class=PlainTextResponse, tags=["probes"], responses=_errors(),
             summary="Query the OCP server time (no authentication; the time as text, as OCP answers it)")
    def server_time() -> PlainTextResponse:
        return PlainTextResponse(format_time(now()))

    @app.get("/api/v2/info", response_model=Info, tags=["probes"], responses=_errors(401),
             summary="Query the basic information of the application (bare, as OCP answers it)")
    def info(user: Anyone) -> JSONResponse:
        return JSONResponse(Info(name=NAME, group=NAME, artifact=NAME, buildTime=BUILD_TIME, buildVersion=VERSION,
                                 server=server).model_dump())

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


NAME = "ocp-agent-restart"


def _distribution() -> tuple[str, str | None]:
    """This package's version, and when this build was installed (OCP's buildVersion and buildTime)."""
    try:
        version = importlib.metadata.version(NAME)
    except importlib.metadata.PackageNotFoundError:
        version = "0.0.0"
    try:
        return version, format_time(datetime.fromtimestamp(os.stat(__file__).st_mtime).astimezone())
    except OSError:
        return version, None


VERSION, BUILD_TIME = _distribution()
_DUMMY_SECRET = "not-a-secret-0123456789"  # signs for unknown access keys, so they cost what known ones do


MAX_SIGNED_BODY = 1 << 20  # a signed request's body is read before its sender is known: at most 1 MiB


def _unbounded_body(request: Request) -> str | None:
    """Why a signed request's body is not read to check its MD5 (chunked, or over MAX_SIGNED_BODY); None if it is."""
    if request.headers.get("transfer-encoding"):
        return "a signed request must send its body with a Content-Length, not chunked"
    declared = request.headers.get("content-length", "0")
    if not declared.isdigit() or int(declared) > MAX_SIGNED_BODY:
        return f"a signed request's body is at most {MAX_SIGNED_BODY} bytes, got Content-Length {declared[:20]!r}"
    return None


def _split(values: list[str] | None) -> list[str] | None:
    """OCP's StringArray parameters: repeated values and comma lists, as one list (None when not given)."""
    return [item for value in values for item in value.split(",")] if values else None


def _order(sort: list[str] | None, fields: dict[str, str]) -> list[tuple[str, bool]]:
    try:
        return spring_sort(sort or [], fields)
    except ValueError as exc:
        raise ApiFailure(400, 1001, f"You must specify a valid value for sort: {exc}") from None


def _sorted_hosts(hosts: list[Host], order: list[tuple[str, bool]]) -> list[Host]:
    """Hosts by id, then re-sorted by each key from the last to the first (a stable multi-key sort)."""
    hosts = sorted(hosts, key=lambda h: h.id)
    for column, ascending in reversed(order):
        hosts.sort(key=lambda h: getattr(h, column), reverse=not ascending)
    return hosts


def _host_matches(view: dict, statuses: list[str] | None, keyword: str | None, included: list[str] | None,
                  excluded: list[str] | None) -> bool:
    types = {service["type"] for service in view["services"]}
    words = [view["name"], view["innerIpAddress"], *(service["name"] for service in view["services"])]
    return ((not statuses or view["status"] in statuses)
            and (not keyword or any(keyword.lower() in word.lower() for word in words))
            and (not included or bool(types & set(included)))
            and not (excluded and types & set(excluded)))


def _rate_headers(limit: int, remaining: int, reset: float) -> dict[str, str]:
    """OCP's throttling headers (RateLimit-Limit/Remaining/Reset), and Retry-After when nothing remains."""
    headers = {"RateLimit-Limit": str(limit), "RateLimit-Remaining": str(remaining), "RateLimit-Reset": str(math.ceil(reset))}
    if remaining == 0:
        headers["Retry-After"] = str(math.ceil(reset))
    return headers


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
