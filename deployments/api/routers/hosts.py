"""OCP's host routes over the inventory: the host list and a host (the agent on a host: routers/agent.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from flows.errors import UnknownHostError
from flows.models import Envelope
from flows.store import TaskStore
from flows.view import DEFAULT_PAGE_SIZE, page, spring_page
from steps.inventory import Host, Inventory

from ..envelope import documented, envelope
from ..models import AGENT_SERVICE, HostPage, HostView
from ..params import (
    HOST_SORT,
    ExcludedServices,
    HostId,
    HostSort,
    HostStatuses,
    IncludedServices,
    PageNumber,
    PageSize,
    sort_order,
    split,
)
from ..security import HostReader
from ..state import InventoryDep, StoreDep

router = APIRouter(tags=["hosts"])


@router.get(
    "/api/v2/compute/hosts",
    response_model=Envelope[HostPage],
    summary="Query hosts",
    responses=documented(400, 401, 403),
)
def list_hosts(
    request: Request,
    user: HostReader,
    store: StoreDep,
    inventory: InventoryDep,
    page_: PageNumber = 1,
    size: PageSize = DEFAULT_PAGE_SIZE,
    status: HostStatuses = None,
    keyword: Annotated[
        str | None,
        Query(max_length=200, description="A part of the host's name, address or a service's name, any case"),
    ] = None,
    included: IncludedServices = None,
    excluded: ExcludedServices = None,
    sort: HostSort = None,
):
    number, size = spring_page(page_, size)
    hosts = _sorted_hosts(list(inventory.hosts.values()), sort_order(sort, HOST_SORT))
    views = [
        v
        for v in _host_views(store, hosts)
        if _host_matches(v, split(status), keyword, split(included), split(excluded))
    ]
    chunk = views[(number - 1) * size : number * size]
    return envelope(request, {"contents": chunk, "page": page(number, size, len(views)).to_wire()})


# ":int": a non-numeric segment (e.g. GET .../hosts/batchRestartAgents) is not a host id but another route.
@router.get(
    "/api/v2/compute/hosts/{host_id:int}",
    response_model=Envelope[HostView],
    summary="Query details about a host",
    responses=documented(401, 403, 404),
)
def get_host(request: Request, host_id: HostId, user: HostReader, store: StoreDep, inventory: InventoryDep):
    return envelope(request, _host_views(store, [known_host(inventory, host_id)])[0])


def known_host(inventory: Inventory, host_id: int) -> Host:
    if host_id not in inventory.hosts:
        raise UnknownHostError([host_id], "the inventory")
    return inventory.hosts[host_id]


def _agent_status(host_id: int, held: dict[int, str], statuses: dict[int, str]) -> str | None:
    """While a task holds the host, the status its template gives (RESTARTING, STOPPING); else the last status an
    operation left (None before the first)."""
    return held.get(host_id) or statuses.get(host_id)


def _host_views(store: TaskStore, hosts: list[Host]) -> list[dict]:
    held, statuses = store.held_agent_statuses(), store.host_agent_statuses()
    return [
        HostView(
            id=h.id,
            name=h.name,
            innerIpAddress=h.address,
            sshPort=h.ssh_port,
            status="ONLINE",
            hostAgentStatus=_agent_status(h.id, held, statuses),
            services=[AGENT_SERVICE],
        ).model_dump()
        for h in hosts
    ]


def _sorted_hosts(hosts: list[Host], order: list[tuple[str, bool]]) -> list[Host]:
    """Hosts by id, then re-sorted by each key from the last to the first (a stable multi-key sort)."""
    hosts = sorted(hosts, key=lambda h: h.id)
    for column, ascending in reversed(order):
        hosts.sort(key=lambda h: getattr(h, column), reverse=not ascending)
    return hosts


def _host_matches(
    view: dict, statuses: list[str] | None, keyword: str | None, included: list[str] | None, excluded: list[str] | None
) -> bool:
    types = {service["type"] for service in view["services"]}
    words = [view["name"], view["innerIpAddress"], *(service["name"] for service in view["services"])]
    return (
        (not statuses or view["status"] in statuses)
        and (not keyword or any(keyword.lower() in word.lower() for word in words))
        and (not included or bool(types & set(included)))
        and not (excluded and types & set(excluded))
    )
