"""Agent control: the OCP agent 4.x CLI contract (obagent's), spoken over a Runner.

``{agent_home}/bin/ocp_agentctl status|start|stop|service start NAME|service stop NAME`` answer
``{"successful": bool, "message": ..., "error": ...}``; pid files live in ``{agent_home}/run/<name>.pid``.

Every command is built from argv lists (``steps.runner.sh``) or is one of the fixed scripts below, which take
their inputs as positional parameters (``steps.runner.Script``): no value is ever pasted into shell text. Values are
validated upstream (the inventory) too. The sandbox's FakeAgent (``deployments/sandbox/fake_agent.py``) answers
exactly these commands; ``tests/agent_contract.py`` holds it and the sandbox's shell agent to one contract.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from .errors import AgentError, SubtaskCancelled
from .runner import CommandResult, Runner, Script, integers, is_decimal, sh

AGENTD = "ocp_agentd"
POS_PROXY = "ocp_mgragent"  # 4.x: the command channel (port 62888) that OCP 3.x called pos_proxy
SERVICES = ("ocp_mgragent", "ocp_monagent")
PROCESSES = (AGENTD, *SERVICES)
POLL_SECONDS = 0.1
MARK = "@@ocp-restart@@"  # separates the parts of a compound command's output
SIGNALS = ("TERM", "KILL")

# `ocp_agentctl status`, or exit 127 if the CLI is not there. $1: the CLI.
STATUS_IF_CLI = Script("status_if_cli", '[ -x "$1" ] || exit 127; exec "$1" status')
# Prints `name pid start-time` for each run/<name>.pid holding a number (the start time, clock ticks since boot,
# field 22 of /proc/PID/stat, is `-` when that process is gone), then MARK, then runs `ocp_agentctl stop`. $1: the
# CLI, $2: the run directory, the rest: the process names. Shell builtins only: it used to fork head, sed and cut
# per process, 9 processes per host on the step where the hosts are busiest (#14). `set -f`: the unquoted
# expansion that splits the stat line into fields must not glob. The comm field may hold spaces and ")": what
# follows the last ") " is field 3 on.
# st := the line of /proc/$p/stat ('' when that process is gone): what every script below reads a process from.
_READ_STAT = 'st=; { read -r st <"/proc/$p/stat"; } 2>/dev/null'
STOP_ALL = Script(
    "identities_then_stop",
    'set -f; ctl=$1 run=$2; shift 2; for n in "$@"; do p=; { read -r p <"$run/$n.pid"; } 2>/dev/null; '
    "case $p in ''|*[!0-9]*) continue;; esac; "
    f's=-; {_READ_STAT}; if [ -n "$st" ]; then set -- ${{st##*) }}; s=${{20:--}}; fi; '
    'echo "$n $p $s"; done; echo @@ocp-restart@@; exec "$ctl" stop',
)
# Prints `pid start-time` for each live pid given. $@: the pids. Builtins only, as above.
START_TIMES = Script(
    "start_times",
    f'set -f; for p in "$@"; do {_READ_STAT}; [ -n "$st" ] || continue; '
    'set -- ${st##*) }; echo "$p ${20}"; done; true',
)
# Prints `pid state comm` for each given pid that has a process (state: field 3 of /proc/PID/stat, Z for a
# zombie). Shell builtins only: `ps -p` reads every process on the host to print a few, which cost 90 ms of CPU per
# call with 3,000 processes and made Stop all 3.4x the floor's at 1,000 sandbox hosts (#14). comm is what lies
# between the first "(" and the last ") ".
_LIVE_LOOP = (
    f'for p in "$@"; do {_READ_STAT}; [ -n "$st" ] || continue; '
    'c=${st#*(}; c=${c%) *}; set -- ${st##*) }; echo "$p $1 $c"; done'
)
LIVE = Script("live", f"set -f; {_LIVE_LOOP}; true")  # $@: the pids
# The same, then MARK, then `ocp_agentctl status` (whose exit status is the command's). $1: the CLI, the rest: pids.
LIVE_THEN_STATUS = Script("live_then_status", f'set -f; ctl=$1; shift; {_LIVE_LOOP}; echo {MARK}; exec "$ctl" status')
# Sends a signal to processes, quietly (some may be gone already). $1: the signal name, the rest: the pids.
SIGNAL = Script("signal", 'sig=$1; shift; kill -s "$sig" "$@" 2>/dev/null; true')
# What the agent looks like now, in one round trip: `uptime SECONDS` (/proc/uptime), then `name pid start-time` for
# each run/<name>.pid holding a number (start time as in STOP_ALL, `-` when that process is gone), then MARK, then
# `ocp_agentctl status` (whose exit status is the command's). $1: the CLI, $2: the run directory, the rest: names.
OBSERVE = Script(
    "observe",
    'set -f; ctl=$1 run=$2; shift 2; up=0; { read -r up _ </proc/uptime; } 2>/dev/null; echo "uptime $up"; '
    'for n in "$@"; do p=; { read -r p <"$run/$n.pid"; } 2>/dev/null; '
    "case $p in ''|*[!0-9]*) continue;; esac; "
    f's=-; {_READ_STAT}; if [ -n "$st" ]; then set -- ${{st##*) }}; s=${{20:--}}; fi; '
    f'echo "$n $p $s"; done; echo {MARK}; exec "$ctl" status',
)
SCRIPTS = (STATUS_IF_CLI, STOP_ALL, START_TIMES, LIVE, LIVE_THEN_STATUS, SIGNAL)  # what a restart's steps send
VIEW_SCRIPTS = (OBSERVE,)  # what reading the agent sends (the API's GET .../agent); no restart step sends it
CLOCK_TICKS = 100  # USER_HZ: the unit of /proc/PID/stat's start time on Linux (sysconf(_SC_CLK_TCK))


@dataclass(frozen=True)
class AgentStatus:
    """What ``ocp_agentctl status`` said. ``running`` is False when agentd is down."""

    running: bool
    ready: bool = False
    pids: dict[str, int] = field(default_factory=dict)  # process name -> pid, only running ones

    def describe(self) -> str:
        if not self.running:
            return "agent not running"
        pids = ", ".join(f"{name}={self.pids.get(name, '-')}" for name in PROCESSES)
        return f"{'ready' if self.ready else 'not ready'} ({pids})"


@dataclass(frozen=True)
class AgentObservation:
    """The agent as one ``observe`` saw it: its status, and for each process ``ocp_agentctl status`` names running,
    how long it has run (seconds; None when its pid file did not name that process) and its ports."""

    status: AgentStatus
    elapsed: dict[str, float] = field(default_factory=dict)
    ports: dict[str, str] = field(default_factory=dict)
    output: str = ""


class AgentControl:
    """Drive one host's agent. ``log`` receives every command and its output."""

    def __init__(
        self, runner: Runner, agent_home: str, log: Callable[[str], None], stop: Callable[[], bool] | None = None
    ) -> None:
        self.runner = runner
        self.home = agent_home
        self.log = log
        self.stop = stop
        self.ctl = f"{agent_home}/bin/ocp_agentctl"  # a path, an argv element; quoted where rendered
        self.run_dir = f"{agent_home}/run"

    def _exec(self, command: str, deadline: float) -> CommandResult:
        return self.runner.run(command, deadline=deadline, stop=self.stop)

    def _run(self, command: str, deadline: float, *, shown: str | None = None) -> CommandResult:
        """Run and log: the command (or ``shown``, a readable account of a compound one), its output, its failure."""
        self.log(f"$ {shown or command}")
        result = self._exec(command, deadline)
        if result.output:
            self.log(result.output)
        if not result.ok:
            self.log(f"(exit status {result.exit_status}, {result.seconds:.2f} s)")
        return result

    def status(self, deadline: float, *, quiet: bool = False, require_cli: bool = False) -> AgentStatus:
        """``ocp_agentctl status``; with ``require_cli`` the same round trip first checks the CLI is there."""
        plain = sh([self.ctl, "status"])
        if require_cli:
            result = self._run(STATUS_IF_CLI.render(self.ctl), deadline, shown=f"{plain}   # if it is executable")
            if result.exit_status == 127:
                raise AgentError(f"agent CLI {self.ctl} is missing or not executable")
        else:
            result = self._exec(plain, deadline) if quiet else self._run(plain, deadline)
        return parse_status(result.ok, result.stdout)

    def ctl_command(self, args: Sequence[str], deadline: float, *, doing: str) -> None:
        """``ocp_agentctl ARGS``; AgentError with the agent's own error if it fails."""
        result = self._run(sh([self.ctl, *args]), deadline)
        if not result.ok:
            raise AgentError(
                f"{doing} failed: ocp_agentctl {shlex.join(args)} exited {result.exit_status}: {error_of(result)}"
            )

    def ctl_then_status(self, *commands: Sequence[str], deadline: float, doing: str) -> AgentStatus:
        """``ocp_agentctl ARGS && ...`` (one or more, e.g. ``("start",)``) and, if they all succeeded,
        ``ocp_agentctl status``, in one round trip: an agent that is ready when its CLI returns needs no second one.
        AgentError (as ``ctl_command``) if one of them failed."""
        calls = [[self.ctl, *args] for args in commands]
        result = self._run(
            sh(*calls, ["echo", MARK], [self.ctl, "status"]), deadline, shown=sh(*calls, [self.ctl, "status"])
        )
        # `A && B && echo MARK && status`: MARK printed iff A and B succeeded; else the exit status is the failure's.
        answer, mark, status = result.stdout.partition(f"{MARK}\n")
        what = " && ".join(f"ocp_agentctl {shlex.join(args)}" for args in commands)
        if not mark:
            if result.ok:
                raise AgentError(f"{doing} failed: the host gave no answer for {what}: {result.output[-500:]!r}")
            failed = replace(result, stdout=answer)
            raise AgentError(f"{doing} failed: {what} exited {result.exit_status}: {error_of(failed)}")
        return parse_status(result.ok, status)

    def wait_until(
        self, check: Callable[[AgentStatus], bool], deadline: float, *, what: str, first: AgentStatus | None = None
    ) -> AgentStatus:
        """Poll status until ``check`` holds (``first``: a status just read, checked before polling); AgentError
        naming ``what`` and the last status at the deadline."""
        if first is not None and check(first):
            self.log(f"agent {first.describe()}")
            return first
        last = first or AgentStatus(running=False)
        while time.monotonic() < deadline:
            if self.stop is not None and self.stop():
                raise SubtaskCancelled(f"cancelled by an operator while waiting until {what}")
            last = self.status(deadline, quiet=True)
            if check(last):
                self.log(f"agent {last.describe()}")
                return last
            time.sleep(POLL_SECONDS)
        raise AgentError(f"timed out waiting until {what}; last status: {last.describe()}")

    def live_processes(self, pids: set[int], deadline: float) -> dict[int, str]:
        """Which of ``pids`` are still live agent processes (zombies and reused pids do not count)."""
        if not pids:
            return {}
        return parse_live(self._exec(LIVE.render(*integers(pids)), deadline).stdout)

    def stop_all(self, deadline: float) -> tuple[dict[str, tuple[int, int | None]], CommandResult]:
        """``ocp_agentctl stop``, preceded in the same round trip by the identities of the processes it is about to
        stop: name -> (pid, start time or None). Returns them and the stop's result (its exit status is the
        command's)."""
        result = self._run(
            STOP_ALL.render(self.ctl, self.run_dir, *PROCESSES),
            deadline,
            shown=f"{sh([self.ctl, 'stop'])}   # after reading {self.run_dir}/*.pid and those processes' start times",
        )
        identities, _, stop_output = result.stdout.partition(f"{MARK}\n")
        return parse_identities(identities), replace(result, stdout=stop_output)

    def check_stopped(self, pids: set[int], deadline: float) -> tuple[dict[int, str], AgentStatus]:
        """After a stop, in one round trip: which of ``pids`` still live, and what ``ocp_agentctl status`` says."""
        result = self._run(
            LIVE_THEN_STATUS.render(self.ctl, *integers(pids)),
            deadline,
            shown=f"{sh([self.ctl, 'status'])}   # after checking pids {' '.join(integers(pids)) or '(none)'} in /proc",
        )
        live, _, status = result.stdout.partition(f"{MARK}\n")
        return parse_live(live), parse_status(result.ok, status)

    def start_times(self, pids: set[int], deadline: float) -> dict[int, int]:
        """pid -> its start time (clock ticks since boot, /proc/PID/stat field 22): with the pid, a process's
        identity, since pids are reused (32768 of them on many hosts)."""
        if not pids:
            return {}
        result = self._exec(START_TIMES.render(*integers(pids)), deadline)
        found: dict[int, int] = {}
        for line in result.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2 and is_decimal(parts[0]) and is_decimal(parts[1]):
                found[int(parts[0])] = int(parts[1])
        return found

    def observe(self, deadline: float) -> AgentObservation:
        """The agent's status, its processes' running times (from their pid files and /proc) and ports (as its
        status names them), in one round trip; nothing is logged."""
        result = self._exec(OBSERVE.render(self.ctl, self.run_dir, *PROCESSES), deadline)
        head, _, answer = result.stdout.partition(f"{MARK}\n")
        status = parse_status(result.ok, answer)
        return AgentObservation(
            status=status,
            elapsed=parse_elapsed(head, status.pids),
            ports=parse_ports(answer) if result.ok else {},
            output=result.output,
        )

    def signal(self, pids: set[int], sig: str, deadline: float) -> None:
        """``kill -SIG PIDS``, quietly (some may be gone already). ``sig``: TERM or KILL."""
        if sig not in SIGNALS:
            raise ValueError(f"signal must be one of {SIGNALS}, got {sig!r}")
        listed = integers(pids)
        self._run(SIGNAL.render(sig, *listed), deadline, shown=sh(["kill", f"-{sig}", *listed]))


def parse_live(stdout: str) -> dict[int, str]:
    """``pid state comm`` lines (``LIVE``) -> pid: name, for live agent processes only (not a zombie, not dead)."""
    alive: dict[int, str] = {}
    for line in stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and is_decimal(parts[0]) and parts[1][:1] not in ("Z", "X") and parts[2] in PROCESSES:
            alive[int(parts[0])] = parts[2]
    return alive


def parse_identities(stdout: str) -> dict[str, tuple[int, int | None]]:
    """``name pid start-time`` lines (start time ``-``: that process is gone) -> name: (pid, start time or None)."""
    found: dict[str, tuple[int, int | None]] = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in PROCESSES and is_decimal(parts[1]):
            found[parts[0]] = (int(parts[1]), int(parts[2]) if is_decimal(parts[2]) else None)
    return found


def parse_elapsed(stdout: str, pids: dict[str, int]) -> dict[str, float]:
    """``OBSERVE``'s head (``uptime S`` and ``name pid start-time`` lines) -> name: seconds it has run, for the
    processes whose pid file names the pid ``status`` gave."""
    uptime, starts = None, parse_identities(stdout)
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "uptime":
            try:
                uptime = float(parts[1])
            except ValueError:
                uptime = None
    if not uptime:
        return {}
    return {
        name: max(0.0, uptime - start / CLOCK_TICKS)
        for name, (pid, start) in starts.items()
        if start is not None and pids.get(name) == pid
    }


def parse_ports(stdout: str) -> dict[str, str]:
    """name -> its ports as text (``"62888"``; several comma-separated), where ``status`` lists them (obagent's
    services carry ``ports``); nothing for an answer without them."""
    try:
        services = json.loads(stdout)["message"].get("services") or {}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}
    found: dict[str, str] = {}
    for name, svc in services.items():
        ports = svc.get("ports") if isinstance(svc, dict) else None
        if isinstance(ports, list) and ports and all(isinstance(p, int) and not isinstance(p, bool) for p in ports):
            found[name] = ",".join(str(p) for p in ports)
    return found


def parse_status(ok: bool, stdout: str) -> AgentStatus:
    """``ocp_agentctl status``'s answer; a failed status means agentd is not running. AgentError, quoting the
    output, if a successful status cannot be read."""
    if not ok:
        return AgentStatus(running=False)
    try:
        message = json.loads(stdout)["message"]
        pids = {AGENTD: _pid(message["pid"])}
        for name, svc in (message.get("services") or {}).items():
            if svc.get("state") == "running" and _pid(svc.get("pid") or 0, zero=True) > 0:
                pids[name] = _pid(svc["pid"])
        return AgentStatus(running=True, ready=message.get("ready") is True, pids=pids)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AgentError(
            f"cannot parse `ocp_agentctl status` output ({type(exc).__name__}: {exc}): {stdout[:500]!r}"
        ) from None


def _pid(value: object, *, zero: bool = False) -> int:
    """A pid from JSON: a positive integer (or a string of digits); 0 allowed with ``zero``."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"a pid must be an integer, got {value!r}")
    pid = int(value)
    if pid < 0 or (pid == 0 and not zero):
        raise ValueError(f"a pid must be positive, got {value!r}")
    return pid


def error_of(result: CommandResult) -> str:
    for stream in (result.stderr, result.stdout):
        try:
            return str(json.loads(stream)["error"])
        except (ValueError, KeyError, TypeError):
            continue
    return result.output[-500:] or "(no output)"
