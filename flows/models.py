"""The documented request and response shapes of OCP's batchRestartAgents and task API (pydantic v2)."""

from __future__ import annotations

import enum
import re
import secrets
from collections import Counter
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)
from pydantic.alias_generators import to_camel

from steps.inventory import MAX_ID
from steps.logline import format_time as format_time  # re-exported: this module's times are OCP's
from steps.logline import now as now

MAX_HOSTS_PER_REQUEST = 2000


def new_trace_id() -> str:
    """16 lowercase hex digits, like OCP's trace ids."""
    return secrets.token_hex(8)


OcpTime = Annotated[datetime, PlainSerializer(format_time, return_type=str)]


class TaskStatus(str, enum.Enum):
    RUNNING = "RUNNING"
    FAILED = "FAILED"
    SUCCESSFUL = "SUCCESSFUL"


class SubtaskStatus(str, enum.Enum):
    PENDING = "PENDING"
    READY = "READY"
    RUNNING = "RUNNING"
    CANCELING = "CANCELING"
    FAILED = "FAILED"
    SUCCESSFUL = "SUCCESSFUL"


class Operation(str, enum.Enum):
    EXECUTE = "EXECUTE"
    RETRY = "RETRY"
    ROLLBACK = "ROLLBACK"
    SKIP = "SKIP"
    CANCEL = "CANCEL"


class TaskType(str, enum.Enum):
    MANUAL = "MANUAL"
    SCHEDULED = "SCHEDULED"
    SYS_SCHEDULED = "SYS_SCHEDULED"


class OcpModel(BaseModel):
    """camelCase on the wire, snake_case in Python; ``to_wire()`` gives the documented JSON."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class TaskContext(OcpModel):
    list_map: dict[str, list[str]]
    string_map: dict[str, str]
    parallel: bool = False
    parallel_idx: int = -1


class Subtask(OcpModel):
    id: int
    name: str
    class_name: str
    description: str
    node_type: str = "JAVA_TASK"
    operation: Operation = Operation.EXECUTE
    parallel_idx: int
    prohibit_rollback: bool = False
    run_time: int = 1
    series_id: int
    status: SubtaskStatus
    timeout: int
    upstreams: list[int]
    downstreams: list[int]


class TaskInstance(OcpModel):
    id: int
    host_id: int | None = None  # the single-host operations' task-level hostId; absent from the batch ones
    name: str
    creator: str
    executor: str
    operation: Operation
    start_time: OcpTime
    status: TaskStatus
    type: TaskType
    task_definition_id: int = -1
    context: TaskContext
    subtasks: list[Subtask]

    @model_serializer(mode="wrap")
    def _without_absent_host(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """OCP's batch tasks have no task-level ``hostId`` at all (not a null)."""
        data: dict[str, Any] = handler(self)
        for key in ("hostId", "host_id"):
            if key in data and data[key] is None:
                del data[key]
        return data


# ---- what GET, retry and rollback answer: OCP's WrappedTaskInstance (task detail) and the task list ----------


class Creator(OcpModel):
    """Who created a task: OCP's ``{id, name}``."""

    id: int
    name: str


class SubtaskInstance(OcpModel):
    """A subtask as the task detail shows it (OCP's SubtaskInstance; ``className`` as the subtask retry page lists
    it). Times are null until they happen; ``executor`` once the subtask has started."""

    id: int
    series_id: int
    name: str
    description: str
    class_name: str
    timeout: int
    status: SubtaskStatus
    operation: Operation
    executor: str | None
    run_time: int
    create_time: str | None
    start_time: str | None
    finish_time: str | None
    node_type: str = "JAVA_TASK"
    parallel_idx: int
    upstreams: list[int]
    downstreams: list[int]
    prohibit_rollback: bool


class WrappedTaskInstance(OcpModel):
    """The task detail (GET, retry, rollback): ``creator`` an object, times, ``prohibitRollback``; no ``context``."""

    id: int
    name: str
    task_definition_id: int = -1
    status: TaskStatus
    type: TaskType
    creator: Creator
    executor: str
    create_time: str
    start_time: str
    finish_time: str | None
    operation: Operation
    prohibit_rollback: bool
    subtasks: list[SubtaskInstance]


class BasicSubtaskInstance(OcpModel):
    id: int
    name: str
    description: str
    status: SubtaskStatus
    operation: Operation


class BasicTaskInstance(OcpModel):
    """A task as the task list shows it (OCP's BasicTaskInstance), with the task fields OCP's TaskInstance also
    documents (type, operation, executor, createTime, taskDefinitionId)."""

    id: int
    name: str
    creator: Creator
    status: TaskStatus
    start_time: str
    finish_time: str | None
    subtasks: list[BasicSubtaskInstance]
    type: TaskType
    operation: Operation
    executor: str
    create_time: str
    task_definition_id: int = -1


class Page(OcpModel):
    """OCP's page object: ``number`` counts from 1."""

    number: int
    size: int
    total_elements: int
    total_pages: int


class TaskPage(OcpModel):
    contents: list[BasicTaskInstance]
    page: Page


# ---- the host's agent: GET /compute/hosts/{hostId}/agent ---------------------------------------------------------


class HostAgentProcess(OcpModel):
    """One agent process as last seen on the host: STARTED with its pid, or STOPPED with pid 0."""

    id: int
    host_id: int
    alias: str
    pid: int
    user: str
    start_command: str
    ports: str
    elapsed_time: int | None = None
    last_active_time: str | None
    status: str
    operable: bool = False
    log_file_pattern: str
    create_time: str | None = None
    update_time: str | None


class HostAgent(OcpModel):
    """OCP's HostAgent. ``status``: AVAILABLE, RESTARTING or OFFLINE (null before the first restart)."""

    id: int
    version: str | None = None
    install_home: str
    log_home: str
    last_available_time: str | None
    host_id: int
    host_inner_ip_address: str
    status: str | None
    processes: list[HostAgentProcess]
    create_time: str | None = None
    update_time: str | None


class HostAgentProcessPage(OcpModel):
    contents: list[HostAgentProcess]
    page: Page


T = TypeVar("T")


class Envelope(OcpModel, Generic[T]):
    """OCP's success envelope."""

    data: T | None = None
    successful: bool = True
    timestamp: OcpTime
    duration: int
    status: int = 200
    trace_id: str
    server: str


class ApiError(OcpModel):
    code: int
    message: str


class ErrorEnvelope(OcpModel):
    """OCP's error envelope: ``successful`` false and ``error{code, message}``."""

    successful: bool = False
    timestamp: OcpTime
    duration: int
    status: int
    trace_id: str
    server: str
    error: ApiError


def _integral(value: Any) -> Any:
    """JSON integers, including integral numbers like 7.0 (JSON Schema counts those as integers); never
    strings or booleans."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"Input should be a valid integer, got {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"Input should be a valid integer, got {value!r}")
        return int(value)
    return value


_DECIMAL = re.compile(r"[1-9][0-9]*")


def _id_value(value: Any) -> Any:
    """A host id as OCP's JSON binding (Jackson) reads a Long: a JSON integer, or a string of decimal digits such as
    "2" (our own ``context.listMap.host_ids`` holds them so); never a boolean or another string."""
    if isinstance(value, str):
        if not _DECIMAL.fullmatch(value):
            raise ValueError(f"Input should be a valid integer or a string of decimal digits, got {value!r}")
        return int(value)
    return _integral(value)


HostId = Annotated[int, BeforeValidator(_id_value)]


def _json_number(value: Any) -> Any:
    """A JSON number, never a boolean or a string (pydantic's lax mode reads ``false`` as 0 and "5" as 5)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"Input should be a JSON number, got {value!r}")
    return value


class BatchRestartRequest(BaseModel):
    """The body of ``POST /compute/hosts/batchRestartAgents``.

    The seed's own sample writes ``hostids``; both spellings are accepted.
    """

    model_config = ConfigDict(extra="ignore")

    host_ids: Annotated[
        list[HostId],
        Field(
            validation_alias=AliasChoices("hostIds", "hostids"),
            serialization_alias="hostIds",
            description="The list of host IDs (the seed's own sample spells it hostids; both are accepted). As OCP's "
            'JSON binding reads a Long, an id may also be a string of decimal digits ("2").',
            # The checks themselves are in _check_ids, for messages that name the offending ids.
            json_schema_extra={
                "minItems": 1,
                "maxItems": MAX_HOSTS_PER_REQUEST,
                "uniqueItems": True,
                "items": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
            },
        ),
    ]
    # Beyond OCP, off unless sent: rolling batches and a failure threshold (see RestartOptions).
    batch_size: Annotated[
        Annotated[int, Field(ge=1, le=MAX_HOSTS_PER_REQUEST), BeforeValidator(_integral)] | None,
        Field(alias="batchSize", description="Beyond OCP: rolling batches of this many hosts."),
    ] = None
    max_failed_hosts: Annotated[
        Annotated[int, Field(ge=0, le=MAX_HOSTS_PER_REQUEST), BeforeValidator(_integral)] | None,
        Field(
            alias="maxFailedHosts", description="Beyond OCP: isolate failed hosts; the task fails only past this many."
        ),
    ] = None
    max_failed_percent: Annotated[
        Annotated[float, Field(ge=0, le=100, allow_inf_nan=False), BeforeValidator(_json_number)] | None,
        Field(alias="maxFailedPercent", description="Beyond OCP: the same threshold as a percentage of the hosts."),
    ] = None

    @field_validator("host_ids")
    @classmethod
    def _check_ids(cls, ids: list[int]) -> list[int]:
        if not ids:
            raise ValueError("hostIds must not be empty")
        if len(ids) > MAX_HOSTS_PER_REQUEST:
            raise ValueError(f"hostIds holds {len(ids)} ids; at most {MAX_HOSTS_PER_REQUEST} are allowed")
        bad = [i for i in ids if not 0 < i <= MAX_ID]
        if bad:
            raise ValueError(f"hostIds must be positive integers <= 2^53-1, got {bad[:5]}")
        dups = sorted(i for i, count in Counter(ids).items() if count > 1)
        if dups:
            raise ValueError(f"hostIds must not repeat a host, got duplicates {dups[:5]}")
        return ids
