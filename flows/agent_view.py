"""The host's agent as it is now: read live over SSH (``ocp_agentctl status`` and the processes' pid files and
/proc), cached a few seconds per host, and, when the host does not answer in time, the last known state marked
stale. What ``GET /compute/hosts/{hostId}/agent`` and ``.../agent/processes`` answer.

    process_id     a process's stable id: from its host's id and its alias (<= 2^53-1), the same before any task
    operable       whether OCP lets an operator restart or stop it alone (not the agent's basic processes)
    AgentViews     live reads with a cache, a timeout and the last known state; ``agent(host)`` -> HostAgent

A stale answer (the host did not answer this time) is marked within OCP's fields: the agent's ``status`` is
``OFFLINE`` and its ``updateTime`` is when the host last answered (older than the cache); every process keeps its
last known pid and status, with ``updateTime`` and ``lastActiveTime`` from that last answer. A fresh answer has
``updateTime`` within the last few seconds. Before any answer at all, the last pids a restart saw stand in.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from steps import agent_v3
from steps.agent import AGENTD, POS_PROXY, PROCESSES, AgentControl, AgentObservation, AgentStatus
from steps.errors import OcpRestartError
from steps.inventory import Host
from steps.runner import Runner
from steps.ssh import SSHSession

from .models import HostAgent, HostAgentProcess, format_time, now
from .store import TaskStore
from .store.hosts import PidSighting

logger = logging.getLogger(__name__)
CACHE_SECONDS = 3.0  # a read is reused this long (per host): a page refreshing every second costs one SSH login
TIMEOUT_SECONDS = 5.0  # connect, authenticate and read before this, or answer the last known state
PORTS = {"ocp_mgragent": "62888", "ocp_monagent": "62889"}  # OCP's defaults, when the agent's status names none
BASIC = frozenset({AGENTD, POS_PROXY})  # the supervisor and the command channel: not operable, as in OCP's sample
LOG_FILES = {"ocp_agentd": "agentd", "ocp_mgragent": "mgragent", "ocp_monagent": "monagent"}  # under log/

Connector = Callable[[Host, float], AbstractContextManager[Runner]]


def process_id(host_id: int, alias: str) -> int:
    """A process's id: 48 bits of SHA-256 over its host's id and alias, never 0 — stable across reads, restarts
    and servers, before any task, and exact in any JSON client."""
    digest = hashlib.sha256(f"ocp-agent-process:{host_id}:{alias}".encode()).digest()
    return int.from_bytes(digest[:6], "big") or 1


def operable(alias: str) -> bool:
    """Whether a process may be restarted or stopped alone: not ocp_agentd (it supervises the others) nor
    ocp_mgragent (OCP's command channel, the current generation's pos_proxy)."""
    return alias in PROCESSES and alias not in BASIC


# Every generation's aliases: the older agent's are listed by its hosts' views, so an operation names them too
# (and is refused as not operable rather than answered 404).
ALIASES = (*PROCESSES, *(alias for alias in agent_v3.PROCESSES if alias not in PROCESSES))


def resolve(host_id: int, process: str) -> str | None:
    """The alias of ``process`` on the host: a process id (digits) or an alias of either agent generation; None if
    there is no such one."""
    for alias in ALIASES:
        if process == alias or (process.isdigit() and int(process) == process_id(host_id, alias)):
            return alias
    return None


@contextmanager
def ssh_runner(host: Host, deadline: float) -> Iterator[Runner]:
    """A session to ``host``, connected and its key checked against the inventory's known_hosts (never a new key
    accepted), closed after use."""
    session = SSHSession(host, accept_new_host_key=False)
    try:
        session.connect(deadline=deadline)
        yield session
    finally:
        session.close()


@dataclass(frozen=True)
class Reading:
    """One live read of a host's agent, or (``observation`` None) a failed one with its ``error``."""

    at: datetime
    monotonic: float
    observation: AgentObservation | None = None
    error: str = ""
    generation: str = "4"  # whose processes: "3" the older agent's (steps.agent_v3), "4" the current one's


@dataclass
class _HostCache:
    lock: threading.Lock = field(default_factory=threading.Lock)
    last: Reading | None = None  # the latest read, good or failed
    good: Reading | None = None  # the latest good one
    key: object = None  # what the store said of the host at the latest read: a change makes it stale at once


class AgentViews:
    """Live reads of hosts' agents (thread-safe; one read per host at a time, reused ``cache_seconds``)."""

    def __init__(
        self,
        *,
        cache_seconds: float = CACHE_SECONDS,
        timeout_seconds: float = TIMEOUT_SECONDS,
        connect: Connector = ssh_runner,
    ) -> None:
        self.cache_seconds, self.timeout_seconds, self.connect = cache_seconds, timeout_seconds, connect
        self._hosts: dict[int, _HostCache] = {}
        self._lock = threading.Lock()

    def _cache(self, host_id: int) -> _HostCache:
        with self._lock:
            return self._hosts.setdefault(host_id, _HostCache())

    def invalidate(self, host_id: int) -> None:
        """The next ``agent`` of this host reads it again (e.g. after an operation changed it)."""
        cache = self._cache(host_id)
        with cache.lock:
            cache.last = None

    def agent(self, host: Host, store: TaskStore) -> HostAgent:
        """The host's agent now, or as last known (see the module docstring). ``store``: who holds the host, and
        the pids a restart last saw there (read only)."""
        cache = self._cache(host.id)
        holder, sighting = store.locks().get(host.id), store.last_pids(host.id)
        # A task or an operation on the host since the latest read (a lock taken or released, a restart's pids
        # recorded) makes that read old, however recent.
        key = (holder, sighting)
        with cache.lock:
            expired = cache.last is None or time.monotonic() - cache.last.monotonic >= self.cache_seconds
            reading = cache.last
            if reading is None or expired or cache.key != key:
                reading = cache.last = self._read(host)
                cache.key = key
                if reading.observation is not None:
                    cache.good = reading
            good = cache.good
        # What holds the host says what the agent is going through: its task's template (RESTARTING for a
        # restart, STOPPING for a stop); a process operation (no task) restarts or stops a process.
        busy = store.held_agent_statuses().get(host.id) if holder is not None else None
        if reading.observation is not None:
            return agent_view(host, reading, busy=busy)
        return self._last_known(host, good, sighting, busy=busy)

    def _read(self, host: Host) -> Reading:
        deadline = time.monotonic() + self.timeout_seconds
        try:
            with self.connect(host, deadline) as runner:
                generation, observed = _observe(runner, host, deadline)
        except Exception as exc:  # ours (StepError...), or paramiko or the socket outside our wrappers
            why = exc.message if isinstance(exc, OcpRestartError) else f"{type(exc).__name__}: {exc}"
            logger.warning("reading the agent on %s failed; showing its last known state: %s", host.label, why)
            return Reading(at=now(), monotonic=time.monotonic(), error=why)
        return Reading(at=now(), monotonic=time.monotonic(), observation=observed, generation=generation)

    def _last_known(
        self, host: Host, good: Reading | None, sighting: PidSighting | None, *, busy: str | None
    ) -> HostAgent:
        """The last good read, marked stale; before any, the pids the latest restart saw (or none)."""
        if good is not None:
            return agent_view(host, good, busy=busy, stale=True)
        pids = {} if sighting is None or sighting.stopped else dict(sighting.pids)
        seen = sighting.seen if sighting else None
        status = AgentStatus(running=bool(pids), pids=pids)
        at = datetime.fromisoformat(seen) if seen else None
        return agent_view(
            host,
            Reading(
                at=at or now(),
                monotonic=0.0,
                observation=AgentObservation(status=status),
                generation="3" if agent_v3.POS_PROXY in pids else "4",  # the older agent's pids, as a restart saw
            ),
            busy=busy,
            stale=True,
            known=at is not None,
        )


def _observe(runner: Runner, host: Host, deadline: float) -> tuple[str, AgentObservation]:
    """(generation, observation): the older agent's when the inventory says "3", or says "auto" and the current
    agent is not running but the home is the older agent's (a second round trip only then, #20)."""
    older = agent_v3.AgentControlV3(runner, host.agent_home, log=lambda line: None)
    if host.agent_generation == "3":
        return "3", older.observe(deadline) or AgentObservation(status=AgentStatus(running=False))
    observed = AgentControl(runner, host.agent_home, log=lambda line: None).observe(deadline)
    if host.agent_generation == "auto" and not observed.status.running:
        found = older.observe(deadline)
        if found is not None:
            return "3", found
    return "4", observed


def agent_view(host: Host, reading: Reading, *, busy: str | None, stale: bool = False, known: bool = True) -> HostAgent:
    """OCP's HostAgent from one read. ``busy``: the status while a task or a process operation holds the host
    (RESTARTING, STOPPING), None when nothing does;
    ``stale``: the host did not answer this time (OFFLINE, times from ``reading``); ``known``: False when nothing
    was ever seen (no processes, no times)."""
    observed = reading.observation or AgentObservation(status=AgentStatus(running=False))
    status = observed.status
    at = format_time(reading.at) if known else None
    home = host.agent_home.rstrip("/") or "/"
    aliases = agent_v3.PROCESSES if reading.generation == "3" else PROCESSES
    processes = [_process(host, home, alias, observed, reading.at, at, reading.generation) for alias in aliases]
    processes = processes if known else []
    agent_status = busy if busy else "OFFLINE" if stale or not status.running else "AVAILABLE"
    return HostAgent(
        id=host.id,
        version=observed.version,  # `ocp_agentctl version`, read with the status (#20)
        install_home=home,
        log_home=f"{home}/log",
        last_available_time=at if status.running and status.ready else None,
        host_id=host.id,
        host_inner_ip_address=host.address,
        status=agent_status,
        processes=processes,
        update_time=at,
    )


def _start_command(home: str, alias: str, generation: str) -> str:
    """What runs the process: obagent's programs in bin/; the older agent's daemon and pos_proxy are Python scripts
    (its control script starts them: ``cd HOME && python ocp_agent_ctl.py start ocp_agent``)."""
    if generation == "3":
        return {"ocp_agentd": f"{home}/ocp_agentd.py start base", "pos_proxy": f"{home}/agent/pos.py"}.get(
            alias, f"{home}/bin/{alias}"
        )
    return f"{home}/bin/{alias}"


def _process(
    host: Host, home: str, alias: str, observed: AgentObservation, read_at: datetime, at: str | None, generation: str
) -> HostAgentProcess:
    pid = observed.status.pids.get(alias, 0)
    elapsed = observed.elapsed.get(alias) if pid else None
    started = format_time(read_at - timedelta(seconds=elapsed)) if elapsed is not None else None
    return HostAgentProcess(
        id=process_id(host.id, alias),
        host_id=host.id,
        alias=alias,
        pid=pid,
        user=host.user,
        start_command=_start_command(home, alias, generation),
        ports=observed.ports.get(alias, (agent_v3.PORTS if generation == "3" else PORTS).get(alias, "")),
        elapsed_time=int(elapsed) if elapsed is not None else None,
        last_active_time=at if pid else None,
        status="STARTED" if pid else "STOPPED",
        operable=operable(alias),
        log_file_pattern=f"{home}/log/{alias if generation == '3' else LOG_FILES.get(alias, alias)}.log*",
        create_time=started,
        update_time=at,
    )
