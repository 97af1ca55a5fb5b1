"""The query and path parameters the routes share, typed as OCP documents them: ids, Spring's paging and sort,
OCP's StringArray filters (repeated, or a comma list)."""

from __future__ import annotations

import re
import types
from collections.abc import Iterator
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from fastapi import Path, Query, Request
from pydantic import BeforeValidator, StringConstraints

from flows.models import MAX_ID
from flows.view import spring_sort

from .envelope import ApiFailure

INT32 = 2**31 - 1
TASK_SORT = {
    "id": "id",
    "name": "name",
    "status": "status",
    "type": "type",
    "createTime": "create_time",
    "startTime": "start_time",
    "finishTime": "finish_time",
}
HOST_SORT = {"id": "id", "name": "name", "innerIpAddress": "address"}
TASK_STATUSES = ("RUNNING", "FAILED", "SUCCESSFUL")
HOST_STATUSES = ("NEW", "AVAILABLE", "ONLINE", "OFFLINE", "DELETING")
SERVICE_TYPES = ("OB_CLUSTER", "OB_PROXY", "OCP_AGENT", "BACKUP_AGENT", "RESTORE_AGENT", "BACKUP_RESTORE_AGENT", "OMS")
TaskTypeName = Literal["MANUAL", "SYS_ONECE", "SCHEDULED", "SYS_SCHEDULED"]  # as OCP's task list spells them [sic]
_DIRECTION = "(,([aA][sS][cC]|[dD][eE][sS][cC]))?"

TaskId = Annotated[int, Path(ge=1, le=MAX_ID)]
SubtaskId = Annotated[int, Path(ge=1, le=MAX_ID)]
HostId = Annotated[int, Path(ge=1, le=MAX_ID)]

_INTEGER = re.compile(r"-?[0-9]+")


def _integer_text(value: Any) -> Any:
    """A query integer as Spring binds one: decimal digits, optionally signed; not "5.0", "1e3" or " 5"."""
    if isinstance(value, str) and not _INTEGER.fullmatch(value):
        raise ValueError(f"Input should be an integer written in decimal digits, got {value!r}")
    return value


# OCP's paging parameters: Spring's one-indexed paging (see flows.view.spring_page); any 32-bit integer is taken.
PageNumber = Annotated[
    int,
    Query(alias="page", ge=-INT32 - 1, le=INT32, description="The page, from 1; 0 or less is the first page."),
    BeforeValidator(_integer_text),  # after Query: before it, the bounds leave the OpenAPI schema
]
PageSize = Annotated[
    int,
    Query(ge=-INT32 - 1, le=INT32, description="Items per page (default 10); 0 or less is 10, above 2000 is 2000."),
    BeforeValidator(_integer_text),
]


async def one_value_each(request: Request) -> None:
    """400 for a query parameter of the route given twice that takes one value: FastAPI would silently take the
    last one (``size=abc&size=5`` passed, ``size=5&size=abc`` did not). OCP's StringArray parameters may repeat;
    parameters the route does not know are ignored, as Spring ignores them."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    if dependant is None:
        return
    scalars = {field.alias for field in _query_fields(dependant) if not _is_list(field.field_info.annotation)}
    for name in scalars:
        count = len(request.query_params.getlist(name))
        if count > 1:
            raise ApiFailure(
                400, 1001, f"You must specify a valid value for {name[:64]}: it takes one value, got {count}"
            )


def _comma_list(values: tuple[str, ...]) -> str:
    """A pattern for one value of an OCP StringArray parameter: a value, or a comma list of them."""
    one = "(" + "|".join(values) + ")"
    return f"^{one}(,{one})*$"


def _sort_pattern(fields: dict[str, str]) -> str:
    one = "(" + "|".join(fields) + ")"
    return f"^{one}(,{one})*{_DIRECTION}$"


def _list_param(values: tuple[str, ...], what: str, alias: str | None = None):
    """An OCP StringArray query parameter: repeated (``status=A&status=B``) or a comma list (``status=A,B``)."""
    item = Annotated[str, StringConstraints(pattern=_comma_list(values))]
    return Annotated[
        list[item] | None, Query(alias=alias, description=f"{what}: {', '.join(values)}; repeated or comma-separated")
    ]


def _sort_param(fields: dict[str, str]):
    item = Annotated[str, StringConstraints(pattern=_sort_pattern(fields))]
    return Annotated[
        list[item] | None,
        Query(
            description=f"Spring's sort: one of {', '.join(fields)}, optionally followed by ,asc or ,desc; repeatable"
        ),
    ]


TaskStatuses = _list_param(TASK_STATUSES, "Task statuses")
TaskSort = _sort_param(TASK_SORT)
HostStatuses = _list_param(HOST_STATUSES, "Host statuses")
HostSort = _sort_param(HOST_SORT)
IncludedServices = _list_param(SERVICE_TYPES, "Only hosts running a service of these types", "includedServiceType")
ExcludedServices = _list_param(SERVICE_TYPES, "No hosts running a service of these types", "excludedServiceType")


def _query_fields(dependant: Any) -> Iterator[Any]:
    """The query parameters of a route (FastAPI's ``APIRoute.dependant``) and of its dependencies."""
    yield from dependant.query_params
    for sub in dependant.dependencies:
        yield from _query_fields(sub)


def _is_list(annotation: Any) -> bool:
    """``list[str] | None`` and the like: a parameter that may be repeated."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _is_list(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return any(_is_list(arg) for arg in get_args(annotation))
    return origin in (list, tuple, set, frozenset)


def split(values: list[str] | None) -> list[str] | None:
    """OCP's StringArray parameters: repeated values and comma lists, as one list (None when not given)."""
    return [item for value in values for item in value.split(",")] if values else None


def sort_order(sort: list[str] | None, fields: dict[str, str]) -> list[tuple[str, bool]]:
    """Spring's ``sort`` values as (column, ascending) pairs; 400 naming what cannot be sorted by."""
    try:
        return spring_sort(sort or [], fields)
    except ValueError as exc:
        raise ApiFailure(400, 1001, f"You must specify a valid value for sort: {exc}") from None
