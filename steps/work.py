"""What each DAG node does on its host (DESIGN.md "Steps on a host"), written once over AgentControl."""

from __future__ import annotations

import time

from flows.errors import AgentError

from .agent import AGENTD, POS_PROXY, PROCESSES, AgentControl
from .context import RunContext
from .inventory import Host
from .subtask_log import SubtaskLog

STOP_RESERVE_MAX = 15.0  # seconds kept after `ocp_agentctl stop` to TERM/KILL leftovers


def _agent(ctx: RunContext, host: Host, log: SubtaskLog, deadline: float) -> AgentControl:
    return AgentControl(ctx.session(host, deadline, log), host.agent_home, log.info)


def prepare(ctx: RunContext, host: Host, log: SubtaskLog, deadline: float, timeout: int) -> None:
    """Connect (host key verified), check the agent CLI, snapshot the agent's pids."""
    agent = _agent(ctx, host, log, deadline)
    agent.check_cli(deadline)
    status = agent.status(deadline)
    ctx.snapshots[host.id] = status
    if status.running:
        log.info(f"agent {status.describe()}")
    else:
        log.warning("the agent is not running on this host; Start all will start it")


def restart_pos_proxy(ctx: RunContext, host: Host, log: SubtaskLog, deadline: float, timeout: int) -> None:
    """Restart the command channel (4.x: ocp_mgragent) and wait until it runs with a new pid."""
    agent = _agent(ctx, host, log, deadline)
    before = agent.status(deadline)
    if not before.running:
        log.warning(f"ocp_agentd is not running, so {POS_PROXY} cannot be restarted alone; Start all will start it")
        return
    old = before.pids.get(POS_PROXY)
    agent.ctl_command(f"service stop {POS_PROXY}", deadline, doing=f"stopping {POS_PROXY}")
    agent.ctl_command(f"service start {POS_PROXY}", deadline, doing=f"starting {POS_PROXY}")
    after = agent.wait_until(
        lambda s: s.pids.get(POS_PROXY) not in (None, old), deadline, what=f"{POS_PROXY} runs with a new pid"
    )
    log.info(f"{POS_PROXY} restarted: pid {old} -> {after.pids[POS_PROXY]}")


def stop_all(ctx: RunContext, host: Host, log: SubtaskLog, deadline: float, timeout: int) -> None:
    """``ocp_agentctl stop``; then make sure no agent process is left, escalating TERM -> KILL on leftovers.

    If the CLI hangs past its share of the deadline, its process group is killed on the host and the subtask
    fails: a wedged agent CLI needs a human, not more signals.
    """
    agent = _agent(ctx, host, log, deadline)
    reserve = min(STOP_RESERVE_MAX, timeout * 0.25)
    known = set(ctx.snapshots.get(host.id).pids.values()) if host.id in ctx.snapshots else set()
    known |= set(agent.pid_files(deadline).values())
    current = agent.status(deadline, quiet=True)
    known |= set(current.pids.values())
    try:
        agent.ctl_command("stop", deadline - reserve, doing="stopping the agent")
    except AgentError as exc:
        # The CLI gave up (e.g. wait_for_exit_timeout) but answered: its leftovers are ours to TERM/KILL.
        # A CLI that never answers (CommandTimeout) is not: the subtask fails and the agent is left as it is.
        log.warning(f"{exc.message}; checking for leftover agent processes")
    left = agent.live_processes(known, deadline)
    for sig in ("TERM", "KILL"):
        if not left:
            break
        log.warning(f"after `stop`, agent processes are still running: {_describe(left)}; sending SIG{sig}")
        agent.signal(set(left), sig, deadline)
        give_up = min(deadline, time.monotonic() + reserve / 2)
        while left and time.monotonic() < give_up:
            time.sleep(0.1)
            left = agent.live_processes(set(left), deadline)
    if left:
        raise AgentError(f"agent processes survived stop, SIGTERM and SIGKILL: {_describe(left)}")
    status = agent.status(deadline)
    if status.running:
        raise AgentError(f"the agent still reports running after stop: {status.describe()}")
    log.info(f"all agent processes stopped (checked pids {sorted(known)})")


def start_all(ctx: RunContext, host: Host, log: SubtaskLog, deadline: float, timeout: int) -> None:
    """``ocp_agentctl start``; wait until ready; every process must have a new pid."""
    agent = _agent(ctx, host, log, deadline)
    agent.ctl_command("start", deadline, doing="starting the agent")
    status = agent.wait_until(lambda s: s.ready, deadline, what="the agent is ready")
    old = ctx.snapshots.get(host.id)
    if old is not None:
        kept = [name for name in PROCESSES if name in old.pids and status.pids.get(name) == old.pids[name]]
        if kept:
            raise AgentError(f"after start, {', '.join(kept)} still run with the pid(s) from before the restart")


def finish(ctx: RunContext, host: Host, log: SubtaskLog, deadline: float, timeout: int) -> None:
    """Final status check and a before/after summary; closes the host's connection."""
    try:
        agent = _agent(ctx, host, log, deadline)
        status = agent.status(deadline)
        if not status.ready:
            raise AgentError(f"the agent is not ready at the end of the restart: {status.describe()}")
        old = ctx.snapshots.get(host.id)
        before = old.pids if old is not None else {}
        log.info("restarted: " + ", ".join(f"{n} {before.get(n, '-')} -> {status.pids.get(n, '-')}" for n in PROCESSES))
    finally:
        ctx.close_session(host.id)


def wait(ctx: RunContext, host: Host | None, log: SubtaskLog, deadline: float, timeout: int) -> None:
    """A barrier: Prefect starts it only when every upstream subtask succeeded; nothing runs remotely."""
    log.info("all upstream subtasks are SUCCESSFUL")


def _describe(processes: dict[int, str]) -> str:
    return ", ".join(f"{name} (pid {pid})" for pid, name in sorted(processes.items()))


__all__ = ["prepare", "restart_pos_proxy", "stop_all", "start_all", "finish", "wait", "AGENTD"]
