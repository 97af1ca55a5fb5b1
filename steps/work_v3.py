"""What each kind of DAG node does on a host of the older agent generation (``steps.agent_v3``), with that agent's
own tools: the same five stages as ``steps.work``, its own commands.

    Prepare            the probe (what a restart cannot fix), the processes, ``ocp_agent_ctl.py version``
    Restart pos proxy  ``ocp_agent_ctl.py restart pos_proxy``; pos_proxy runs as a new process and listens
    Stop all           pid files naming strangers removed, ``ocp_agent_ctl.py stop ocp_agent``, leftovers in /proc
                       TERM -> KILL
    Start all          ``ocp_agent_ctl.py start ocp_agent``; every basic process runs with a new pid, pos_proxy listens
    Finish             the same health check, a before -> after summary
"""

from __future__ import annotations

from .agent_v3 import BASIC, POS_PROXY, PROCESSES, WHOLE, WORKERS, AgentControlV3, StatusV3
from .errors import AgentError
from .runner import CommandResult
from .step import Step
from .work import stop_all_of


def agent_of(step: Step) -> AgentControlV3:
    return AgentControlV3(step.runner(), step.host.agent_home, step.log.info, stop=step.cancelled)


def prepare(step: Step, result: CommandResult | None = None) -> None:
    """Refuse what a restart cannot fix (before anything is stopped), snapshot the pids, log the version.
    ``result``: Prepare's round trip already made (by the generation-detecting script)."""
    agent = agent_of(step)
    probe, status, version = agent.prepared(result) if result is not None else agent.prepare(step.limits, step.deadline)
    problems = probe.problems(step.limits, step.host.address, set(status.pids.values()))
    if problems:
        raise AgentError("a restart cannot fix this host, nothing was stopped: " + "; ".join(problems))
    step.record_pids("before", status.pids)
    step.log.info(f"agent generation 3 (Python), version {version or 'unknown'} (ocp_agent_ctl.py version)")
    if version:  # a mixed batch of generations is a mixed batch of versions too (#20)
        step.record_version(version)
    if status.running:
        step.log.info(f"agent {status.describe()}")
    else:
        step.log.warning("the agent is not running on this host; Start all will start it")


def prepare_stop(step: Step, status: StatusV3 | None = None) -> None:
    """A stop's Prepare: snapshot the pids (``status``: already read by the detecting script)."""
    status = status if status is not None else agent_of(step).status(step.deadline)
    step.record_pids("before", status.pids)
    if status.running:
        step.log.info(f"agent {status.describe()}")
    else:
        step.log.warning("the agent is not running on this host; there is nothing to stop")


def restart_pos_proxy(step: Step) -> None:
    """``ocp_agent_ctl.py restart pos_proxy``; wait until pos_proxy runs as a new process (pid and start time) and
    listens."""
    agent, deadline = agent_of(step), step.deadline
    before = agent.status(deadline)
    if not before.running:
        step.log.warning(
            f"ocp_agentd is not running, so {POS_PROXY} cannot be restarted alone; Start all will start it"
        )
        return
    # A process is its pid and its start time: the restarted pos_proxy may get its predecessor's pid back.
    old = (before.pids.get(POS_PROXY), before.starts.get(POS_PROXY))
    now = agent.ctl_then_status("restart", POS_PROXY, deadline, doing=f"restarting {POS_PROXY}")
    after = agent.wait_until(
        lambda s: (
            POS_PROXY in s.pids and (s.pids[POS_PROXY], s.starts.get(POS_PROXY)) != old and not s.problem((POS_PROXY,))
        ),
        deadline,
        what=f"{POS_PROXY} runs as a new process and listens",
        first=now,
    )
    new = after.pids[POS_PROXY]
    reused = " (its old pid again, a new process: the pid was reused)" if new == old[0] else ""
    step.log.info(f"{POS_PROXY} restarted: pid {old[0]} -> {new}{reused}")


def stop_all(step: Step) -> None:
    """``ocp_agent_ctl.py stop ocp_agent``; then no agent process of this home may be left
    (``steps.work.stop_all_of``, as for the current generation)."""
    stop_all_of(step, agent_of(step))


def _required(step: Step) -> tuple[str, ...]:
    """The basic processes, and the workers that ran before the restart."""
    before = step.recorded_pids("before") or {}
    return (*BASIC, *(w for w in WORKERS if w in before))


def start_all(step: Step) -> None:
    """``ocp_agent_ctl.py start ocp_agent``; wait until every basic process runs and pos_proxy listens; none may
    keep its pid (and start time) from before the restart."""
    agent, required = agent_of(step), _required(step)
    first = agent.ctl_then_status("start", WHOLE, step.deadline, doing="starting the agent")
    status = agent.wait_until(
        lambda s: not s.problem(required),
        step.deadline,
        what="the agent's processes run and pos_proxy listens",
        first=first,
    )
    old = step.recorded_pids("before") or {}
    kept = [name for name in PROCESSES if name in old and status.pids.get(name) == old[name]]
    if kept:  # the same pid may be a new process (pids are reused): compare start times too
        old_starts = step.recorded_pids("starts") or {}
        kept = [name for name in kept if name not in old_starts or status.starts.get(name) == old_starts[name]]
    if kept:
        raise AgentError(f"after start, {', '.join(kept)} still run with the pid(s) from before the restart")


def finish(step: Step) -> None:
    """The same health check as Start all (retried within the deadline), and a before -> after summary."""
    agent, required = agent_of(step), _required(step)
    status = agent.wait_until(lambda s: not s.problem(required), step.deadline, what="the agent is healthy")
    before = step.recorded_pids("before") or {}
    step.record_pids("after", status.pids)
    step.log.info(
        "restarted: " + ", ".join(f"{n} {before.get(n, '-')} -> {status.pids.get(n, '-')}" for n in PROCESSES)
    )


def finish_stop(step: Step) -> None:
    """A stop's Finish: the agent must be stopped."""
    status = agent_of(step).status(step.deadline)
    if status.running:
        raise AgentError(f"the agent runs again at the end of the stop: {status.describe()}")
    before = step.recorded_pids("before") or {}
    step.log.info("stopped: " + ", ".join(f"{n} {before.get(n, '-')} -> -" for n in PROCESSES if n in before))


def ensure_running(step: Step) -> None:
    """Rollback of Stop all / Start all: start the agent if it is not healthy, and wait until it is."""
    agent = agent_of(step)
    status = agent.status(step.deadline)
    if not status.problem():
        step.log.info(f"nothing to undo: agent {status.describe()}")
        return
    agent.ctl_then_status("start", WHOLE, step.deadline, doing="starting the agent again")
    status = agent.wait_until(lambda s: not s.problem(), step.deadline, what="the agent is healthy")
    step.log.info(f"agent runs again: {status.describe()}")


def ensure_pos_proxy(step: Step) -> None:
    """Rollback of Restart pos proxy: if ocp_agentd runs but pos_proxy does not, start it again."""
    agent = agent_of(step)
    status = agent.status(step.deadline)
    if not status.running or POS_PROXY in status.pids:
        step.log.info(f"nothing to undo here: agent {status.describe()}")
        return
    now = agent.ctl_then_status("start", POS_PROXY, step.deadline, doing=f"starting {POS_PROXY} again")
    agent.wait_until(lambda s: POS_PROXY in s.pids, step.deadline, what=f"{POS_PROXY} runs", first=now)
