"""What the routes share — settings, store, inventory, users, login throttle, launcher, live agent reads — built
once per app and read through FastAPI dependencies, so a test can replace any of them with
``app.dependency_overrides``."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from flows.agent_view import AgentViews
from flows.settings import Settings
from flows.store import TaskStore
from steps.inventory import Inventory, load_inventory

from ..auth import LoginThrottle, Users, trusted_networks
from ..launch import Launcher, make_launcher
from .health import Health, prefect_check, store_check

REAP_SECONDS = 1.0  # how often the server marks FAILED the tasks whose runner stopped renewing its lease


@dataclass(frozen=True)
class ApiState:
    """The app's shared objects (``app.state.api``)."""

    settings: Settings
    store: TaskStore
    inventory: Inventory
    users: Users
    throttle: LoginThrottle
    launcher: Launcher
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    server: str  # this machine's address: the ``server`` field of every answer
    agents: AgentViews  # the hosts' agents read live (cached a few seconds per host)
    health: Health  # GET /api/status's checks
    reap_seconds: float = REAP_SECONDS

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        launcher: Launcher | None = None,
        store: TaskStore | None = None,
        inventory: Inventory | None = None,
        agents: AgentViews | None = None,
        reap_seconds: float = REAP_SECONDS,
    ) -> ApiState:
        """Everything from ``settings``, except what is given. A bad inventory, users file or proxy list fails
        here, before the server listens."""
        inventory = inventory or load_inventory(settings.inventory_path)
        users = Users(settings.users_path)
        throttle = LoginThrottle(settings.login_limit)
        proxies = trusted_networks(settings.trusted_proxies)
        store = store or TaskStore(settings.store_url)
        launcher = launcher or make_launcher(settings)
        return cls(
            settings=settings,
            store=store,
            inventory=inventory,
            users=users,
            throttle=throttle,
            launcher=launcher,
            trusted_proxies=proxies,
            server=settings.executor_address,
            agents=agents or AgentViews(),
            health=Health(
                {"store": store_check(store)}
                | ({"prefect": prefect_check()} if settings.launcher == "deployment" else {})
            ),
            reap_seconds=reap_seconds,
        )


# The dependencies are coroutines although they only read an attribute: FastAPI runs a plain function in its
# thread pool, a hop per dependency and request for nothing.


async def get_state(request: Request) -> ApiState:
    return request.app.state.api


StateDep = Annotated[ApiState, Depends(get_state)]


async def get_store(state: StateDep) -> TaskStore:
    return state.store


async def get_inventory(state: StateDep) -> Inventory:
    return state.inventory


async def get_launcher(state: StateDep) -> Launcher:
    return state.launcher


async def get_agents(state: StateDep) -> AgentViews:
    return state.agents


StoreDep = Annotated[TaskStore, Depends(get_store)]
AgentsDep = Annotated[AgentViews, Depends(get_agents)]
InventoryDep = Annotated[Inventory, Depends(get_inventory)]
LauncherDep = Annotated[Launcher, Depends(get_launcher)]
