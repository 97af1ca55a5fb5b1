"""The app factory: the shared state, the middleware and error answers, OCP's routes, and the server's lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.routing import BaseRoute

from flows.agent_view import AgentViews
from flows.settings import Settings
from flows.store import TaskStore
from steps.inventory import Inventory

from ..auth import SIGNED_SCHEME
from ..launch import Launcher
from .envelope import add_error_answers, stamp
from .limits import BodyLimits
from .links import add_links
from .params import one_value_each
from .reaper import reaping
from .routers import agent, hosts, probes, restart, tasks
from .routers.probes import VERSION
from .state import REAP_SECONDS, ApiState


def create_app(
    settings: Settings,
    *,
    launcher: Launcher | None = None,
    store: TaskStore | None = None,
    inventory: Inventory | None = None,
    agents: AgentViews | None = None,
    reap_seconds: float = REAP_SECONDS,
) -> FastAPI:
    """The API for ``settings`` (built by the caller: the CLI's ``serve``, or a test). A test may pass its own
    launcher, store, inventory or live agent reader (a launcher made from ``settings`` runs flows on
    ``settings.store_url``: pass a launcher with a store). The caller closes the store and shuts the launcher down
    after the server stops."""
    app = FastAPI(
        title="ocp-agent-restart",
        version=VERSION,
        description="OCP-compatible batch restart of OCP agents. HTTP Basic auth or OCP's access-key signature "
        f"(Authorization: {SIGNED_SCHEME} AK:SIGNATURE, with Date); OCP's response envelope.",
        lifespan=_lifespan,
        dependencies=[Depends(one_value_each)],
    )
    app.state.api = ApiState.build(
        settings, launcher=launcher, store=store, inventory=inventory, agents=agents, reap_seconds=reap_seconds
    )
    # The body limits run inside stamp (the middleware added last runs first): stamp is a BaseHTTPMiddleware, and a
    # limit's error raised through its receive would arrive as an ExceptionGroup, a 500; inside, it is a 413/408.
    app.add_middleware(BodyLimits)
    app.middleware("http")(stamp)
    add_error_answers(app)
    # In this order: a path is matched against the first routes first.
    routers = [module.router for module in (restart, tasks, agent, hosts, probes)] + [probes.status_router]
    for router in routers:
        app.include_router(router)
    # The routers' own routes: FastAPI may keep an included router as one nested route in app.routes.
    app.openapi = partial(_openapi, app, [route for router in routers for route in router.routes])
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """While the server runs, lapsed leases are reaped in the background (reads never write)."""
    state: ApiState = app.state.api
    with reaping(state.store, state.reap_seconds):
        yield


def _openapi(app: FastAPI, routes: list[BaseRoute]) -> dict:
    """FastAPI documents validation errors as 422; ours are OCP's 400 envelope. Links from the route table
    (links.py) let a client, and schemathesis' stateful phase, follow a restart to its task and on."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for path in schema["paths"].values():
            for operation in path.values():
                responses = operation.get("responses", {})
                if responses.pop("422", None) is not None and "400" not in responses:
                    responses["400"] = {
                        "description": "OCP's error envelope (invalid parameter)",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
                    }
        add_links(schema, routes)
        app.openapi_schema = schema
    return app.openapi_schema
