"""The documented request and response shapes of OCP's batchRestartAgents and task API (pydantic v2)."""

from __future__ import annotations

import enum
import secrets
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
)
from pydantic.alias_generators import to_camel

from steps.inventory import MAX_ID
from steps.logline import format_time, now  # noqa: F401 - now() is part of this module's API

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


def json_int(**bounds: int) -> Any:
    """An integer field type accepting integral JSON numbers; the bounds come first so the JSON schema shows them."""
    return Annotated[int, Field(**bounds), BeforeValidator(_integral)]


JsonInt = json_int()


class BatchRestartRequest(BaseModel):
    """The body of ``POST /compute/hosts/batchRestartAgents``.

    The seed's own sample writes ``hostids``; both spellings are accepted.
    """

    model_config = ConfigDict(extra="ignore")

    host_ids: Annotated[
        list[JsonInt],
        Field(
            validation_alias=AliasChoices("hostIds", "hostids"), serialization_alias="hostIds",
            description="The list of host IDs (the seed's own sample spells it hostids; both are accepted).",
            # The checks themselves are in _check_ids, for messages that name the offending ids.
            json_schema_extra={"minItems": 1, "maxItems": MAX_HOSTS_PER_REQUEST, "uniqueItems": True,
                               "items": {"type": "integer", "minimum": 1, "maximum": MAX_ID}},
        ),
    ]
    # Beyond OCP, off unless sent: rolling batches and a failure threshold (see RestartOptions).
    batch_size: Annotated[
        json_int(ge=1, le=MAX_HOSTS_PER_REQUEST) | None,
        Field(alias="batchSize", description="Beyond OCP: rolling batches of this many hosts."),
    ] = None
    max_failed_hosts: Annotated[
        json_int(ge=0, le=MAX_HOSTS_PER_REQUEST) | None,
        Field(alias="maxFailedHosts", description="Beyond OCP: isolate failed hosts; the task fails only past this many."),
    ] = None
    max_failed_percent: Annotated[
        Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] | None,
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
        seen: set[int] = set()
        dups = sorted({i for i in ids if i in seen or seen.add(i)})
        if dups:
            raise ValueError(f"hostIds must not repeat a host, got duplicates {dups[:5]}")
        return ids
