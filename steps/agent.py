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
import re
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from .errors import AgentError, CommandTimeout, SubtaskCancelled
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
# Reads each run/<name>.pid holding a number and prints `name pid start-time` if that pid is a live agent process of
# this home (see _OURS), `name pid -` if it is gone (or a zombie), or `stale name pid` if it is a live process that
# is no agent's (a reused pid): that pid file is removed, so that the stop cannot signal that process and the next
# start (whose agentd writes its pid file exclusively) can succeed. Then MARK, then `ocp_agentctl stop`. $1: the
# CLI, $2: the agent home, the rest: the process names. Shell builtins only: it used to fork head, sed and cut per
# process, 9 processes per host on the step where the hosts are busiest (#14). `set -f`: the unquoted expansion that
# splits the stat line into fields must not glob. The comm field may hold spaces and ")": what follows the last ")
# " is field 3 on.
# st := the line of /proc/$p/stat ('' when that process is gone): what every script below reads a process from.
_READ_STAT = 'st=; { read -r st <"/proc/$p/stat"; } 2>/dev/null'
# An agent process of this home, named $n: its comm is $n and its command line starts with {home}/bin/$n (obagent
# starts every program by its absolute path; the shell's read drops the NULs between the arguments). The
# executable alone would not do: the sandbox's services are scripts and a symlink to sleep, one for every host.
_OURS = 'l=; { read -r l <"/proc/$p/cmdline"; } 2>/dev/null; case $l in "$home/bin/$n"*) o=1;; *) o=;; esac'
_IDENTITIES = (  # needs ctl=, home=, set -f; the names in "$@" (also kept in $names: the loop clobbers "$@")
    'names=$*; for n in "$@"; do p=; { read -r p <"$home/run/$n.pid"; } 2>/dev/null; '
    "case $p in ''|*[!0-9]*) continue;; esac; "
    f"{_READ_STAT}; s=${{st##*) }}; case $s in ''|Z*|X*) echo \"$n $p -\"; continue;; esac; "
    f"c=${{st#*(}}; c=${{c%) *}}; {_OURS}; "
    'if [ "$c" = "$n" ] && [ -n "$o" ]; then set -- ${st##*) }; echo "$n $p ${20}"; '
    'else rm -f "$home/run/$n.pid"; echo "stale $n $p"; fi; done; echo "clock $(date +%s)"; echo @@ocp-restart@@'
)
STOP_ALL = Script("identities_then_stop", f'set -f; ctl=$1 home=$2; shift 2; {_IDENTITIES}; exec "$ctl" stop')


# The pids of the host's processes whose command line holds NEEDLE, as `PID/cmdline` words in $c: candidates for
# a scan of the agent's own processes. One grep over /proc/*/cmdline: a builtin loop reading each process's comm
# and command line cost ~100 ms of CPU with 3,000 processes on the machine (the sandbox's 1,000 hosts share one
# /proc); grep costs Stop all 28 ms more with those 3,000 than with none (bench.remote_cpu). Every pid of the host
# when there is no grep. The subshell globs even under `set -f`.
def candidates(needle: str) -> str:
    return (
        "if command -v grep >/dev/null 2>&1; then "
        f'c=$(set +f; cd /proc && grep -lF -- "{needle}" [0-9]*/cmdline 2>/dev/null); '
        "else c=$(set +f; cd /proc && echo [0-9]*); fi"
    )


# Prints `pid state comm` (as LIVE) for every process of the host that is an agent process of this home (_OURS),
# whatever its pid file says: duplicates, the orphans of a killed agentd. Found among the candidates whose command
# line names {home}/bin/, each then checked as _OURS does. Needs home=, names= (the process names).
_SCAN = (
    f"{candidates('$home/bin/')}; for p in $c; do p=${{p%/cmdline}}; n=; "
    '{ read -r n <"/proc/$p/comm"; } 2>/dev/null; case " $names " in *" $n "*) ;; *) continue;; esac; '
    f'{_OURS}; [ -n "$o" ] || continue; {_READ_STAT}; s=${{st##*) }}; echo "$p ${{s%% *}} $n"; done'
)
# _SCAN, then MARK, then `ocp_agentctl status`. $1: the CLI, $2: the agent home, the rest: the process names.
SCAN_THEN_STATUS = Script(
    "scan_then_status",
    f'set -f; ctl=$1 home=$2; shift 2; names=$*; {_SCAN}; echo {MARK}; exec "$ctl" status',
)
# What a restart cannot fix, as PREPARE_PROBE (and the older generation's) print it; needs home= and port=. Who
# listens on the port: `ss -Hltn` first, which reads the kernel's socket table only; `ss -p` (which reads every
# process's open files to name the holders: 56 ms of CPU with 3,000 processes on the machine, the sandbox's 1,000
# hosts share one) only when something listens there. A real host's running agent listens on it: its own few hundred
# processes are read; an idle port costs nothing more.
PROBE_LINES = (
    'f=$home/faults/free_disk_mb; if [ -r "$f" ]; then read -r v <"$f"; echo "disk $((v * 1024)) simulated"; '
    'else df -Pk "$home" 2>/dev/null | { read -r _; read -r _ _ _ a _; echo "disk ${a:-?}"; }; fi; '
    'f=$home/faults/free_memory_mb; if [ -r "$f" ]; then read -r v <"$f"; echo "memory $((v * 1024)) simulated"; '
    'else while read -r k v _; do [ "$k" = MemAvailable: ] && echo "memory $v" && break; done </proc/meminfo; fi; '
    'if { true >>"$home/run/.ocp-restart-probe"; } 2>/dev/null; then echo "writable yes"; else echo "writable no"; fi; '
    'echo "owner $(stat -c %U "$home" 2>/dev/null)"; '
    'if command -v ss >/dev/null; then if [ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ]; then '
    'ss -Hltnp "sport = :$port" 2>/dev/null | while read -r l; do echo "listen $l"; done; fi; '
    'else echo "listen ?"; fi'
)
# Prepare's probe of what a restart cannot fix, then MARK, then `ocp_agentctl status` (exit 127 first if the CLI is
# not there). Prints `disk KB` (free space of the agent home's filesystem, df), `memory KB` (MemAvailable),
# `writable yes|no` (a file can be created in run/: `true`, not the special builtin `:`, whose failed
# redirection would end the script), `owner NAME` (the agent home's owner, the agent's user:
# UNKNOWN when it has no account), `listen LINE` per TCP listener on the agent's port (ss, with its process;
# `listen ?` when ss is missing) and `version ANSWER` (`ocp_agentctl version`'s JSON, #20: no round trip of its
# own). SANDBOX ONLY: the files {home}/faults/free_disk_mb and free_memory_mb, when present, stand in for the
# measurement (`disk KB simulated`), so that tests can put a host "out of disk" without filling one; no real agent
# home has a faults/ directory. $1: the CLI, $2: the agent home, $3: the agent's port.
PREPARE_PROBE = Script(
    "prepare_probe",
    f'[ -x "$1" ] || exit 127; ctl=$1 home=$2 port=$3; {PROBE_LINES}; '
    "printf 'version '; \"$ctl\" version 2>/dev/null; echo; "
    f'echo {MARK}; exec "$ctl" status',
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


# Health: `ocp_agentctl status`, then MARK on a line of its own (status prints no trailing newline), then what
# ocp_mgragent answers on its unix socket run/ocp_mgragent.<pid>.sock (the pid its pid file holds) for
# GET /api/v1/status, by curl (its error text when it fails, e.g. no socket yet) or, on a host without curl (#20),
# by python3 (the last line of its traceback when it fails); the exit status is status's. $1: the CLI, $2: the agent
# home. `command -v` is a builtin: the fallback costs nothing where curl is there.
_PY_GET = (  # HTTP/1.0 GET on a unix socket: the body of the answer (the server closes after it). No ' inside.
    r"import socket,sys;c=socket.socket(socket.AF_UNIX);c.settimeout(2);c.connect(sys.argv[1]);"
    r'c.sendall(b"GET /api/v1/status HTTP/1.0\r\nHost: localhost\r\n\r\n");'
    r'd=b"".join(iter(lambda:c.recv(65536),b""));sys.stdout.write(d.partition(b"\r\n\r\n")[2].decode(errors="replace"))'
)
_HEALTH = (
    "\"$ctl\" status; r=$?; printf '\\n%s\\n' @@ocp-restart@@; p=; "
    '{ read -r p <"$home/run/ocp_mgragent.pid"; } 2>/dev/null; '
    "case $p in ''|*[!0-9]*) echo 'no pid file'; exit $r;; esac; s=$home/run/ocp_mgragent.$p.sock; "
    'if command -v curl >/dev/null 2>&1; then curl -sS -m 2 --unix-socket "$s" http://localhost/api/v1/status 2>&1; '
    f"elif command -v python3 >/dev/null 2>&1; then python3 -c '{_PY_GET}' \"$s\" 2>&1 | tail -n 1; "
    "else echo 'neither curl nor python3 on the host to ask ocp_mgragent'; fi; exit $r"
)
HEALTH = Script("health", f"ctl=$1 home=$2; {_HEALTH}")
# `ocp_agentctl start` (its failure ends the script with its exit status), then MARK on a line of its own, then
# up to 2 s for mgragent's socket to appear (agentd reports ready before mgragent listens: asked at once, the first
# answer was "no socket" and every host paid one more round trip), then HEALTH: Start all's one round trip when
# the agent serves within those seconds. $1: the CLI, $2: the agent home.
START_THEN_HEALTH = Script(
    "start_then_health",
    f"ctl=$1 home=$2; \"$ctl\" start || exit $?; printf '\\n%s\\n' {MARK}; i=0; while [ $i -lt 40 ]; do p=; "
    '{ read -r p <"$home/run/ocp_mgragent.pid"; } 2>/dev/null; [ -S "$home/run/ocp_mgragent.$p.sock" ] && break; '
    f"sleep 0.05; i=$((i + 1)); done; {_HEALTH}",
)
# Sends a signal to processes, quietly (some may be gone already). $1: the signal name, the rest: the pids.
SIGNAL = Script("signal", 'sig=$1; shift; kill -s "$sig" "$@" 2>/dev/null; true')
# What the agent looks like now, in one round trip: `uptime SECONDS` (/proc/uptime), then `name pid start-time` for
# each run/<name>.pid holding a number (start time as in STOP_ALL, `-` when that process is gone), `version ANSWER`
# (`ocp_agentctl version`, which answers with agentd down too), then MARK, then `ocp_agentctl status` (whose exit
# status is the command's). $1: the CLI, $2: the run directory, the rest: names.
OBSERVE = Script(
    "observe",
    'set -f; ctl=$1 run=$2; shift 2; up=0; { read -r up _ </proc/uptime; } 2>/dev/null; echo "uptime $up"; '
    'for n in "$@"; do p=; { read -r p <"$run/$n.pid"; } 2>/dev/null; '
    "case $p in ''|*[!0-9]*) continue;; esac; "
    f's=-; {_READ_STAT}; if [ -n "$st" ]; then set -- ${{st##*) }}; s=${{20:--}}; fi; '
    f'echo "$n $p $s"; done; printf \'version \'; "$ctl" version 2>/dev/null; echo; echo {MARK}; exec "$ctl" status',
)
# How long one process has run: `uptime SECONDS` (/proc/uptime), then `NAME PID START-TIME` (``-``: no such process),
# as OBSERVE's head (``parse_elapsed``). Restart pos proxy asks it when the service came back with its old pid: on a
# host that creates processes fast, the freed pid can be the next one handed out (seen at 1,000 sandbox hosts).
AGE = Script(
    "age",
    'set -f; n=$1 p=$2; up=0; { read -r up _ </proc/uptime; } 2>/dev/null; echo "uptime $up"; '
    f's=-; {_READ_STAT}; if [ -n "$st" ]; then set -- ${{st##*) }}; s=${{20:--}}; fi; echo "$n $p $s"',
)
# A process with its predecessor's pid is that predecessor unless it is younger than the restart, give or take the
# host's clock ticks (1/100 s) and /proc/uptime's rounding.
AGE_SLACK_SECONDS = 0.5
SCRIPTS = (  # what a restart's steps send
    STATUS_IF_CLI,
    STOP_ALL,
    START_TIMES,
    LIVE,
    LIVE_THEN_STATUS,
    SCAN_THEN_STATUS,
    HEALTH,
    START_THEN_HEALTH,
    PREPARE_PROBE,
    SIGNAL,
    AGE,
)
VIEW_SCRIPTS = (OBSERVE,)  # what reading the agent sends (the API's GET .../agent); no restart step sends it
CLOCK_TICKS = 100  # USER_HZ: the unit of /proc/PID/stat's start time on Linux (sysconf(_SC_CLK_TCK))


@dataclass(frozen=True)
class Limits:
    """What Prepare requires of a host before anything is stopped (RestartOptions sets them for a run)."""

    min_free_disk_mb: int = 64  # free space on the agent home's filesystem
    min_free_memory_mb: int = 64  # MemAvailable
    port: int = 62888  # ocp_mgragent's: no other process may listen on it


@dataclass(frozen=True)
class Probe:
    """What Prepare's probe found on the host (``PREPARE_PROBE``)."""

    disk_kb: int | None = None
    memory_kb: int | None = None
    simulated: tuple[str, ...] = ()  # the sandbox's stand-ins: "disk", "memory"
    writable: bool = True
    owner: str = ""
    listeners: tuple[str, ...] = ()  # ss lines for the port ("?": ss missing)
    version: str | None = None  # `ocp_agentctl version`'s (None: it did not answer)

    def problems(self, limits: Limits, address: str, agent_pids: set[int]) -> list[str]:
        """Why a restart cannot fix this host ([] if none): each a sentence for the subtask's message."""
        found = []
        sim = {"disk": " (simulated)" if "disk" in self.simulated else "", "memory": ""}
        sim["memory"] = " (simulated)" if "memory" in self.simulated else ""
        if self.disk_kb is not None and self.disk_kb < limits.min_free_disk_mb * 1024:
            found.append(
                f"the agent home's filesystem is full: {self.disk_kb // 1024} MB free{sim['disk']}, "
                f"{limits.min_free_disk_mb} MB required (min_free_disk_mb)"
            )
        if not self.writable:
            found.append("the agent home is not writable: cannot create a file in its run/ directory")
        if self.memory_kb is not None and self.memory_kb < limits.min_free_memory_mb * 1024:
            found.append(
                f"too little free memory: {self.memory_kb // 1024} MB available{sim['memory']}, "
                f"{limits.min_free_memory_mb} MB required (min_free_memory_mb)"
            )
        if self.owner == "UNKNOWN":  # stat's name for a uid without an account ('': not read, no check)
            found.append("the agent's user (the agent home's owner) has no account on the host")
        for line in self.listeners:
            holder = _foreign_listener(line, limits.port, address, agent_pids)
            if holder:
                found.append(f"port {limits.port} is held by a process that is not the agent: {holder}")
        return found


def _foreign_listener(line: str, port: int, address: str, agent_pids: set[int]) -> str:
    """An ``ss -Hltnp`` line -> who holds ``port`` if it is not the agent and blocks it on this host ('' if not).
    Any listener on the port blocks the agent's wildcard bind, 127.0.0.1 included, except one bound to another
    loopback address when the host itself is reached on a loopback address: then hosts share one machine (the
    sandbox's are 127.0.0.N of one kernel) and that listener is another host's."""
    parts = line.split()
    if len(parts) < 4:
        return ""
    local = parts[3]
    host, _, local_port = local.rpartition(":")
    host = host.strip("[]").split("%")[0]
    if local_port != str(port):
        return ""
    if address.startswith("127.") and host.startswith("127.") and host != address:
        return ""
    users = re.findall(r'\("([^"]*)",pid=(\d+)', line)
    if users and all(int(pid) in agent_pids for _, pid in users):
        return ""
    who = ", ".join(f"{name} (pid {pid})" for name, pid in users) or "a process of another user"
    return f"{who} listening on {local}"


@dataclass(frozen=True)
class Health:
    """Whether the agent serves: ``ocp_agentctl status`` and what ocp_mgragent answered on its unix socket for
    ``GET /api/v1/status`` (its ``data``: state, version, pid, startAt in ns since the epoch, ports)."""

    status: AgentStatus
    serving: dict[str, object] | None = None
    answer: str = ""  # mgragent's answer (or curl's error) as text, for the log

    def problem(self, since: int | None = None) -> str:
        """Why this is not a healthy agent ('' if it is): both services running (status ready) and mgragent, with
        the pid status gives it, answering ``state: running`` with a ``startAt`` after ``since`` (epoch seconds,
        the host's clock) when given."""
        if not self.status.ready:
            return f"the agent is not ready ({self.status.describe()})"
        data = self.serving
        if data is None:
            return f"{POS_PROXY} does not answer on its unix socket: {self.answer.strip()[-300:] or '(nothing)'}"
        if data.get("state") != "running" or data.get("pid") != self.status.pids.get(POS_PROXY):
            return f"{POS_PROXY} answers, but not as the running {POS_PROXY} of this agent: {data}"
        start_at = data.get("startAt")
        if since is not None and not (isinstance(start_at, int) and start_at > since * 1_000_000_000):
            return f"{POS_PROXY} answers with startAt {start_at}, not after the restart began (host clock {since} s)"
        return ""


class Status(Protocol):
    """What Stop all reads of either generation's status."""

    @property
    def running(self) -> bool: ...

    def describe(self) -> str: ...


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
    version: str | None = None  # `ocp_agentctl version`'s


class ProcessControl:
    """What both agent generations' controls share: commands run on the host (and logged), and the agent's
    processes there checked, dated and signalled by pid. ``names``: the generation's process names;
    ``stop_command``: how its stop is named in logs. Each generation gives ``stop_all`` and ``scan_then_status``, so
    that Stop all (``steps.work.stop_all_of``) is written once."""

    names: tuple[str, ...] = PROCESSES
    stop_command: str = "ocp_agentctl stop"

    def __init__(
        self, runner: Runner, agent_home: str, log: Callable[[str], None], stop: Callable[[], bool] | None = None
    ) -> None:
        self.runner = runner
        self.home = agent_home
        self.log = log
        self.stop = stop
        self.clock: int | None = None  # the host's clock (epoch seconds) as the last stop began

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

    def live_processes(self, pids: set[int], deadline: float) -> dict[int, str]:
        """Which of ``pids`` are still live agent processes (zombies and reused pids do not count)."""
        if not pids:
            return {}
        return parse_live(self._exec(LIVE.render(*integers(pids)), deadline).stdout, self.names)

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

    def stop_all(self, deadline: float) -> tuple[dict[str, tuple[int, int | None]], CommandResult]:
        """The generation's stop, preceded in its round trip by the identities of the processes it is about to stop
        (name -> (pid, start time or None)) and the host's clock (``self.clock``)."""
        raise NotImplementedError

    def scan_then_status(self, deadline: float) -> tuple[dict[int, str], Status]:
        """Every live agent process of this home in /proc (pid -> name), and the agent's status: one round trip."""
        raise NotImplementedError

    def status(self, deadline: float, *, quiet: bool = False) -> Status:
        raise NotImplementedError

    def age(self, name: str, pid: int, deadline: float) -> float | None:
        """How many seconds process ``pid`` (an agent process ``name``) has run, or None if it is gone."""
        result = self._exec(AGE.render(name, *integers({pid})), deadline)
        return parse_elapsed(result.stdout, {name: pid}).get(name)

    def restarted(self, name: str, pid: int | None, old: int | None, began: float, deadline: float) -> bool:
        """Whether ``pid`` (what status names for ``name`` now) is a process started in place of ``old`` since
        ``began`` (time.monotonic()): another pid, or ``old`` again (pids are reused) on a process younger than the
        restart (one AGE round trip, only then)."""
        if pid is None or pid != old:
            return pid is not None
        age = self.age(name, pid, deadline)
        return age is not None and age <= time.monotonic() - began + AGE_SLACK_SECONDS

    def signal(self, pids: set[int], sig: str, deadline: float) -> None:
        """``kill -SIG PIDS``, quietly (some may be gone already). ``sig``: TERM or KILL."""
        if sig not in SIGNALS:
            raise ValueError(f"signal must be one of {SIGNALS}, got {sig!r}")
        listed = integers(pids)
        self._run(SIGNAL.render(sig, *listed), deadline, shown=sh(["kill", f"-{sig}", *listed]))


class AgentControl(ProcessControl):
    """Drive one host's agent. ``log`` receives every command and its output."""

    def __init__(
        self, runner: Runner, agent_home: str, log: Callable[[str], None], stop: Callable[[], bool] | None = None
    ) -> None:
        super().__init__(runner, agent_home, log, stop)
        self.ctl = f"{agent_home}/bin/ocp_agentctl"  # a path, an argv element; quoted where rendered
        self.run_dir = f"{agent_home}/run"

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

    def prepare_probe(self, limits: Limits, deadline: float) -> tuple[Probe, AgentStatus]:
        """Prepare's round trip: the CLI is there (AgentError if not), the host's probe (``PREPARE_PROBE``) and
        ``ocp_agentctl status``."""
        result = self._run(
            PREPARE_PROBE.render(self.ctl, self.home, str(limits.port)),
            deadline,
            shown=f"{sh([self.ctl, 'status'])}   # if it is executable, after df, /proc/meminfo, ss :{limits.port}",
        )
        if result.exit_status == 127 and MARK not in result.stdout:
            raise AgentError(f"agent CLI {self.ctl} is missing or not executable")
        probe_text, _, status = result.stdout.partition(f"{MARK}\n")
        return parse_probe(probe_text), parse_status(result.ok, status)

    def health(self, deadline: float, *, quiet: bool = False) -> Health:
        """One round trip: ``ocp_agentctl status`` and ocp_mgragent's own ``/api/v1/status`` on its unix socket."""
        command = HEALTH.render(self.ctl, self.home)
        shown = f"{sh([self.ctl, 'status'])}   # and GET /api/v1/status on {self.run_dir}/ocp_mgragent.<pid>.sock"
        result = self._exec(command, deadline) if quiet else self._run(command, deadline, shown=shown)
        return self._health_of(result)

    @staticmethod
    def _health_of(result: CommandResult) -> Health:
        status_text, _, answer = result.stdout.partition(f"\n{MARK}\n")
        status = parse_status(result.ok, status_text)
        try:
            data = json.loads(answer)["data"]
            serving = data if isinstance(data, dict) else None
        except (ValueError, KeyError, TypeError):
            serving = None
        return Health(status, serving, answer)

    def start_then_health(self, deadline: float) -> Health:
        """``ocp_agentctl start`` and, if it succeeded, ``health`` in the same round trip; AgentError with the
        agent's own error if the start failed."""
        result = self._run(
            START_THEN_HEALTH.render(self.ctl, self.home),
            deadline,
            shown=f"{sh([self.ctl, 'start'], [self.ctl, 'status'])}   # and GET /api/v1/status on mgragent's socket",
        )
        answer, mark, rest = result.stdout.partition(f"\n{MARK}\n")
        if not mark:
            failed = replace(result, stdout=answer)
            raise AgentError(
                f"starting the agent failed: ocp_agentctl start exited {result.exit_status}: {error_of(failed)}"
            )
        return self._health_of(replace(result, stdout=rest))

    def wait_until_serving(self, deadline: float, *, since: int | None = None, first: Health | None = None) -> Health:
        """Poll ``health`` until the agent is healthy (``Health.problem``; ``first``: one just read, checked before
        polling); AgentError with the last problem at the deadline. ``ready`` alone is not enough: mgragent answers
        a moment after agentd reports it running."""
        last = first or self.health(deadline)
        while problem := last.problem(since):
            if time.monotonic() + POLL_SECONDS >= deadline:
                raise AgentError(f"timed out waiting until the agent serves: {problem}")
            if self.stop is not None and self.stop():
                raise SubtaskCancelled("cancelled by an operator while waiting until the agent serves")
            time.sleep(POLL_SECONDS)
            try:
                last = self.health(deadline, quiet=True)
            except CommandTimeout:  # the deadline came during a poll: the last problem is the answer
                raise AgentError(f"timed out waiting until the agent serves: {problem}") from None
        serving = last.serving or {}
        self.log(
            f"agent {last.status.describe()}; {POS_PROXY} serves (pid {serving.get('pid')}, "
            f"startAt {serving.get('startAt')})"
        )
        return last

    def stop_all(self, deadline: float) -> tuple[dict[str, tuple[int, int | None]], CommandResult]:
        """``ocp_agentctl stop``, preceded in the same round trip by the identities of the processes it is about to
        stop: name -> (pid, start time or None). A pid file naming a live process that is no agent process of this
        home is removed first (logged): the stop must not signal it, and the next start could not write its own.
        Returns the identities and the stop's result (its exit status is the command's)."""
        result = self._run(
            STOP_ALL.render(self.ctl, self.home, *PROCESSES),
            deadline,
            shown=f"{sh([self.ctl, 'stop'])}   # after reading {self.run_dir}/*.pid and those processes' start times",
        )
        identities, _, stop_output = result.stdout.partition(f"{MARK}\n")
        self.clock = parse_clock(identities)
        self._log_stale(identities)
        return parse_identities(identities), replace(result, stdout=stop_output)

    def _log_stale(self, identities: str) -> None:
        for name, pid in parse_stale(identities):
            self.log(
                f"removed {self.run_dir}/{name}.pid: its pid {pid} is a live process that is not {name} of this "
                "agent home (a reused pid); that process is left alone"
            )

    def scan_then_status(self, deadline: float) -> tuple[dict[int, str], AgentStatus]:
        """In one round trip: every live agent process of this home found in /proc (pid -> name), whatever the pid
        files say (duplicates, a killed agentd's orphans), and what ``ocp_agentctl status`` says."""
        result = self._run(
            SCAN_THEN_STATUS.render(self.ctl, self.home, *PROCESSES),
            deadline,
            shown=f"{sh([self.ctl, 'status'])}   # after finding {self.home}/bin/ocp_* processes in /proc",
        )
        live, _, status = result.stdout.partition(f"{MARK}\n")
        return parse_live(live), parse_status(result.ok, status)

    def check_stopped(self, pids: set[int], deadline: float) -> tuple[dict[int, str], AgentStatus]:
        """After a stop, in one round trip: which of ``pids`` still live, and what ``ocp_agentctl status`` says."""
        result = self._run(
            LIVE_THEN_STATUS.render(self.ctl, *integers(pids)),
            deadline,
            shown=f"{sh([self.ctl, 'status'])}   # after checking pids {' '.join(integers(pids)) or '(none)'} in /proc",
        )
        live, _, status = result.stdout.partition(f"{MARK}\n")
        return parse_live(live), parse_status(result.ok, status)

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
            version=parse_version(head),
        )


def parse_live(stdout: str, names: tuple[str, ...] = PROCESSES) -> dict[int, str]:
    """``pid state comm`` lines (``LIVE``) -> pid: name, for live agent processes (``names``) only: not a zombie,
    not dead."""
    alive: dict[int, str] = {}
    for line in stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and is_decimal(parts[0]) and parts[1][:1] not in ("Z", "X") and parts[2] in names:
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


def parse_probe(stdout: str) -> Probe:
    """``PREPARE_PROBE``'s lines -> Probe (a value it could not read stays None: no check)."""
    fields: dict[str, object] = {}
    simulated: list[str] = []
    listeners: list[str] = []
    for line in stdout.splitlines():
        key, _, rest = line.partition(" ")
        words = rest.split()
        if key in ("disk", "memory") and words and is_decimal(words[0]):
            fields[f"{key}_kb"] = int(words[0])
            if words[1:] == ["simulated"]:
                simulated.append(key)
        elif key == "writable":
            fields["writable"] = rest.strip() != "no"
        elif key == "owner":
            fields["owner"] = rest.strip()
        elif key == "listen" and rest.strip() != "?":
            listeners.append(rest.strip())
    fields["version"] = parse_version(stdout)
    return Probe(simulated=tuple(simulated), listeners=tuple(listeners), **fields)  # type: ignore[arg-type]


def parse_version(stdout: str) -> str | None:
    """The ``version ANSWER`` line (``ocp_agentctl version``'s JSON, its ``message``): the agent's version, None
    when the CLI did not answer with one (printable ASCII, at most 64 characters: it is shown and compared)."""
    for line in stdout.splitlines():
        key, _, answer = line.partition(" ")
        if key != "version":
            continue
        try:
            message = json.loads(answer)["message"]
        except (ValueError, KeyError, TypeError):
            return None
        if isinstance(message, str) and 0 < len(message) <= 64 and message.isascii() and message.isprintable():
            return message
        return None
    return None


def parse_clock(stdout: str) -> int | None:
    """The ``clock SECONDS`` line of ``STOP_ALL`` (the host's ``date +%s``), if any."""
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "clock" and is_decimal(parts[1]):
            return int(parts[1])
    return None


def parse_stale(stdout: str) -> list[tuple[str, int]]:
    """``stale name pid`` lines (``STOP_ALL``: pid files removed because they named no agent process)."""
    found = []
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "stale" and parts[1] in PROCESSES and is_decimal(parts[2]):
            found.append((parts[1], int(parts[2])))
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
            return str(json.loads(stream)["error"]).rstrip("; ")  # obagent's ends "...; "
        except (ValueError, KeyError, TypeError):
            continue
    return result.output[-500:] or "(no output)"
