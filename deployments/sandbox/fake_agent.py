"""An in-memory OCP agent 4.x for one host, answering our commands as the sandbox's shell agent (``agent/``) does.

``FakeAgent`` is a ``steps.testing.FakeRunner`` handler: the fast tier and the orchestration bench drive the real
steps against it without sshd or processes. ``tests/agent_contract.py`` holds it to the same contract as the shell
agent it imitates, byte for byte where our steps read the bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from steps.agent import AGENTD, MARK, POS_PROXY, PREPARE_PROBE, SCRIPTS, SERVICES, SIGNALS, STATUS_IF_CLI
from steps.agent_logs import TAIL
from steps.inventory import DEFAULT_AGENT_HOME
from steps.nodes import SCRIPTS as DETECTING
from steps.runner import CommandResult
from steps.testing import Answer, Hang, UnexpectedCommand, result

from .agent_home import FAULTS
from .fake_shell import Hanging, run_list

VERSION = "4.2.1-sandbox"
EPOCH = 1_700_000_000  # the fake clock's epoch seconds at tick 0
CLOCK_TICKS = 100  # clock ticks per second (/proc/PID/stat's unit)
USAGE = "usage: ocp_agentctl status|start|stop|restart|version|service start|stop ocp_mgragent|ocp_monagent"


@dataclass
class FakeProcess:
    pid: int
    name: str  # its comm
    start: int  # clock ticks since boot (/proc/PID/stat field 22)
    parent: int = 0  # a service: the pid of the agentd that started it
    ignores_term: bool = False
    zombie: bool = False
    ours: bool = True  # its command line starts with {home}/bin/NAME (an agent process of this home)


class FakeAgent:
    """One host's OCP agent 4.x, as a ``FakeRunner`` handler, answering as the sandbox's ``ocp_agentctl`` does.

    State: ``processes`` (pid -> FakeProcess), ``pid_files`` (name -> the file's content, read as sh's ``read -r``
    reads it; set one to junk to test parsing), ``disabled`` services. Processes behave as the shell agent's:
    agentd starts a service again when it dies, unless ``service stop`` disabled it; SIGTERM to agentd is a clean
    stop (its services first); SIGKILL to agentd leaves its services running without it, and the next ``start``'s
    agentd SIGTERMs those its pid files name (dangling) before it starts new ones. agentd writes its pid file
    exclusively: a pid file naming any live process makes ``start`` fail (agentd_exited_quickly).
    ``kill(pid, sig)`` sends a signal from outside our commands, ``other_process()`` starts a process that is no
    agent's (one that got an old agent pid, say), ``duplicate(name)`` a second agent process of this home beside
    the one in the pid file.

    The shell agent's fault switches, by its names (``set_fault(name, value)``/``clear_fault(name)``, as
    ``SandboxHost.set_fault`` writes ``{agent_home}/faults/NAME``):

    * ``start_fail``: ``start`` of a stopped agent fails with ``agentd_exited_quickly``.
    * ``agentd_fails`` (value: lines): so does it, after agentd wrote ``ocp_agentd: LINE`` per line to its log.
    * ``stop_hang``: ``stop`` prints ``stopping ocp_agentd (pid N)`` and never returns.
    * ``flood`` (value N): ``stop`` first prints N x's and a newline.
    * ``mgragent_mute``: ocp_mgragent runs but never answers on its unix socket (the health check fails).
    * ``service_ignore_term``: services started while it is on ignore SIGTERM: ``service stop`` of one fails with
      ``wait_for_service_exit_timeout``; ``stop`` fails with ``wait_for_exit_timeout``, leaving agentd waiting for
      them and ignoring SIGTERM itself; SIGKILL ends them.

    Faults the shell agent does not have, set as attributes:

    * ``cli = False``: ``{home}/bin/ocp_agentctl`` is missing (exit 127).
    * ``start_error = "..."``: ``start`` of a stopped agent fails with that error (``start_fail`` sets it).
    * ``stop_leaves = {"ocp_monagent"}``: ``stop`` leaves these processes running (with ``ocp_agentd`` among them
      it fails with ``wait_for_exit_timeout``); ``leftovers_ignore_term = True``: they survive SIGTERM too.
    * ``service_error = "..."``: ``service start|stop`` fails with it.
    * ``lagging_statuses = N``: after ``start`` or ``service start``, the services come up only after N more
      ``status`` calls (the shell agent's CLI returns only once they run: it never lags so).
    * ``reuse_pids = True``: a new process gets the pid its predecessor of the same name had (new start time).
    * ``zombies = True``: a killed process stays a zombie (``ps`` shows state Z).

    ``logs``: name -> (mtime by the fake clock, lines) of the files under ``log/``; ``TAIL`` reads them.

    Records: ``commands`` (every command), ``ctl_calls`` (each ``ocp_agentctl`` argv after the CLI),
    ``signals`` ((signal, pids) sent by our ``kill`` script).
    """

    def __init__(self, home: str = DEFAULT_AGENT_HOME, *, running: bool = True) -> None:
        self.home = home
        self.cli = True
        self.start_error: str | None = None
        self.stop_hangs = False
        self.flood = 0
        self.services_ignore_term = False
        self.stop_leaves: set[str] = set()
        self.leftovers_ignore_term = False
        self.service_error: str | None = None
        self.lagging_statuses = 0
        self.reuse_pids = False
        self.zombies = False
        self.mgragent_mute = False
        self.free_disk_mb: int | None = None  # the sandbox's stand-ins (fault files of those names)
        self.free_memory_mb: int | None = None
        self.writable = True  # run/ accepts a new file
        self.owner = "admin"  # the agent home's owner ("UNKNOWN": no such account)
        self.listeners: list[str] = []  # `ss -Hltnp` lines for the agent's port
        self.agentd_fails: list[str] = []
        self.version = VERSION  # what `version`, `status` and mgragent answer (a host's own: a mixed batch)
        self.logs: dict[str, tuple[int, list[str]]] = {}
        self.processes: dict[int, FakeProcess] = {}
        self.pid_files: dict[str, str] = {}
        self.disabled: set[str] = set()
        self.commands: list[str] = []
        self.ctl_calls: list[list[str]] = []
        self.signals: list[tuple[str, list[int]]] = []
        self._last_pid: dict[str, int] = {}
        self._next_pid = 1000
        self._ticks = 100_000
        self._pending = 0  # statuses until the services come up
        self._stopping = False  # agentd is stopping: it starts no service again
        if running:
            self._start_agent()

    @property
    def ctl(self) -> str:
        return f"{self.home}/bin/ocp_agentctl"

    @property
    def run_dir(self) -> str:
        return f"{self.home}/run"

    def clock(self) -> int:
        """The host's clock now, epoch seconds (``date +%s``): a fake one that advances with the process ticks."""
        return EPOCH + self._ticks // CLOCK_TICKS

    def start_at(self, proc: FakeProcess) -> int:
        """When ``proc`` started, ns since the epoch (mgragent's ``startAt``), on the same fake clock."""
        return (EPOCH * CLOCK_TICKS + proc.start) * (1_000_000_000 // CLOCK_TICKS)

    def pids(self) -> dict[str, int]:
        """The live agent processes by name (the process table's view, not the pid files')."""
        return {p.name: p.pid for p in sorted(self.processes.values(), key=lambda p: p.pid) if not p.zombie}

    def alive(self, pid: int) -> bool:
        proc = self.processes.get(pid)
        return proc is not None and not proc.zombie

    # -- from outside our commands ----------------------------------------------------------------------------

    def set_fault(self, name: str, value: str = "1") -> None:
        """Switch on one of the shell agent's faults (``FAULTS``); ``value`` as its fault file holds it."""
        if name == "start_fail":
            self.start_error = "agentd_exited_quickly"
        elif name == "stop_hang":
            self.stop_hangs = True
        elif name == "flood":
            line = _first_line(value)
            self.flood = int(line) if line else 1_000_000  # the shell agent's default for an empty file
        elif name == "service_ignore_term":
            self.services_ignore_term = True
        elif name == "mgragent_mute":
            self.mgragent_mute = True
        elif name == "free_disk_mb":
            self.free_disk_mb = int(_first_line(value))
        elif name == "free_memory_mb":
            self.free_memory_mb = int(_first_line(value))
        elif name == "agentd_fails":
            self.agentd_fails = value.splitlines() or [""]
        else:
            raise ValueError(f"unknown fault {name!r}; the shell agent's are {FAULTS}")

    def clear_fault(self, name: str) -> None:
        if name == "start_fail":
            self.start_error = None
        elif name == "stop_hang":
            self.stop_hangs = False
        elif name == "flood":
            self.flood = 0
        elif name == "service_ignore_term":
            self.services_ignore_term = False
        elif name == "mgragent_mute":
            self.mgragent_mute = False
        elif name == "free_disk_mb":
            self.free_disk_mb = None
        elif name == "free_memory_mb":
            self.free_memory_mb = None
        elif name == "agentd_fails":
            self.agentd_fails = []
        else:
            raise ValueError(f"unknown fault {name!r}; the shell agent's are {FAULTS}")

    def kill(self, pid: int, sig: str = "TERM") -> None:
        """A signal from outside our commands (an operator, the OOM killer): not recorded in ``signals``."""
        if sig not in SIGNALS:
            raise ValueError(f"signal must be one of {SIGNALS}, got {sig!r}")
        self._deliver(pid, sig)

    def other_process(self, name: str = "sleep") -> int:
        """Start a live process of the agent's user that is no agent's; its pid."""
        proc = self._new_process(name)
        proc.ours = False
        return proc.pid

    def duplicate(self, name: str) -> int:
        """Start a second ``name`` of this home (started by hand, say) that no pid file names and no agentd owns."""
        return self._new_process(name).pid

    # -- the handler ----------------------------------------------------------------------------------------

    def __call__(self, command: str) -> Answer:
        self.commands.append(command)
        tail = TAIL.parse(command)
        if tail is not None:
            return self._log_tail(command, tail)
        for script in (*SCRIPTS, *DETECTING):
            args = script.parse(command)
            if args is not None:
                return getattr(self, f"_script_{script.name}")(command, args)
        return run_list(command, self._simple)

    def _simple(self, argv: list[str]) -> tuple[int, str, str]:
        name, args = argv[0], argv[1:]
        if name.endswith("/ocp_agentctl"):
            return self._ctl_at(name, args)
        if name == "echo":
            return 0, " ".join(args) + "\n", ""
        if name == "true":
            return 0, "", ""
        if name == "false":
            return 1, "", ""
        raise UnexpectedCommand(f"FakeAgent does not know the command {argv!r}")

    def _ctl_at(self, path: str, args: list[str], *, exec_: bool = False) -> tuple[int, str, str]:
        """``PATH ARGS`` (``exec PATH ARGS`` in a script) as /bin/sh runs it: our CLI, or not found."""
        if path != self.ctl or not self.cli:
            return 127, "", f"/bin/sh: 1: {'exec: ' if exec_ else ''}{path}: not found\n"
        self.ctl_calls.append(list(args))
        return self._ctl(args)

    def _proc_stats(self, pids: list[str]) -> str:
        """What steps.agent's LIVE loop prints for ``pids``: ``pid state comm`` per process there is."""
        if not all(p.isdigit() for p in pids):
            raise UnexpectedCommand(f"live processes of {pids!r}: not a list of pids")
        return "".join(
            f"{p.pid} {'Z' if p.zombie else 'S'} {p.name}\n"
            for p in (self.processes.get(int(pid)) for pid in pids)
            if p is not None
        )

    # -- the scripts (steps.agent.SCRIPTS) ------------------------------------------------------------------

    def write_log(self, name: str, *lines: str) -> None:
        """Append ``lines`` to log/NAME (now, by the fake clock)."""
        self.logs[name] = (self.clock(), [*self.logs.get(name, (0, []))[1], *lines])

    def _log_tail(self, command: str, args: list[str]) -> Answer:
        """``steps.agent_logs.TAIL``: each requested log changed within the age, its last lines; the clock."""
        log_dir, age, count, *files = args
        now, out = self.clock(), []
        for name in files:
            if log_dir != f"{self.home}/log" or name not in self.logs or now - self.logs[name][0] > int(age):
                continue
            mtime, lines = self.logs[name]
            out.append(
                f"\n@@ocp-restart@@ {name} {mtime}\n" + "".join(f"{line[:512]}\n" for line in lines[-int(count) :])
            )
        return result(command, "".join(out) + f"\n@@ocp-restart@@ clock {now}\n")

    def _script_status_if_cli(self, command: str, args: list[str]) -> Answer:
        (path,) = args
        if path != self.ctl or not self.cli:
            return result(command, exit_status=127)
        status, stdout, stderr = self._ctl_at(path, ["status"], exec_=True)
        return result(command, stdout, stderr, status)

    def _script_identities_then_stop(self, command: str, args: list[str]) -> Answer:
        path, home, *names = args
        head = self._identities(home, names)
        try:
            status, stdout, stderr = self._ctl_at(path, ["stop"], exec_=True)
        except Hanging as hang:
            return Hang(head + hang.stdout, hang.stderr)
        return result(command, head + stdout, stderr, status)

    def _identities(self, home: str, names: list[str]) -> str:
        """STOP_ALL's head: each pid file's process identity (a stranger's pid file removed), the clock, MARK."""
        lines = []
        for name in names:
            value = self._read_pid(name) if home == self.home else ""
            if not _digits(value):
                continue
            proc = self._proc(value)
            if proc is None or proc.zombie:
                lines.append(f"{name} {value} -\n")
            elif proc.name == name and proc.ours:
                lines.append(f"{name} {value} {proc.start}\n")
            else:  # a live stranger: its pid file goes, it is left alone
                self.pid_files.pop(name, None)
                lines.append(f"stale {name} {value}\n")
        lines.append(f"clock {self.clock()}\n")
        return "".join(lines) + MARK + "\n"

    def _script_start_times(self, command: str, args: list[str]) -> Answer:
        lines = [
            f"{pid} {self.processes[int(pid)].start}\n" for pid in args if pid.isdigit() and int(pid) in self.processes
        ]
        return result(command, "".join(lines))

    def _script_age(self, command: str, args: list[str]) -> Answer:
        """``steps.agent.AGE``: the fake clock's uptime (its ticks) and the process's start time."""
        name, pid = args
        proc = self.processes.get(int(pid)) if pid.isdigit() else None
        start = "-" if proc is None or proc.zombie else str(proc.start)
        return result(command, f"uptime {self._ticks / CLOCK_TICKS:.2f}\n{name} {pid} {start}\n")

    def _script_live(self, command: str, args: list[str]) -> Answer:
        return result(command, self._proc_stats(args))

    def _script_live_then_status(self, command: str, args: list[str]) -> Answer:
        path, *pids = args
        listed = self._proc_stats(pids) + f"{MARK}\n"
        status, stdout, stderr = self._ctl_at(path, ["status"], exec_=True)
        return result(command, listed + stdout, stderr, status)

    def _script_scan_then_status(self, command: str, args: list[str]) -> Answer:
        path, home, *names = args
        listed = self._scan(home, names) + f"{MARK}\n"
        status, stdout, stderr = self._ctl_at(path, ["status"], exec_=True)
        return result(command, listed + stdout, stderr, status)

    def _scan(self, home: str, names: list[str]) -> str:
        """SCAN's lines: every agent process of ``home`` named in ``names``, whatever the pid files say."""
        found = [
            p
            for p in sorted(self.processes.values(), key=lambda p: p.pid)
            if p.ours and p.name in names and home == self.home
        ]
        return "".join(f"{p.pid} {'Z' if p.zombie else 'S'} {p.name}\n" for p in found)

    def _script_prepare_probe(self, command: str, args: list[str]) -> Answer:
        path, home, _port = args
        if path != self.ctl or not self.cli:
            return result(command, exit_status=127)
        disk = f"{self.free_disk_mb * 1024} simulated" if self.free_disk_mb is not None else "80000000"
        memory = f"{self.free_memory_mb * 1024} simulated" if self.free_memory_mb is not None else "16000000"
        lines = [f"disk {disk}", f"memory {memory}", f"writable {'yes' if self.writable else 'no'}"]
        lines += [f"owner {self.owner}", *(f"listen {line}" for line in self.listeners)]
        lines += [f"version {self._ctl(['version'])[1]}", MARK]
        status, stdout, stderr = self._ctl_at(path, ["status"], exec_=True)
        return result(command, "\n".join(lines) + "\n" + stdout, stderr, status)

    def _script_health(self, command: str, args: list[str]) -> CommandResult:
        path, home = args
        status, stdout, stderr = self._ctl_at(path, ["status"], exec_=True)
        out = stdout + f"\n{MARK}\n"
        value = self._read_pid(POS_PROXY) if home == self.home else ""
        if not _digits(value):
            return result(command, out + "no pid file\n", stderr, status)
        proc = self._proc(value)
        if proc is None or proc.zombie or proc.name != POS_PROXY or self.mgragent_mute:
            socket = f"{self.run_dir}/ocp_mgragent.{value}.sock"
            return result(command, out + f"curl: (7) Failed to connect to {socket}: No such file\n", stderr, status)
        data = {
            "state": "running",
            "version": self.version,
            "pid": proc.pid,
            "startAt": self.start_at(proc),
            "ports": [62888],
        }
        answer = {"successful": True, "status": 200, "data": data}
        return result(command, out + _json(answer), stderr, status)

    def _script_start_then_health(self, command: str, args: list[str]) -> Answer:
        path, home = args
        status, stdout, stderr = self._ctl_at(path, ["start"], exec_=False)
        if status:
            return result(command, stdout, stderr, status)
        health = self._script_health(command, args)
        return result(command, stdout + f"\n{MARK}\n" + health.stdout, stderr + health.stderr, health.exit_status)

    def _script_detect_then_prepare(self, command: str, args: list[str]) -> Answer:
        """steps.nodes' Prepare on a host of unknown generation: this one is of the current generation."""
        return self._detected(command, PREPARE_PROBE.name, args[:3])

    def _script_detect_then_status(self, command: str, args: list[str]) -> Answer:
        return self._detected(command, STATUS_IF_CLI.name, args[:1])

    def _detected(self, command: str, script: str, args: list[str]) -> Answer:
        if args[0] != self.ctl or not self.cli:
            return result(command, "generation -\n", exit_status=127)
        answer = getattr(self, f"_script_{script}")(command, args)
        if isinstance(answer, Hang):
            return Hang("generation 4\n" + answer.stdout, answer.stderr)
        return replace(answer, stdout="generation 4\n" + answer.stdout)

    def _script_signal(self, command: str, args: list[str]) -> Answer:
        sig, *pids = args
        if sig not in SIGNALS or not all(p.isdigit() for p in pids):
            raise UnexpectedCommand(f"kill -s {sig} {pids}")
        self.signals.append((sig, [int(p) for p in pids]))
        for pid in map(int, pids):
            self._deliver(pid, sig)
        return result(command)

    # -- ocp_agentctl -----------------------------------------------------------------------------------------

    def _ctl(self, args: list[str]) -> tuple[int, str, str]:
        if args == ["status"]:
            return self._status()
        if args == ["start"]:
            return self._start()
        if args == ["stop"]:
            return self._stop()
        if args == ["restart"]:  # the sandbox's: stop, then start
            status, stdout, stderr = self._stop()
            return (status, stdout, stderr) if status else self._start()
        if args == ["version"]:
            return 0, _json({"successful": True, "message": self.version, "error": ""}), ""
        if len(args) == 3 and args[0] == "service" and args[1] in ("start", "stop"):
            return self._service(args[1], args[2])
        return 1, "", USAGE + "\n"

    def _start(self) -> tuple[int, str, str]:
        if self._agentd() is not None:
            return _ok()
        if self.start_error:
            return _fail("INTERNAL", self.start_error)
        if self.agentd_fails:
            self.write_log("agentd.log", *(f"ocp_agentd: {line}" for line in self.agentd_fails))
            return _fail("INTERNAL", "agentd_exited_quickly")
        if self._proc(self._read_pid(AGENTD)) is not None and self.alive(int(self._read_pid(AGENTD))):
            return _fail("INTERNAL", "agentd_exited_quickly")  # the new agentd's exclusive pid file: taken
        self._start_agent()
        return _ok()

    def _status(self) -> tuple[int, str, str]:
        agentd = self._agentd()
        if agentd is None:
            return _fail("UNAVAILABLE", "agentd_not_running")
        if self._pending:
            self._pending -= 1
            if not self._pending:
                self._spawn_services()
        services = {}
        for name in SERVICES:
            pid = self._running(name)
            services[name] = {"state": "running" if pid else "stopped", "pid": pid or 0}
        ready = all(s["state"] == "running" for s in services.values())
        message = {"state": "running", "ready": ready, "version": self.version, "pid": agentd, "services": services}
        return 0, _json({"successful": True, "message": message, "error": ""}), ""

    def _stop(self) -> tuple[int, str, str]:
        agentd = self._agentd()
        if agentd is None:
            return _ok()
        if self.stop_hangs:
            raise Hanging(f"stopping ocp_agentd (pid {agentd})\n")
        flood = "x" * self.flood + "\n" if self.flood else ""
        self._pending = 0
        if self.stop_leaves:
            self._stop_leaving(self.stop_leaves)
        else:
            self._terminate(self.processes[agentd])
        if self._agentd() is not None:
            status, stdout, stderr = _fail("DEADLINE_EXCEEDED", "wait_for_exit_timeout")
            return status, flood + stdout, stderr
        return 0, flood + _ok()[1], ""

    def _stop_leaving(self, names: set[str]) -> None:
        """The fake-only stop_leaves fault: every process but those named ends, at once."""
        self._stopping = True
        for proc in [p for p in self.processes.values() if not p.zombie and p.name in (AGENTD, *SERVICES)]:
            if proc.name in names:
                proc.ignores_term = proc.ignores_term or self.leftovers_ignore_term
            else:
                self._kill(proc)
                self.pid_files.pop(proc.name, None)

    def _service(self, action: str, name: str) -> tuple[int, str, str]:
        if name not in SERVICES:
            return _fail("NOT_FOUND", "service_not_found")
        if self._agentd() is None:
            return _fail("UNAVAILABLE", "agentd_not_running")
        if self.service_error:
            return _fail("INTERNAL", self.service_error)
        if action == "stop":
            self.disabled.add(name)
            pid = self._running(name)
            if pid:
                if self.processes[pid].ignores_term:  # the CLI TERMs it and gives up waiting
                    return _fail("DEADLINE_EXCEEDED", "wait_for_service_exit_timeout")
                self._kill(self.processes[pid])
                self.pid_files.pop(name, None)
        else:
            self.disabled.discard(name)
            if self.lagging_statuses:
                self._pending = self.lagging_statuses
            elif not self._running(name):
                self._spawn(name)
        return _ok()

    # -- processes ---------------------------------------------------------------------------------------------

    def _read_pid(self, name: str) -> str:
        """run/NAME.pid as the shell agent reads it (``read -r``): its first line, blanks around it dropped."""
        return _first_line(self.pid_files.get(name, ""))

    def _proc(self, value: str) -> FakeProcess | None:
        """/proc/VALUE's process: none unless VALUE is a pid as the kernel writes one (no leading zero)."""
        return self.processes.get(int(value)) if _digits(value) and value == str(int(value)) else None

    def _agentd(self) -> int | None:
        return self._running(AGENTD) or None

    def _running(self, name: str) -> int:
        """The pid in run/NAME.pid if that is a live process (for agentd, one named ocp_agentd), else 0: what the
        CLI checks (a service's pid file is trusted without its name)."""
        proc = self._proc(self._read_pid(name))
        if proc is None or proc.zombie or (name == AGENTD and (proc.name != AGENTD or not proc.ours)):
            return 0
        return proc.pid

    def _start_agent(self) -> None:
        """``ocp_agentctl start`` of a stopped agent: a new agentd starts (its pid file written), SIGTERMs the
        services of this home the services' pid files name (a dead agentd's, dangling), removes those pid files
        (a stranger named there is left alone), and starts the services."""
        self.disabled.clear()
        self._stopping = False
        self._spawn(AGENTD)
        for name in SERVICES:
            proc = self._proc(self._read_pid(name))
            if proc is not None and not proc.zombie and proc.name == name and proc.ours:
                self._kill(proc)  # a sleep ignores nothing; agentd KILLs one that ignores SIGTERM after 5 s
            self.pid_files.pop(name, None)
        if self.lagging_statuses:
            self._pending = self.lagging_statuses
        else:
            self._spawn_services()

    def _spawn_services(self) -> None:
        for name in SERVICES:
            if name not in self.disabled and not self._running(name):
                self._spawn(name)

    def _spawn(self, name: str) -> FakeProcess:
        """Start an agent process, with its pid file; a service is the running agentd's."""
        service = name in SERVICES
        proc = self._new_process(
            name, parent=(self._agentd() or 0) if service else 0, ignores_term=service and self.services_ignore_term
        )
        self.pid_files[name] = f"{proc.pid}\n"
        return proc

    def _new_process(self, name: str, *, parent: int = 0, ignores_term: bool = False) -> FakeProcess:
        self._ticks += 137
        pid = self._last_pid.get(name) if self.reuse_pids else None
        if pid is None or pid in self.processes:
            self._next_pid += 1
            while self._next_pid in self.processes:
                self._next_pid += 1
            pid = self._next_pid
        proc = self.processes[pid] = FakeProcess(pid, name, self._ticks, parent, ignores_term)
        self._last_pid[name] = pid
        return proc

    def _deliver(self, pid: int, sig: str) -> None:
        proc = self.processes.get(pid)
        if proc is None or proc.zombie:
            return
        if sig == "KILL":
            self._kill(proc)
        elif proc.name == AGENTD:
            self._terminate(proc)
        elif not proc.ignores_term:
            self._kill(proc)

    def _terminate(self, agentd: FakeProcess) -> None:
        """agentd's SIGTERM handler: from now on it ignores SIGTERM and starts nothing; it TERMs its services and
        waits for them; once they are gone it removes the three pid files and exits. One that ignores SIGTERM
        keeps it waiting (until a SIGKILL)."""
        if agentd.ignores_term:
            return
        agentd.ignores_term = self._stopping = True
        survivors = False
        for proc in [p for p in self.processes.values() if p.parent == agentd.pid and not p.zombie]:
            if proc.ignores_term:
                survivors = True
            else:
                self._kill(proc)
        if not survivors:
            for name in (AGENTD, *SERVICES):
                self.pid_files.pop(name, None)
            self._kill(agentd)

    def _kill(self, proc: FakeProcess) -> None:
        if self.zombies:
            proc.zombie = True
        else:
            del self.processes[proc.pid]
        agentd = self._agentd()
        if (
            proc.parent
            and proc.parent == agentd
            and not self._stopping
            and not self._pending
            and proc.name not in self.disabled
        ):
            self._spawn(proc.name)  # agentd starts a service of its own that died again


def _first_line(content: str) -> str:
    return content.partition("\n")[0].strip(" \t")


def _digits(value: str) -> bool:
    """What the shell's ``case $p in ''|*[!0-9]*)`` lets through: ASCII digits, at least one."""
    return value.isascii() and value.isdigit()


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))  # one line, no spaces, no newline: as obagent's agentctl writes it


def _ok() -> tuple[int, str, str]:
    return 0, _json({"successful": True, "message": "ok", "error": ""}), ""


def _fail(kind: str, code: str) -> tuple[int, str, str]:
    """obagent's handled error: on stderr, exit 255."""
    return 255, "", _json({"successful": False, "message": None, "error": f"Module=agent, kind={kind}, code={code}; "})


__all__ = ["FakeAgent", "FakeProcess"]
