"""Each DAG node's work on its host, for the host's agent generation (issue #20): the current Go agent
(``steps.work``) or the older Python one (``steps.work_v3``), the same node names and DAG either way.

A host's inventory key ``agent_generation`` says which ("4", "3"), or "auto": Prepare detects it in its one round
trip (``DETECT_THEN_PREPARE``: ``bin/ocp_agentctl`` executable -> 4; ``ocp_agentd.py`` with ``libs/`` or
``agent/pos.py`` -> 3) and records a detected 3 for the later nodes of the task (``recorded_pids("generation")``;
none recorded: 4). On the current generation the detecting script's answer is exactly what ``steps.work.prepare``
reads, so that step runs unchanged on it (``_Replayed``): no extra round trip for the hosts most fleets have.
"""

from __future__ import annotations

from collections.abc import Callable

from . import agent_v3, work, work_v3
from .agent import MARK, PREPARE_PROBE, STATUS_IF_CLI, Limits
from .errors import AgentError
from .inventory import Host
from .runner import CommandResult, Runner, Script
from .step import Log, Step

OLDER = "3"
CURRENT = "4"
_IS_V3 = '[ -f "$2/ocp_agentd.py" ] && { [ -d "$2/libs" ] || [ -f "$2/agent/pos.py" ]; }'
# Prepare on a host of unknown generation: `generation 4` and PREPARE_PROBE, or `generation 3` and
# agent_v3.PREPARE, or `generation -` and exit 127. $1: the current CLI, $2: the agent home, $3: the port, the
# rest: the older generation's process names.
DETECT_THEN_PREPARE = Script(
    "detect_then_prepare",
    f'if [ -x "$1" ]; then echo "generation 4"; {PREPARE_PROBE.body}; elif {_IS_V3}; then echo "generation 3"; '
    f'shift; {agent_v3.PREPARE.body}; else echo "generation -"; exit 127; fi',
)
# A stop's Prepare on a host of unknown generation: `generation 4` and STATUS_IF_CLI, or `generation 3` and
# agent_v3.STATUS. $1: the current CLI, $2: the agent home, the rest: the older generation's process names.
DETECT_THEN_STATUS = Script(
    "detect_then_status",
    f'if [ -x "$1" ]; then echo "generation 4"; {STATUS_IF_CLI.body}; elif {_IS_V3}; then echo "generation 3"; '
    f'shift; {agent_v3.STATUS.body}; else echo "generation -"; exit 127; fi',
)
SCRIPTS = (DETECT_THEN_PREPARE, DETECT_THEN_STATUS)


def generation_of(step: Step) -> str:
    """The host's agent generation for this task: the inventory's, else what Prepare detected ("4" if nothing)."""
    declared = step.host.agent_generation
    if declared != "auto":
        return declared
    return OLDER if (step.recorded_pids("generation") or {}).get("generation") == 3 else CURRENT


def _detect(step: Step, script: Script, args: tuple[str, ...]) -> tuple[str, CommandResult]:
    """Run a detecting script (args: the current CLI, the agent home, ...): (the generation, its answer without the
    generation line). AgentError, the command and its output logged, when neither agent is there."""
    result = step.runner().run(script.render(*args), deadline=step.deadline, stop=step.cancelled)
    first, _, rest = result.stdout.partition("\n")
    found = first.removeprefix("generation ").strip() if first.startswith("generation ") else "-"
    if found not in (CURRENT, OLDER):
        ctl, home = args[0], args[1]
        step.log.info(f"$ [ -x {ctl} ] || [ -f {home}/ocp_agentd.py ]   # which agent generation is there")
        if result.output:
            step.log.info(result.output)
        raise AgentError(
            f"no OCP agent in {step.host.agent_home}: neither bin/ocp_agentctl (the current generation) nor "
            "ocp_agentd.py with libs/ (the older) is there; check the host's agent_home in the inventory"
        )
    what = "bin/ocp_agentctl" if found == CURRENT else "ocp_agentd.py, libs/"
    step.log.info(f"agent generation {found}: detected ({what} in {step.host.agent_home})")
    if found == OLDER:
        step.record_pids("generation", {"generation": 3})
    return found, CommandResult(result.command, result.exit_status, rest, result.stderr, result.seconds)


def prepare(step: Step) -> None:
    """Prepare restart on the declared generation, or detect it in the same round trip (auto)."""
    if step.host.agent_generation == OLDER:
        return work_v3.prepare(step)
    if step.host.agent_generation == CURRENT:
        return work.prepare(step)
    home = step.host.agent_home
    ctl = f"{home}/bin/ocp_agentctl"
    expected = PREPARE_PROBE.render(ctl, home, str(step.limits.port))
    found, answer = _detect(step, DETECT_THEN_PREPARE, (ctl, home, str(step.limits.port), *agent_v3.PROCESSES))
    if found == OLDER:
        step.log.info(f"$ cd {home} && python ocp_agent_ctl.py version   # after df, /proc/meminfo, ss, run/*.pid")
        if answer.output:
            step.log.info(answer.output)
        return work_v3.prepare(step, answer)
    return work.prepare(_Replayed(step, expected, answer))


def prepare_stop(step: Step) -> None:
    """A stop's Prepare on the declared generation, or detect it in the same round trip (auto)."""
    if step.host.agent_generation == OLDER:
        return work_v3.prepare_stop(step)
    if step.host.agent_generation == CURRENT:
        return work.prepare_stop(step)
    home = step.host.agent_home
    ctl = f"{home}/bin/ocp_agentctl"
    found, answer = _detect(step, DETECT_THEN_STATUS, (ctl, home, *agent_v3.PROCESSES))
    if found == OLDER:
        return work_v3.prepare_stop(step, agent_v3.parse_status(answer.stdout))
    return work.prepare_stop(_Replayed(step, STATUS_IF_CLI.render(ctl), answer))


def _by_generation(current: Callable[[Step], None], older: Callable[[Step], None]) -> Callable[[Step], None]:
    def node(step: Step) -> None:
        (older if generation_of(step) == OLDER else current)(step)

    node.__name__, node.__doc__ = current.__name__, f"{current.__name__} on the host's agent generation"
    return node


restart_pos_proxy = _by_generation(work.restart_pos_proxy, work_v3.restart_pos_proxy)
stop_all = _by_generation(work.stop_all, work_v3.stop_all)
start_all = _by_generation(work.start_all, work_v3.start_all)
finish = _by_generation(work.finish, work_v3.finish)
finish_stop = _by_generation(work.finish_stop, work_v3.finish_stop)
ensure_running = _by_generation(work.ensure_running, work_v3.ensure_running)
ensure_pos_proxy = _by_generation(work.ensure_pos_proxy, work_v3.ensure_pos_proxy)
nothing_to_undo = work.nothing_to_undo


class _ReplayRunner:
    """The step's runner, but ``expected`` (the command the current generation's step sends first) is answered by
    ``answer``, already read by the detecting script: the step's logic runs unchanged, without a second trip."""

    def __init__(self, runner: Runner, expected: str, answer: CommandResult) -> None:
        self.runner, self.expected = runner, expected
        self.answer: CommandResult | None = answer

    def run(self, command: str, *, deadline: float, stop: Callable[[], bool] | None = None) -> CommandResult:
        answer = self.answer
        if answer is not None and command == self.expected:
            self.answer = None  # once: a later identical command goes to the host
            return CommandResult(command, answer.exit_status, answer.stdout, answer.stderr, answer.seconds)
        return self.runner.run(command, deadline=deadline, stop=stop)


class _Replayed:
    """``step`` with a ``_ReplayRunner``."""

    def __init__(self, step: Step, expected: str, answer: CommandResult) -> None:
        self.step = step
        self.host: Host = step.host
        self.deadline: float = step.deadline
        self.timeout: int = step.timeout
        self._runner = _ReplayRunner(step.runner(), expected, answer)

    @property
    def log(self) -> Log:
        return self.step.log

    @property
    def limits(self) -> Limits:
        return self.step.limits

    def runner(self) -> Runner:
        return self._runner

    def cancelled(self) -> bool:
        return self.step.cancelled()

    def may_act(self) -> None:
        self.step.may_act()

    def record_pids(self, phase: str, pids: dict[str, int]) -> None:
        self.step.record_pids(phase, pids)

    def recorded_pids(self, phase: str) -> dict[str, int] | None:
        return self.step.recorded_pids(phase)

    def record_version(self, version: str) -> None:
        self.step.record_version(version)


__all__ = [
    "DETECT_THEN_PREPARE",
    "DETECT_THEN_STATUS",
    "MARK",
    "SCRIPTS",
    "ensure_pos_proxy",
    "ensure_running",
    "finish",
    "finish_stop",
    "generation_of",
    "nothing_to_undo",
    "prepare",
    "prepare_stop",
    "restart_pos_proxy",
    "start_all",
    "stop_all",
]
