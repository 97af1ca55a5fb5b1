"""OCP's routes for the agent on a host (with and without ``/api/v2``, as OCP's agent pages and samples write
them): the agent and its processes read live (flows/agent_view.py), and one process restarted or stopped
synchronously (flows/process_ops.py), with the record of those operations.

The routes are plain functions: FastAPI runs them in its thread pool, so the SSH work never blocks the event loop.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from flows.models import Envelope, HostAgent, HostAgentProcess, HostAgentProcessPage
from flows.process_ops import Action, operate
from flows.view import DEFAULT_PAGE_SIZE, page, spring_page

from ..envelope import documented, envelope
from ..params import HostId, PageNumber, PageSize
from ..security import HostReader, HostWriter
from ..state import AgentsDep, InventoryDep, StateDep, StoreDep
from .hosts import known_host

router = APIRouter(tags=["agent"])
PREFIXES = ("/api/v2", "")  # OCP's agent pages write the path without /api/v2, their samples with it
ProcessRef = Annotated[
    str,
    Path(
        pattern=r"^([1-9][0-9]{0,15}|[a-z_]{1,40})$",
        description="The process's id (as the process list shows it) or its alias, e.g. ocp_monagent",
    ),
]


def get_agent(
    request: Request, host_id: HostId, user: HostReader, store: StoreDep, inventory: InventoryDep, agents: AgentsDep
):
    return envelope(request, agents.agent(known_host(inventory, host_id), store).to_wire())


def list_agent_processes(
    request: Request,
    host_id: HostId,
    user: HostReader,
    store: StoreDep,
    inventory: InventoryDep,
    agents: AgentsDep,
    page_: PageNumber = 1,
    size: PageSize = DEFAULT_PAGE_SIZE,
):
    number, size = spring_page(page_, size)
    processes = agents.agent(known_host(inventory, host_id), store).to_wire()["processes"]
    chunk = processes[(number - 1) * size : number * size]
    return envelope(request, {"contents": chunk, "page": page(number, size, len(processes)).to_wire()})


def list_process_operations(
    request: Request,
    host_id: HostId,
    user: HostReader,
    inventory: InventoryDep,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many, newest first")] = 20,
):
    known_host(inventory, host_id)
    return envelope(request, [op.to_wire() for op in store.processes.list(host_id=host_id, limit=limit)])


def _operation(action: Action):
    def run(
        request: Request,
        host_id: HostId,
        process: ProcessRef,
        user: HostWriter,
        inventory: InventoryDep,
        store: StoreDep,
        agents: AgentsDep,
        state: StateDep,
    ):
        host, seconds = known_host(inventory, host_id), state.settings.process_timeout_seconds
        outcome = operate(store, agents, host, process, action, creator=user.name, seconds=seconds)
        return envelope(request, outcome.process.to_wire())

    run.__name__ = f"{action}_agent_process"
    return run


_READS = documented(401, 403, 404)
for _prefix in PREFIXES:
    _agent = f"{_prefix}/compute/hosts/{{host_id:int}}/agent"
    router.add_api_route(
        _agent,
        get_agent,
        methods=["GET"],
        response_model=Envelope[HostAgent],
        responses=_READS,
        summary="Query OCP Agent details on a host, read live (the last known state, OFFLINE, when it does not answer)",
    )
    router.add_api_route(
        f"{_agent}/processes",
        list_agent_processes,
        methods=["GET"],
        response_model=Envelope[HostAgentProcessPage],
        responses=documented(400, 401, 403, 404),
        summary="Query OCP Agent processes on a host, read live",
    )
    router.add_api_route(
        f"{_agent}/processes/operations",
        list_process_operations,
        methods=["GET"],
        responses=documented(400, 401, 403, 404),
        summary="Beyond OCP: the latest process restarts and stops on a host (who, when, outcome, output)",
    )
    for _action in ("restart", "stop"):
        router.add_api_route(
            f"{_agent}/processes/{{process}}/{_action}",
            _operation(_action),  # type: ignore[arg-type]
            methods=["POST"],
            response_model=Envelope[HostAgentProcess],
            responses=documented(400, 401, 403, 404, 409, 500),
            summary=f"{_action.capitalize()} an OCP Agent process on a host (synchronous; not a basic process)",
        )
