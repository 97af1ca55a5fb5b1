"""One agent process restarted or stopped, synchronously: OCP's ``POST .../agent/processes/{id}/restart|stop``.

The operation holds its host as a task does (the store's host locks: 409 / 20021 both ways), has a deadline, and is
recorded in the store — who, when, the outcome, the commands and their output (``ocp-restart process list``,
``GET .../agent/processes/operations``). Only operable processes (``agent_view.operable``) are touched, with the
current generation's ``ocp_agentctl service stop|start NAME``; a basic one, or any of the older agent's (its control
script has no command for one process but pos_proxy, its command channel), is refused before anything is done.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from steps.agent import PROCESSES, AgentControl, AgentStatus
from steps.errors import AgentError, OcpRestartError
from steps.inventory import Host

from .agent_view import AgentViews, operable, resolve
from .errors import AgentStateError, ProcessNotOperableError, UnknownProcessError
from .models import HostAgentProcess, format_time, now
from .store import TaskStore
from .store.processes import FAILED, SUCCESSFUL

Action = Literal["restart", "stop"]
ACTIONS: tuple[Action, ...] = ("restart", "stop")
OPERATION_SECONDS = 60.0  # OCP's sample restart answered after 12 s; agentctl waits 10 s per service at most
LEASE_GRACE_SECONDS = 30.0  # past its deadline and this, an unfinished operation is taken as abandoned


@dataclass(frozen=True)
class Outcome:
    """What an operation did: its record's id, and the process as read right after."""

    operation_id: int
    process: HostAgentProcess


def operate(
    store: TaskStore,
    views: AgentViews,
    host: Host,
    process: str,
    action: Action,
    *,
    creator: str,
    seconds: float = OPERATION_SECONDS,
) -> Outcome:
    """Restart or stop ``process`` (its id or alias) on ``host`` and answer it as read right after.

    Raises UnknownProcessError, ProcessNotOperableError (nothing done, nothing recorded), HostBusyError (a task or
    another operation holds the host; nothing done), AgentStateError (agentd is down), or the host's failure
    (StepError); every operation begun is recorded with its outcome."""
    alias = resolve(host.id, process)
    if alias is None:
        raise UnknownProcessError(host.id, process)
    if not operable(alias):
        raise ProcessNotOperableError(host.id, alias, older=alias not in PROCESSES)
    deadline = time.monotonic() + seconds
    op_id = store.processes.begin(
        host.id, alias, action, creator, seconds=seconds + LEASE_GRACE_SECONDS, pid_before=None
    )
    lines: list[str] = [f"{format_time(now())} INFO --- {action} {alias} on {host.label}, by {creator}"]
    status = FAILED
    pids: list[int | None] = [None, None]  # the process's pid before and after
    try:
        with views.connect(host, deadline) as runner:
            agent = AgentControl(runner, host.agent_home, lines.append, stop=lambda: time.monotonic() > deadline)
            _run(agent, alias, action, deadline, pids)
        pid_after, status = pids[1] or 0, SUCCESSFUL
        lines.append(f"{format_time(now())} INFO --- {alias} is {'pid ' + str(pid_after) if pid_after else 'stopped'}")
    except OcpRestartError as exc:
        lines.append(f"{format_time(now())} ERROR --- {exc.message}")
        raise
    finally:
        store.processes.finish(op_id, status, "\n".join(lines), pid_before=pids[0], pid_after=pids[1])
        views.invalidate(host.id)
    agent_now = views.agent(host, store)
    return Outcome(op_id, next(p for p in agent_now.processes if p.alias == alias))


def _run(agent: AgentControl, alias: str, action: Action, deadline: float, pids: list[int | None]) -> AgentStatus:
    """The commands on the host; the agent's status after them, checked. ``pids``: the process's pid before and
    after, filled in as they are read (0: not running)."""
    before = agent.status(deadline)
    if not before.running:
        raise AgentStateError(
            f"The OCP-Agent status of the host does not support this operation: ocp_agentd is not running, so "
            f"{alias} cannot be {'restarted' if action == 'restart' else 'stopped'} alone; restart the agent instead"
        )
    old, began = before.pids.get(alias, 0), time.monotonic()
    pids[0] = old
    commands = [("service", "stop", alias)] + ([("service", "start", alias)] if action == "restart" else [])
    after = agent.ctl_then_status(*commands, deadline=deadline, doing=f"{action} {alias}")
    new = pids[1] = after.pids.get(alias, 0)
    if action == "restart" and not agent.restarted(alias, new or None, old or None, began, deadline):
        raise AgentError(f"{alias} did not come back with a new pid (before {old or '-'}, after {new or '-'})")
    if action == "stop" and new:
        raise AgentError(f"{alias} is still running after the stop (pid {new})")
    return after
