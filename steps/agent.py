"""Agent control: the OCP agent 4.x CLI contract (obagent's), spoken over a Runner.

``{agent_home}/bin/ocp_agentctl status|start|stop|service start NAME|service stop NAME`` answer
``{"successful": bool, "message": ..., "error": ...}``; pid files live in ``{agent_home}/run/<name>.pid``.
Every value placed in a command is validated upstream and shell-quoted here.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from flows.errors import AgentError, SubtaskCancelled

from .ssh import CommandResult, Runner

AGENTD = "ocp_agentd"
POS_PROXY = "ocp_mgragent"  # 4.x: the command channel (port 62888) that OCP 3.x called pos_proxy
SERVICES = ("ocp_mgragent", "ocp_monagent")
PROCESSES = (AGENTD, *SERVICES)
POLL_SECONDS = 0.1
_MARK = "@@ocp-restart@@"  # separates the parts of a compound command's output


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


class AgentControl:
    """Drive one host's agent. ``log`` receives every command and its output."""

    def __init__(
        self, runner: Runner, agent_home: str, log: Callable[[str], None], stop: Callable[[], bool] | None = None
    ) -> None:
        self.runner = runner
        self.home = agent_home
        self.log = log
        self.stop = stop
        self.ctl = shlex.quote(f"{agent_home}/bin/ocp_agentctl")

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
        command = f"{self.ctl} status"
        if require_cli:
            command = f"test -x {self.ctl} || exit 127; {command}"
        result = self._exec(command, deadline) if quiet else self._run(command, deadline)
        if require_cli and result.exit_status == 127:
            raise AgentError(f"agent CLI {self.home}/bin/ocp_agentctl is missing or not executable")
        return _parse_status(result.ok, result.stdout)

    def ctl_command(self, args: str, deadline: float, *, doing: str) -> None:
        result = self._run(f"{self.ctl} {args}", deadline)
        if not result.ok:
            raise AgentError(f"{doing} failed: ocp_agentctl {args} exited {result.exit_status}: {error_of(result)}")

    def ctl_then_status(self, args: str, deadline: float, *, doing: str) -> AgentStatus:
        """``ocp_agentctl ARGS`` and, if it succeeded, ``ocp_agentctl status``, in one round trip: an agent that is
        ready when its CLI returns needs no second one. AgentError (as ``ctl_command``) if ARGS failed."""
        result = self._run(
            f"{self.ctl} {args}; rc=$?; echo {_MARK} $rc; [ $rc -ne 0 ] || {self.ctl} status", deadline,
            shown=f"{self.ctl} {args} && {self.ctl} status",
        )
        answer, mark, rest = result.stdout.partition(f"{_MARK} ")
        code, _, status = rest.partition("\n")
        if not mark or not code.strip().isdigit():
            raise AgentError(f"{doing} failed: the host gave no exit status for ocp_agentctl {args}: {result.output[-500:]!r}")
        if int(code) != 0:
            failed = replace(result, stdout=answer, exit_status=int(code))
            raise AgentError(f"{doing} failed: ocp_agentctl {args} exited {code.strip()}: {error_of(failed)}")
        return _parse_status(result.ok, status)

    def wait_until(self, check: Callable[[AgentStatus], bool], deadline: float, *, what: str,
                   first: AgentStatus | None = None) -> AgentStatus:
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
        return _parse_live(self._exec(_ps(pids), deadline).stdout)

    def stop_all(self, deadline: float) -> tuple[dict[str, tuple[int, int | None]], CommandResult]:
        """``ocp_agentctl stop``, preceded in the same round trip by the identities of the processes it is about to
        stop: name -> (pid, start time or None). Returns them and the stop's result (its exit status is the
        command's)."""
        result = self._run(
            f"{self._identities_script()}; echo {_MARK}; {self.ctl} stop", deadline,
            shown=f"{self.ctl} stop   # after reading {self.home}/run/*.pid and those processes' start times",
        )
        identities, _, stop_output = result.stdout.partition(f"{_MARK}\n")
        return _parse_identities(identities), replace(result, stdout=stop_output)

    def check_stopped(self, pids: set[int], deadline: float) -> tuple[dict[int, str], AgentStatus]:
        """After a stop, in one round trip: which of ``pids`` still live, and what ``ocp_agentctl status`` says."""
        result = self._run(f"{_ps(pids) if pids else 'true'}; echo {_MARK}; {self.ctl} status", deadline)
        live, _, status = result.stdout.partition(f"{_MARK}\n")
        return _parse_live(live), _parse_status(result.ok, status)

    def _identities_script(self) -> str:
        """Prints ``name pid start-time`` for each ``{agent_home}/run/<name>.pid`` holding a number; the start time
        (clock ticks since boot) is ``-`` when that process is gone."""
        run_dir = shlex.quote(f"{self.home}/run")
        # A subshell, so that its `cd` and `exit` stay inside it when it begins a compound command.
        return (
            f"(cd {run_dir} 2>/dev/null || exit 0; for n in {' '.join(PROCESSES)}; do "
            f"p=$(head -c 32 $n.pid 2>/dev/null) || continue; case $p in ''|*[!0-9]*) continue;; esac; "
            f"s=$(sed 's/^.*) //' /proc/$p/stat 2>/dev/null | cut -d' ' -f20); echo \"$n $p ${{s:--}}\"; done)"
        )

    def start_times(self, pids: set[int], deadline: float) -> dict[int, int]:
        """pid -> its start time (clock ticks since boot, /proc/PID/stat field 22): with the pid, a process's
        identity, since pids are reused (32768 of them on many hosts)."""
        if not pids:
            return {}
        listed = " ".join(str(int(p)) for p in sorted(pids))
        result = self._exec(
            f"for p in {listed}; do [ -r /proc/$p/stat ] && echo \"$p $(sed 's/^.*) //' /proc/$p/stat | cut -d' ' -f20)\"; done; true",
            deadline,
        )
        found: dict[int, int] = {}
        for line in result.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                found[int(parts[0])] = int(parts[1])
        return found

    def signal(self, pids: set[int], sig: str, deadline: float) -> None:
        listed = " ".join(str(int(p)) for p in sorted(pids))
        self._run(f"kill -{sig} {listed} 2>/dev/null; true", deadline)


def _ps(pids: set[int]) -> str:
    return f"ps -o pid=,stat=,comm= -p {','.join(str(int(p)) for p in sorted(pids))} || true"


def _parse_live(stdout: str) -> dict[int, str]:
    alive: dict[int, str] = {}
    for line in stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0].isdigit() and not parts[1].startswith("Z") and parts[2] in PROCESSES:
            alive[int(parts[0])] = parts[2]
    return alive


def _parse_identities(stdout: str) -> dict[str, tuple[int, int | None]]:
    found: dict[str, tuple[int, int | None]] = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in PROCESSES and parts[1].isdigit():
            found[parts[0]] = (int(parts[1]), int(parts[2]) if parts[2].isdigit() else None)
    return found


def _parse_status(ok: bool, stdout: str) -> AgentStatus:
    """``ocp_agentctl status``'s answer; a failed status means agentd is not running."""
    if not ok:
        return AgentStatus(running=False)
    try:
        message = json.loads(stdout)["message"]
        pids = {AGENTD: int(message["pid"])}
        for name, svc in message.get("services", {}).items():
            if svc.get("state") == "running" and int(svc.get("pid") or 0) > 0:
                pids[name] = int(svc["pid"])
        return AgentStatus(running=True, ready=bool(message.get("ready")), pids=pids)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AgentError(f"cannot parse `ocp_agentctl status` output ({exc}): {stdout[:500]!r}") from None


def error_of(result: CommandResult) -> str:
    for stream in (result.stderr, result.stdout):
        try:
            return str(json.loads(stream)["error"])
        except (ValueError, KeyError, TypeError):
            continue
    return result.output[-500:] or "(no output)"
