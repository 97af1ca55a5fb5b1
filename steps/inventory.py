"""The host inventory: a TOML file validated by pydantic.

[defaults]                 # any host key may be set here
user = "admin"
ssh_port = 22
key_file = "~/.ssh/id_ed25519"
known_hosts = "~/.ssh/known_hosts"
agent_home = "/home/admin/ocp_agent"
agent_generation = "auto"  # or "4" (Go obagent, bin/ocp_agentctl), "3" (the older Python agent, ocp_agent_ctl.py)

[[hosts]]
id = 1001
name = "obs-zone1-1"
address = "10.0.0.11"
ssh_port = 2201            # any default may be overridden per host
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from .errors import InventoryError, UnknownHostError

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_USER = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
# Paths reach remote shell commands: quoted there, but restricted here too, so a typo cannot become a surprise.
_REMOTE_PATH = re.compile(r"/[A-Za-z0-9._/+-]*")

DEFAULT_AGENT_HOME = "/home/admin/ocp_agent"
MAX_ID = 2**53 - 1  # ids must survive a JavaScript client
AGENT_GENERATIONS = ("auto", "4", "3")  # auto: detected in Prepare from the agent home (steps/nodes.py)


class Host(BaseModel):
    """One host: where to reach it and where its agent lives."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[StrictInt, Field(gt=0, le=MAX_ID)]
    name: Annotated[str, Field(min_length=1, max_length=128)]
    address: str
    ssh_port: Annotated[StrictInt, Field(ge=1, le=65535)] = 22
    user: str = "admin"
    key_file: Path = Path("~/.ssh/id_ed25519")
    known_hosts: Path = Path("~/.ssh/known_hosts")
    agent_home: str = DEFAULT_AGENT_HOME
    agent_generation: str = "auto"  # "4" (Go obagent), "3" (the older Python agent), "auto": Prepare detects it

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            if _HOSTNAME.fullmatch(value):
                return value
        raise ValueError(f"must be an IP address or a DNS host name, got {value!r}")

    @field_validator("user")
    @classmethod
    def _user(cls, value: str) -> str:
        if not _USER.fullmatch(value):
            raise ValueError(f"must be a POSIX user name (lower case letters, digits, _ . -), got {value!r}")
        return value

    @field_validator("agent_home")
    @classmethod
    def _agent_home(cls, value: str) -> str:
        if not _REMOTE_PATH.fullmatch(value) or "/../" in f"{value}/":
            raise ValueError(f"must be an absolute path of letters, digits and . _ / + -, without '..', got {value!r}")
        return value.rstrip("/") or "/"

    @field_validator("agent_generation", mode="before")
    @classmethod
    def _agent_generation(cls, value: object) -> str:
        text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
        if text not in AGENT_GENERATIONS:
            allowed = ", ".join(repr(g) for g in AGENT_GENERATIONS)
            raise ValueError(f"must be one of {allowed} (the OCP agent's generation), got {value!r}")
        return text

    @field_validator("key_file", "known_hosts")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        if "\0" in str(value):  # no file has such a name: it would fail at the first connection, far from here
            raise ValueError(f"must be a file path without NUL characters, got {str(value)!r}")
        try:
            return value.expanduser()
        except RuntimeError:  # ~user of a user this machine does not know (#22's Hypothesis pass)
            raise ValueError(f"names a home directory this machine does not know, got {str(value)!r}") from None

    @property
    def label(self) -> str:
        return f"{self.name}({self.address}:{self.ssh_port})"


class Inventory(BaseModel):
    path: str
    hosts: dict[int, Host]

    def select(self, host_ids: Iterable[int]) -> list[Host]:
        """The hosts for ``host_ids``, in that order; UnknownHostError names every unknown id."""
        ids = list(host_ids)
        unknown = [h for h in ids if h not in self.hosts]
        if unknown:
            raise UnknownHostError(unknown, f"the inventory {self.path}")
        return [self.hosts[h] for h in ids]


def load_inventory(path: str | Path) -> Inventory:
    """Read and validate an inventory file. InventoryError names the file, the host and the field."""
    path = Path(path).expanduser()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InventoryError(f"{path}: inventory file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(f"{path}: cannot read the inventory: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses per nested array or table (#22's Hypothesis pass)
        raise InventoryError(f"{path}: not valid TOML: arrays or tables nested too deep") from None
    return parse_inventory(raw, str(path))


def parse_inventory(raw: dict[str, Any], source: str) -> Inventory:
    unknown_sections = set(raw) - {"defaults", "hosts"}
    if unknown_sections:
        raise InventoryError(
            f"{source}: unknown section(s) {sorted(unknown_sections)}; expected [defaults] and [[hosts]]"
        )
    defaults = raw.get("defaults", {})
    if not isinstance(defaults, dict):
        raise InventoryError(f"{source}: [defaults] must be a table, got {type(defaults).__name__}")
    for key in ("id", "name", "address"):
        if key in defaults:
            raise InventoryError(f"{source}: [defaults] cannot set {key!r}; it is per host")
    entries = raw.get("hosts")
    if not isinstance(entries, list) or not entries:
        raise InventoryError(f"{source}: no hosts; add at least one [[hosts]] table with id, name and address")
    hosts: dict[int, Host] = {}
    for position, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise InventoryError(f"{source}: host #{position} must be a table, got {type(entry).__name__}")
        who = f"host #{position}" + (f" (id={entry['id']!r})" if "id" in entry else "")
        try:
            host = Host.model_validate({**defaults, **entry})
        except ValidationError as exc:
            problems = "; ".join(
                f"field {'.'.join(str(p) for p in err['loc']) or '?'!r}: {err['msg']}"
                + (f" (got {err['input']!r})" if err["type"] not in ("missing", "value_error") else "")
                for err in exc.errors()
            )
            raise InventoryError(f"{source}: {who}: {problems}") from None
        if host.id in hosts:
            raise InventoryError(
                f"{source}: {who}: field 'id': {host.id} is already used by host {hosts[host.id].name!r}"
            )
        hosts[host.id] = host
    return Inventory(path=source, hosts=hosts)
