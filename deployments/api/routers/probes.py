"""OCP's probes, answered bare as OCP answers them: ``/api/v2/time`` the time as text, ``/api/v2/info`` an object,
``/api/status`` OCP's health keyword as text."""

from __future__ import annotations

import importlib.metadata
import os
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, PlainTextResponse

from flows.models import format_time, now

from ..envelope import documented
from ..models import Info
from ..security import AnyUser
from ..state import StateDep

NAME = "ocp-agent-restart"
router = APIRouter(prefix="/api/v2", tags=["probes"])
status_router = APIRouter(tags=["probes"])


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


@router.get(
    "/time",
    response_class=PlainTextResponse,
    responses=documented(),
    summary="Query the OCP server time (no authentication; the time as text, as OCP answers it)",
)
def server_time() -> PlainTextResponse:
    return PlainTextResponse(format_time(now()))


@router.get(
    "/info",
    response_model=Info,
    responses=documented(401),
    summary="Query the basic information of the application (bare, as OCP answers it)",
)
def info(user: AnyUser, state: StateDep) -> JSONResponse:
    return JSONResponse(
        Info(
            name=NAME, group=NAME, artifact=NAME, buildTime=BUILD_TIME, buildVersion=VERSION, server=state.server
        ).model_dump()
    )


@status_router.get(
    "/api/status",
    response_class=PlainTextResponse,
    responses={
        400: {
            "description": "OCP's error envelope (an invalid includeUnavailableComponent)",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
        },
        200: {"description": "Every module is up: the available keyword (okay)", "content": {"text/plain": {}}},
        503: {
            "description": "A module is down: the unavailable keyword (bad), then with includeUnavailableComponent "
            "a space and the modules' names, comma-separated (e.g. `bad store`)",
            "content": {"text/plain": {}},
        },
    },
    summary="Query OCP application status (no authentication, as a load balancer probes it; answers within ~2 s)",
)
def application_status(
    state: StateDep,
    include: Annotated[
        bool,
        Query(alias="includeUnavailableComponent", description="Also name the modules that are down"),
    ] = False,
) -> PlainTextResponse:
    down = state.health.down()
    if not down:
        return PlainTextResponse(state.settings.status_ok)
    text = f"{state.settings.status_bad} {','.join(down)}" if include else state.settings.status_bad
    return PlainTextResponse(text, status_code=503)
