"""Every setting read from the environment, in one place. ``Settings()`` resolves them, and only entry points
build one — the CLI's ``main`` (which also serves the API), a flow run's entry (in-process or on a worker) — and
pass it down; ``tests/fast/test_settings.py`` fails when any other module builds one. Nothing else reads
``OCP_RESTART_*`` variables.

    OCP_RESTART_HOME         where the default store, inventory and users file live (~/.ocp-restart)
    OCP_RESTART_STORE_URL    SQLAlchemy URL of the task store (default: SQLite at $OCP_RESTART_HOME/tasks.db)
    OCP_RESTART_INVENTORY    the inventory file (default: $OCP_RESTART_HOME/inventory.toml)
    OCP_RESTART_USERS        the API's users file (default: $OCP_RESTART_HOME/users.toml)
    OCP_RESTART_INVENTORY_DIR  a deployment run from the Prefect UI may name an inventory in this folder; by
                             default only the deployment's own
    OCP_RESTART_EXECUTOR     the address OCP's ``executor`` field shows (default: this host's address)
    OCP_RESTART_LEASE_SECONDS  how long a task survives without its runner's heartbeat (30)
    OCP_RESTART_MAX_RUNS     flow runs at once in an API process (8)
    OCP_RESTART_LOCAL_PREFECT  without PREFECT_API_URL, the CLI starts and reuses a local Prefect server (true);
                             false: Prefect's temporary server in every run, as Prefect does by default
    OCP_RESTART_PREFECT_IDLE_SECONDS  the local Prefect server stops after this long unused (600)
    OCP_RESTART_LAUNCHER     how the API starts flow runs: embedded | deployment
    OCP_RESTART_DEPLOYMENT   the deployment the ``deployment`` launcher runs
    OCP_RESTART_LOGIN_LIMIT  failed logins per user and client before throttling (10)
    OCP_RESTART_TRUSTED_PROXIES  proxies (addresses or networks, comma-separated) whose X-Forwarded-For names the
                             client for the login throttle; none by default
    OCP_RESTART_SERVER, OCP_RESTART_USER, OCP_RESTART_PASSWORD   ``run --server``: where and as whom
    OCP_RESTART_PROCESS_TIMEOUT_SECONDS  the deadline of one process's restart or stop (60)
    OCP_RESTART_STATUS_OK, OCP_RESTART_STATUS_BAD  what ``GET /api/status`` answers when every module is up, or not
                             (OCP's ocp.health-check.status.available-keyword / unavailable-keyword: okay, bad)
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DEPLOYMENT = "batch-restart-agents/batch-restart"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OCP_RESTART_", frozen=True, extra="ignore")

    home: Path = Path("~/.ocp-restart")
    store_url_: Annotated[SecretStr | None, Field(alias="OCP_RESTART_STORE_URL")] = None
    inventory: Path | None = None
    inventory_dir: Path | None = None
    users: Path | None = None
    executor: str | None = None
    lease_seconds: Annotated[float, Field(gt=0)] = 30.0
    local_prefect: bool = True
    prefect_idle_seconds: Annotated[float, Field(ge=0)] = 600.0
    max_runs: Annotated[int, Field(ge=1)] = 8
    launcher: Literal["embedded", "deployment"] = "embedded"
    deployment: str = DEFAULT_DEPLOYMENT
    login_limit: Annotated[int, Field(ge=1)] = 10
    trusted_proxies: str = ""
    server: str | None = None
    user: str | None = None
    password: SecretStr | None = None
    process_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0
    status_ok: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^\S+$")] = "okay"
    status_bad: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^\S+$")] = "bad"

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser()

    @property
    def store_url(self) -> str:
        """The store's URL (it may hold a password: never log it; TaskStore.safe_url hides it)."""
        if self.store_url_ is not None and self.store_url_.get_secret_value():
            return self.store_url_.get_secret_value()
        self.home_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.home_dir / 'tasks.db'}"

    @property
    def inventory_path(self) -> Path:
        return (self.inventory or self.home_dir / "inventory.toml").expanduser()

    @property
    def users_path(self) -> Path:
        return (self.users or self.home_dir / "users.toml").expanduser()

    @property
    def executor_address(self) -> str:
        """This machine's address as OCP's ``executor`` field shows it (resolved locally, no traffic)."""
        if self.executor:
            return self.executor
        try:
            return socket.gethostbyname(socket.gethostname())
        except OSError:
            return "127.0.0.1"
