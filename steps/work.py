"""What each kind of DAG node does on its host, written once over AgentControl and the Step interface.

Each kind of node has an execute step and a rollback step. Rolling back a restart means: wherever the agent was
stopped, make it run again.
"""

from __future__ import annotations

import time

from .agent import POS_PROXY, PROCESSES, SERVICES, AgentControl, ProcessControl, error_of
from .errors import AgentError
from .step import Step

STOP_RESERVE_MAX = 15.0  # seconds kept after `ocp_agentctl stop` to TERM/KILL leftovers
# Finish trusts Start all's "serves" (mgragent answered on its socket) this long, if the same processes are still
# running and ready: its own curl on the socket cost ~1 s at 100 hosts on 2 cores (Finish 1.18 s vs the floor's
# 0.24, #23). Older, or other pids, or not ready: the full health check. 300 s, not 30: at 1,000 hosts Start all
# alone spans ~55 s, so the first hosts to serve reached Finish past 30 s and all paid the check (Finish 14 s vs
# the floor's 3). A process that crashed since has another pid (or none); one that hangs alive is what the minutes
# of trust risk, as the seconds did.
SERVED_FRESH_SECONDS = 300.0


def agent_of(step: Step) -> AgentControl:
    """The host's agent, driven through the step's runner; a cancel (or a lost lease) stops a running command."""
    return AgentControl(step.runner(), step.host.agent_home, step.log.info, stop=step.cancelled)


def prepare(step: Step) -> None:
    """Connect (host key verified), check the agent CLI, refuse what a restart cannot fix (a full or read-only agent
    home, too little memory, the agent's port held by another process, the agent's user gone: AgentError naming
    each, before anything is stopped), snapshot the agent's pids."""
    agent = agent_of(step)
    probe, status = agent.prepare_probe(step.limits, step.deadline)
    if probe.version:
        step.log.info(f"agent version {probe.version} (ocp_agentctl version)")
    else:
        step.log.warning("the agent's version is unknown: `ocp_agentctl version` gave no version")
    problems = probe.problems(step.limits, step.host.address, set(status.pids.values()))
    if problems:
        raise AgentError("a restart cannot fix this host, nothing was stopped: " + "; ".join(problems))
    step.record_pids("before", status.pids)
    if probe.version:  # for the batch's Wait node: do the hosts run different versions? (#20)
        step.record_version(probe.version)
    if status.running:
        step.log.info(f"agent {status.describe()}")
    else:
        step.log.warning("the agent is not running on this host; Start all will start it")


def prepare_stop(step: Step) -> None:
    """A stop's Prepare: connect (host key verified), check the agent CLI, snapshot the agent's pids. Restarts and
    starts nothing; an agent that is already stopped is no error (Stop all then has nothing to stop)."""
    agent = agent_of(step)
    status = agent.status(step.deadline, require_cli=True)
    step.record_pids("before", status.pids)
    if status.running:
        step.log.info(f"agent {status.describe()}")
    else:
        step.log.warning("the agent is not running on this host; there is nothing to stop")


def restart_pos_proxy(step: Step) -> None:
    """Restart the command channel (4.x: ocp_mgragent) and wait until it runs as a new process (a new pid, or its
    old pid on a process younger than the restart: ``ProcessControl.restarted``)."""
    agent, deadline = agent_of(step), step.deadline
    before = agent.status(deadline)
    if not before.running:
        step.log.warning(
            f"ocp_agentd is not running, so {POS_PROXY} cannot be restarted alone; Start all will start it"
        )
        return
    old, began = before.pids.get(POS_PROXY), time.monotonic()
    now = agent.ctl_then_status(
        ("service", "stop", POS_PROXY),
        ("service", "start", POS_PROXY),
        deadline=deadline,
        doing=f"restarting {POS_PROXY}",
    )
    after = agent.wait_until(
        lambda s: agent.restarted(POS_PROXY, s.pids.get(POS_PROXY), old, began, deadline),
        deadline,
        what=f"{POS_PROXY} runs as a new process",
        first=now,
    )
    new = after.pids[POS_PROXY]
    reused = " (its old pid again, a new process: the pid was reused)" if new == old else ""
    step.log.info(f"{POS_PROXY} restarted: pid {old} -> {new}{reused}")


def stop_all(step: Step) -> None:
    """``ocp_agentctl stop``; then make sure no agent process of this home is left (``stop_all_of``)."""
    stop_all_of(step, agent_of(step))


def stop_all_of(step: Step, agent: ProcessControl) -> None:
    """Stop all, for either agent generation: its stop (``agent.stop_all``); then make sure no agent process of this
    home is left (found in /proc by its name and path, whatever the pid files say), escalating TERM -> KILL on
    leftovers. A pid file naming a process that is not the agent's is removed before the stop; that process is never
    signalled.

    If the stop hangs past its share of the deadline, its process group is killed on the host and the subtask
    fails: a wedged agent CLI needs a human, not more signals.
    """
    deadline, log = step.deadline, step.log
    reserve = min(STOP_RESERVE_MAX, step.timeout * 0.25)
    # Start all tells a new process from an old one that got its pid back by the start time (pids are reused), so
    # the stop's round trip first reads the identities of the processes it is about to stop.
    current, stopped = agent.stop_all(deadline - reserve)
    step.record_pids("starts", {n: start for n, (_, start) in current.items() if start is not None})
    if agent.clock is not None:  # Start all and Finish want an mgragent started after this (by the host's clock)
        step.record_pids("clock", {"stop": agent.clock})
    known = set((step.recorded_pids("before") or {}).values()) | {pid for pid, _ in current.values()}
    if not stopped.ok:
        # The CLI gave up (e.g. wait_for_exit_timeout) but answered: its leftovers are ours to TERM/KILL.
        # A CLI that never answers (CommandTimeout, raised above) is not: the subtask fails, the agent is left as is.
        log.warning(
            f"stopping the agent failed: {agent.stop_command} exited {stopped.exit_status}: "
            f"{error_of(stopped)}; checking for leftover agent processes"
        )
    # Every agent process of this home, found by what it is (its name and {home}/bin/ path), not by the pid files:
    # a killed agentd's orphans and duplicates are ours to end too; a stranger named by a pid file is not. A round
    # trip of its own: inside the stop's, a flood of output from the stop (capped at 256 KiB) cut the scan's answer
    # off, and SIGINT mid-stop no longer ended the run in 30 s (tests/test_hardening.py, tests/test_stops.py).
    left, status = agent.scan_then_status(deadline)
    if left:
        end_leftovers(step, agent, left, reserve)
        status = agent.status(deadline)
    if status.running:
        raise AgentError(f"the agent still reports running after stop: {status.describe()}")
    log.info(f"all agent processes stopped (checked pids {sorted(known)})")


def end_leftovers(step: Step, agent: ProcessControl, left: dict[int, str], reserve: float) -> None:
    """The agent processes found after a stop (pid -> name): SIGTERM, then SIGKILL to what is left after half the
    ``reserve`` each; AgentError naming the survivors. Both generations' Stop all."""
    deadline, log = step.deadline, step.log
    for sig in ("TERM", "KILL"):
        if not left:
            return
        log.warning(f"after the stop, agent processes are still running: {_describe(left)}; sending SIG{sig}")
        agent.signal(set(left), sig, deadline)
        give_up = min(deadline, time.monotonic() + reserve / 2)
        while left and time.monotonic() < give_up:
            step.may_act()
            time.sleep(0.1)
            left = agent.live_processes(set(left), deadline)
    if left:
        raise AgentError(f"agent processes survived stop, SIGTERM and SIGKILL: {_describe(left)}")


def start_all(step: Step) -> None:
    """``ocp_agentctl start``; wait until the agent serves (``Health``: ready, and mgragent answering on its unix
    socket with a startAt after Stop all began); every process must have a new pid."""
    agent = agent_of(step)
    first = agent.start_then_health(step.deadline)
    status = agent.wait_until_serving(step.deadline, since=_stopped_at(step), first=first).status
    old = step.recorded_pids("before") or {}
    kept = [name for name in PROCESSES if name in old and status.pids.get(name) == old[name]]
    if kept:  # the same pid may be a new process (pids are reused): compare start times too
        old_starts = step.recorded_pids("starts") or {}
        now_starts = agent.start_times({status.pids[name] for name in kept}, step.deadline)
        kept = [
            name for name in kept if name not in old_starts or now_starts.get(status.pids[name]) == old_starts[name]
        ]
    if kept:
        raise AgentError(f"after start, {', '.join(kept)} still run with the pid(s) from before the restart")
    step.record_pids("served", {**status.pids, "at": int(time.time())})


def finish(step: Step) -> None:
    """Final check that the agent serves (as in Start all, retried within the deadline; or, within
    SERVED_FRESH_SECONDS of Start all seeing it serve, its status: ready with the same processes) and a
    before/after summary."""
    agent = agent_of(step)
    served = dict(step.recorded_pids("served") or {})
    at = served.pop("at", 0)
    status = agent.status(step.deadline) if 0 <= time.time() - at <= SERVED_FRESH_SECONDS else None
    if status is not None and status.ready and status.pids == served:
        step.log.info(f"agent {status.describe()}; the same processes served {time.time() - at:.0f} s ago (Start all)")
    else:
        status = agent.wait_until_serving(step.deadline, since=_stopped_at(step)).status
    before = step.recorded_pids("before") or {}
    step.record_pids("after", status.pids)
    step.log.info(
        "restarted: " + ", ".join(f"{n} {before.get(n, '-')} -> {status.pids.get(n, '-')}" for n in PROCESSES)
    )


def finish_stop(step: Step) -> None:
    """A stop's Finish: the agent must be stopped; a summary of what was stopped. Records no "after" pids: the
    host's last sighting stays the stopped one."""
    status = agent_of(step).status(step.deadline)
    if status.running:
        raise AgentError(f"the agent runs again at the end of the stop: {status.describe()}")
    before = step.recorded_pids("before") or {}
    step.log.info("stopped: " + ", ".join(f"{n} {before.get(n, '-')} -> -" for n in PROCESSES))


# -- rollback ------------------------------------------------------------------------------------------------


def ensure_running(step: Step) -> None:
    """Rollback of Stop all / Start all: the agent serves again, as Start all leaves it (#20: ready is not enough).
    A healthy agent is left alone; a stopped one is started; agentd running without a service (one stopped by
    ``service stop``) gets that service started; then it waits until mgragent answers on its socket."""
    agent = agent_of(step)
    health = agent.health(step.deadline)
    if not health.problem():
        step.log.info(f"nothing to undo: agent {health.status.describe()}, {POS_PROXY} serves")
        return
    first = health
    if not health.status.running:
        first = agent.start_then_health(step.deadline)
    elif missing := [name for name in SERVICES if name not in health.status.pids]:
        starts = [("service", "start", name) for name in missing]
        agent.ctl_then_status(*starts, deadline=step.deadline, doing=f"starting {', '.join(missing)} again")
        first = agent.health(step.deadline)
    status = agent.wait_until_serving(step.deadline, first=first).status
    step.log.info(f"agent runs again: {status.describe()}")


def ensure_pos_proxy(step: Step) -> None:
    """Rollback of Restart pos proxy: if agentd runs but ocp_mgragent does not, start it again."""
    agent = agent_of(step)
    status = agent.status(step.deadline)
    if not status.running or POS_PROXY in status.pids:
        step.log.info(f"nothing to undo here: agent {status.describe()}")
        return
    agent.ctl_command(("service", "start", POS_PROXY), step.deadline, doing=f"starting {POS_PROXY} again")
    agent.wait_until(lambda s: POS_PROXY in s.pids, step.deadline, what=f"{POS_PROXY} runs")


def nothing_to_undo(step: Step) -> None:
    """Rollback of Prepare and Finish: they changed nothing on the host."""
    step.log.info("nothing to undo")


def _stopped_at(step: Step) -> int | None:
    """The host's clock as Stop all began (epoch seconds), if Stop all recorded it for this task."""
    return (step.recorded_pids("clock") or {}).get("stop")


def _describe(processes: dict[int, str]) -> str:
    return ", ".join(f"{name} (pid {pid})" for pid, name in sorted(processes.items()))


__all__ = [
    "agent_of",
    "prepare",
    "prepare_stop",
    "restart_pos_proxy",
    "stop_all",
    "end_leftovers",
    "start_all",
    "finish",
    "finish_stop",
    "ensure_running",
    "ensure_pos_proxy",
    "nothing_to_undo",
]
