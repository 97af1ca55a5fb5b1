"""Agent control for the older agent generation (Python, OCP <= 3.1: the seed's sample era), spoken over a Runner.

Its tools, in the agent home: ``python ocp_agent_ctl.py start|stop|restart ocp_agent|pos_proxy`` (``ocp_agent``:
the whole agent, i.e. ``PYTHONPATH=libs ./ocp_agentd.py start|stop base``; ``pos_proxy`` alone) and
``python ocp_agent_ctl.py version``. Its processes: ``ocp_agentd`` (the supervisor), ``pos_proxy`` (OCP's command
channel, TCP 62888), ``ocp_exporter``, ``node_exporter`` and the workers ``obstat2``, ``ob_logtailer``,
``ob_cleaner``; each has ``run/NAME.pid``. A process is this home's NAME when its comm is NAME and its command line
names a path under the agent home; never by a pid file alone. The interpreter is ``python`` (the reference's
form), else ``python3``.

As in ``steps.agent``, every command is a fixed ``Script`` taking its inputs as positional parameters. The
sandbox's agent of this generation (``deployments/sandbox/agent_v3``) answers them; ``steps.work_v3`` drives them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from . import agent
from .agent import (
    _READ_STAT,
    CLOCK_TICKS,
    MARK,
    POLL_SECONDS,
    PROBE_LINES,
    AgentObservation,
    AgentStatus,
    Limits,
    Probe,
    ProcessControl,
    candidates,
    parse_clock,
    parse_probe,
)
from .errors import AgentError, SubtaskCancelled
from .runner import CommandResult, Runner, Script, is_decimal, sh

AGENTD = "ocp_agentd"
POS_PROXY = "pos_proxy"
EXPORTERS = ("ocp_exporter", "node_exporter")
WORKERS = ("obstat2", "ob_logtailer", "ob_cleaner")
PROCESSES = (AGENTD, POS_PROXY, *EXPORTERS, *WORKERS)
BASIC = (AGENTD, POS_PROXY, *EXPORTERS)  # must run after a restart; a worker must if it ran before
CTL = "ocp_agent_ctl.py"
WHOLE = "ocp_agent"  # the control script's name for the whole agent
PORTS = {POS_PROXY: "62888", "ocp_exporter": "62889", "node_exporter": "63000"}  # the field's defaults

# The interpreter, as the reference runs the control script (`python ocp_agent_ctl.py ...`); python3 if no python.
_PY = "py=python; command -v python >/dev/null 2>&1 || py=python3"
# An agent process of this home: its command line (NULs dropped by read) names a path under the home. Its scripts
# run by an absolute path, or from the home with a relative one and the home as cwd: the former only is checked.
_OURS = 'l=; { read -r l <"/proc/$p/cmdline"; } 2>/dev/null; case $l in *"$home/"*) o=1;; *) o=;; esac'
# For each name in "$@": `name pid start-time` for a live agent process of this home named by run/NAME.pid, `name
# pid -` when that pid is gone (or a zombie), `stale name pid` when it is a live process that is not this agent's
# (a reused pid): with rm=1 that pid file is removed (the control script's naive check would take the stranger for
# a running agent and never start one). pos_proxy's pid is kept in pp. Needs home=, set -f.
_PIDS = (
    'pp=; for n in "$@"; do p=; { read -r p <"$home/run/$n.pid"; } 2>/dev/null; '
    "case $p in ''|*[!0-9]*) continue;; esac; "
    f"{_READ_STAT}; s=${{st##*) }}; case $s in ''|Z*|X*) echo \"$n $p -\"; continue;; esac; "
    f"c=${{st#*(}}; c=${{c%) *}}; {_OURS}; "
    'if [ "$c" = "$n" ] && [ -n "$o" ]; then set -- ${st##*) }; echo "$n $p ${20}"; '
    '[ "$n" = pos_proxy ] && pp=$p; '
    'else [ -n "$rm" ] && rm -f "$home/run/$n.pid"; echo "stale $n $p"; fi; done'
)
# `listen LINE` for each TCP listener pos_proxy (pid pp) owns, `listen ?` when ss is missing: the listeners of
# `ss -Hltne` (the kernel's socket table, with each socket's inode) whose inode is one of pos_proxy's open files
# (ls -l /proc/PID/fd: socket:[INODE]). `ss -p` would read every process's open files, each status poll.
_LISTEN = (
    'if [ -n "$pp" ]; then if command -v ss >/dev/null; then fds=$(ls -l "/proc/$pp/fd" 2>/dev/null); '
    "ss -Hltne 2>/dev/null | while read -r l; do i=${l#*ino:}; i=${i%% *}; "
    'case $fds in *"socket:[$i]"*) echo "listen $l";; esac; done; else echo "listen ?"; fi; fi'
)
# The agent now: _PIDS and _LISTEN. $1: the agent home, the rest: the process names.
STATUS = Script("v3_status", f"set -f; home=$1; shift; {_PIDS}; {_LISTEN}; true")
# Prepare's round trip (exit 127 if there is no control script): what a restart cannot fix (the lines of
# steps.agent.PREPARE_PROBE: disk, memory, writable, owner, listen, with the sandbox's stand-ins), MARK, the agent
# now (STATUS), MARK, `ocp_agent_ctl.py version` (its exit status is the command's). $1: the agent home, $2: the
# port, the rest: the process names.
PREPARE = Script(
    "v3_prepare",
    f'set -f; home=$1 port=$2; shift 2; [ -f "$home/{CTL}" ] || exit 127; {PROBE_LINES}; '
    f"echo {MARK}; {_PIDS}; {_LISTEN}; echo {MARK}; {_PY}; "
    f'cd "$home" && exec "$py" {CTL} version',
)
# Stop all's round trip: the identities of the processes about to be stopped (_PIDS with rm=1: a pid file naming a
# stranger goes), `clock SECONDS`, MARK, `ocp_agent_ctl.py stop ocp_agent`. $1: the home, the rest: the names.
STOP = Script(
    "v3_stop",
    f'set -f; home=$1; shift; rm=1; {_PIDS}; echo "clock $(date +%s)"; echo {MARK}; {_PY}; '
    f'cd "$home" && exec "$py" {CTL} stop {WHOLE}',
)
# `ocp_agent_ctl.py ACTION TARGET`, then MARK on a line of its own, then STATUS; the exit status is the control
# script's. $1: the home, $2: the action, $3: the target, the rest: the names.
CTL_THEN_STATUS = Script(
    "v3_ctl_then_status",
    f'set -f; home=$1 a=$2 t=$3; shift 3; {_PY}; cd "$home" || exit 127; "$py" {CTL} "$a" "$t"; r=$?; '
    f"printf '\\n%s\\n' {MARK}; {_PIDS}; {_LISTEN}; exit $r",
)
# Every live agent process of this home in /proc (`pid state name`, whatever the pid files say: a killed agentd's
# orphans, duplicates; among the candidates whose command line names a path under the home), MARK, STATUS. $1: the
# home, the rest: the names.
SCAN_THEN_STATUS = Script(
    "v3_scan_then_status",
    f"set -f; home=$1; shift; {candidates('$home/')}; for p in $c; do p=${{p%/cmdline}}; n=; "
    '{ read -r n <"/proc/$p/comm"; } 2>/dev/null; case " $* " in *" $n "*) ;; *) continue;; esac; '
    f'{_OURS}; [ -n "$o" ] || continue; {_READ_STAT}; s=${{st##*) }}; echo "$p ${{s%% *}} $n"; done; '
    f"echo {MARK}; {_PIDS}; {_LISTEN}; true",
)
SCRIPTS = (STATUS, PREPARE, STOP, CTL_THEN_STATUS, SCAN_THEN_STATUS)  # what this generation's steps send
# What reading the agent sends (GET .../agent): exit 127 if the home has no ocp_agentd.py, else `uptime SECONDS`
# (/proc/uptime), STATUS, MARK and `ocp_agent_ctl.py version` (#20: the view shows it). $1: the agent home, the
# rest: the names.
OBSERVE = Script(
    "v3_observe",
    'set -f; home=$1; shift; [ -f "$home/ocp_agentd.py" ] || exit 127; up=0; '
    f'{{ read -r up _ </proc/uptime; }} 2>/dev/null; echo "uptime $up"; {_PIDS}; {_LISTEN}; echo {MARK}; {_PY}; '
    f'cd "$home" && "$py" {CTL} version 2>/dev/null; true',
)


@dataclass(frozen=True)
class StatusV3:
    """The older agent as its pid files and /proc show it: the running processes of this home (name -> pid, and
    their start times), the pid files that named a stranger, and pos_proxy's TCP listeners (None: ss missing)."""

    pids: dict[str, int] = field(default_factory=dict)
    starts: dict[str, int] = field(default_factory=dict)
    stale: tuple[tuple[str, int], ...] = ()
    listeners: tuple[str, ...] | None = ()

    @property
    def running(self) -> bool:
        return AGENTD in self.pids

    @property
    def ports(self) -> list[int]:
        """The TCP ports pos_proxy listens on."""
        found = []
        for line in self.listeners or ():
            parts = line.split()
            if len(parts) >= 4 and is_decimal(parts[3].rpartition(":")[2]):
                found.append(int(parts[3].rpartition(":")[2]))
        return found

    def problem(self, required: tuple[str, ...] = BASIC) -> str:
        """Why this is not a healthy agent ('' if it is): every ``required`` process runs, and pos_proxy listens on
        a TCP port (not checked when ss is missing)."""
        missing = [name for name in required if name not in self.pids]
        if missing:
            return f"not running: {', '.join(missing)} ({self.describe()})"
        if self.listeners is not None and not self.ports:
            return f"{POS_PROXY} (pid {self.pids[POS_PROXY]}) runs but does not listen on a TCP port"
        return ""

    def describe(self) -> str:
        if not self.running:
            return "agent not running"
        pids = ", ".join(f"{name}={self.pids.get(name, '-')}" for name in PROCESSES)
        listening = f"; {POS_PROXY} listens on {','.join(map(str, self.ports))}" if self.ports else ""
        return f"running ({pids}){listening}"


def parse_status(stdout: str) -> StatusV3:
    """STATUS's lines -> StatusV3."""
    pids: dict[str, int] = {}
    starts: dict[str, int] = {}
    stale: list[tuple[str, int]] = []
    listeners: list[str] | None = []
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in PROCESSES and is_decimal(parts[1]) and is_decimal(parts[2]):
            pids[parts[0]], starts[parts[0]] = int(parts[1]), int(parts[2])
        elif len(parts) == 3 and parts[0] == "stale" and parts[1] in PROCESSES and is_decimal(parts[2]):
            stale.append((parts[1], int(parts[2])))
        elif parts[:1] == ["listen"] and listeners is not None:
            rest = line.partition(" ")[2].strip()
            if rest == "?":
                listeners = None
            else:
                listeners.append(rest)
    return StatusV3(pids, starts, tuple(stale), None if listeners is None else tuple(listeners))


def parse_identities(stdout: str) -> dict[str, tuple[int, int | None]]:
    """STOP's head: name -> (pid, start time or None when that process is gone)."""
    found: dict[str, tuple[int, int | None]] = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in PROCESSES and is_decimal(parts[1]):
            found[parts[0]] = (int(parts[1]), int(parts[2]) if is_decimal(parts[2]) else None)
    return found


def parse_live(stdout: str) -> dict[int, str]:
    """``pid state comm`` lines -> pid: name, live agent processes of this generation only."""
    return agent.parse_live(stdout, PROCESSES)


def parse_prepare(stdout: str) -> tuple[Probe, StatusV3, str]:
    """PREPARE's output -> (the probe, the agent now, its version ('' if it said none))."""
    probe_text, _, rest = stdout.partition(f"{MARK}\n")
    status_text, _, version = rest.partition(f"{MARK}\n")
    version = version.strip().splitlines()[-1] if version.strip() else ""
    return parse_probe(probe_text), parse_status(status_text), version


class AgentControlV3(ProcessControl):
    """Drive one host's older-generation agent. ``log`` receives every command and its output."""

    names = PROCESSES
    stop_command = f"{CTL} stop {WHOLE}"

    def __init__(
        self, runner: Runner, agent_home: str, log: Callable[[str], None], stop: Callable[[], bool] | None = None
    ) -> None:
        super().__init__(runner, agent_home, log, stop)
        self.ctl = f"{agent_home}/{CTL}"

    def _shown(self, *args: str) -> str:
        return f"cd {sh([self.home])} && python {sh([CTL, *args])}"

    def prepare(self, limits: Limits, deadline: float) -> tuple[Probe, StatusV3, str]:
        """Prepare's round trip (AgentError if there is no control script): the probe, the agent, its version."""
        result = self._run(
            PREPARE.render(self.home, str(limits.port), *PROCESSES),
            deadline,
            shown=f"{self._shown('version')}   # after df, /proc/meminfo, ss :{limits.port}, run/*.pid",
        )
        return self.prepared(result)

    def prepared(self, result: CommandResult) -> tuple[Probe, StatusV3, str]:
        """PREPARE's result read (also when it came inside the generation-detecting script)."""
        if result.exit_status == 127 and MARK not in result.stdout:
            raise AgentError(f"the older agent's control script {self.ctl} is missing")
        return parse_prepare(result.stdout)

    def status(self, deadline: float, *, quiet: bool = False) -> StatusV3:
        command = STATUS.render(self.home, *PROCESSES)
        shown = f"cat {sh([f'{self.home}/run/'])}*.pid   # and those processes in /proc, pos_proxy's listeners"
        result = self._exec(command, deadline) if quiet else self._run(command, deadline, shown=shown)
        return parse_status(result.stdout)

    def ctl_then_status(self, action: str, target: str, deadline: float, *, doing: str) -> StatusV3:
        """``python ocp_agent_ctl.py ACTION TARGET`` and the agent's status in one round trip; AgentError with the
        control script's output if it failed."""
        result = self._run(
            CTL_THEN_STATUS.render(self.home, action, target, *PROCESSES), deadline, shown=self._shown(action, target)
        )
        answer, _, status = result.stdout.partition(f"\n{MARK}\n")
        if not result.ok:
            said = "\n".join(part for part in (answer.strip(), result.stderr.strip()) if part)
            raise AgentError(
                f"{doing} failed: {CTL} {action} {target} exited {result.exit_status}: {said[-500:] or '(no output)'}"
            )
        return parse_status(status)

    def wait_until(
        self, check: Callable[[StatusV3], bool], deadline: float, *, what: str, first: StatusV3 | None = None
    ) -> StatusV3:
        """Poll status until ``check`` holds (``first``: one just read); AgentError naming ``what`` at the deadline."""
        last = first if first is not None else self.status(deadline, quiet=True)
        while not check(last):
            if time.monotonic() + POLL_SECONDS >= deadline:
                raise AgentError(f"timed out waiting until {what}; last status: {last.describe()}")
            if self.stop is not None and self.stop():
                raise SubtaskCancelled(f"cancelled by an operator while waiting until {what}")
            time.sleep(POLL_SECONDS)
            last = self.status(deadline, quiet=True)
        self.log(f"agent {last.describe()}")
        return last

    def stop_all(self, deadline: float) -> tuple[dict[str, tuple[int, int | None]], CommandResult]:
        """``python ocp_agent_ctl.py stop ocp_agent``, preceded in the same round trip by the identities of the
        processes it is about to stop; a pid file naming a live stranger is removed first (logged)."""
        result = self._run(
            STOP.render(self.home, *PROCESSES),
            deadline,
            shown=f"{self._shown('stop', WHOLE)}   # after reading run/*.pid and those processes' start times",
        )
        identities, _, output = result.stdout.partition(f"{MARK}\n")
        self.clock = parse_clock(identities)
        for name, pid in parse_status(identities).stale:
            self.log(
                f"removed {self.home}/run/{name}.pid: its pid {pid} is a live process that is not {name} of this "
                "agent home (a reused pid); that process is left alone"
            )
        return parse_identities(identities), replace(result, stdout=output)

    def scan_then_status(self, deadline: float) -> tuple[dict[int, str], StatusV3]:
        """Every live agent process of this home in /proc (pid -> name) and the agent's status, one round trip."""
        result = self._run(
            SCAN_THEN_STATUS.render(self.home, *PROCESSES),
            deadline,
            shown=f"# find the agent's processes ({', '.join(PROCESSES)}) of {self.home} in /proc",
        )
        live, _, status = result.stdout.partition(f"{MARK}\n")
        return parse_live(live), parse_status(status)

    def observe(self, deadline: float) -> AgentObservation | None:
        """The agent as the view shows it (the current generation's types: pids, running times, pos_proxy's
        ports), in one round trip, nothing logged; None if this home is not the older agent's."""
        result = self._exec(OBSERVE.render(self.home, *PROCESSES), deadline)
        if result.exit_status == 127:
            return None
        head, _, said = result.stdout.partition(f"{MARK}\n")
        status = parse_status(head)
        version = said.strip().splitlines()[-1] if said.strip() else None
        if version is not None and not re.fullmatch(r"[!-~][ -~]{0,63}", version):  # shown: printable, short
            version = None
        uptime = 0.0
        for line in result.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "uptime":
                try:
                    uptime = float(parts[1])
                except ValueError:
                    uptime = 0.0
        elapsed = (
            {name: max(0.0, uptime - start / CLOCK_TICKS) for name, start in status.starts.items()} if uptime else {}
        )
        ports = {POS_PROXY: ",".join(map(str, status.ports))} if status.ports else {}
        summary = AgentStatus(running=status.running, ready=not status.problem(), pids=dict(status.pids))
        return AgentObservation(status=summary, elapsed=elapsed, ports=ports, output=result.output, version=version)


__all__ = [
    "AGENTD",
    "BASIC",
    "CTL",
    "EXPORTERS",
    "PORTS",
    "POS_PROXY",
    "PROCESSES",
    "SCRIPTS",
    "WORKERS",
    "AgentControlV3",
    "StatusV3",
    "parse_prepare",
    "parse_status",
]
