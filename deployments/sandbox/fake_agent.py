"""An in-memory OCP agent 4.x for one host, answering our commands as the sandbox's shell agent (``agent/``) does.

``FakeAgent`` is a ``steps.testing.FakeRunner`` handler: the fast tier and the orchestration bench drive the real
steps against it without sshd or processes. ``tests/agent_contract.py`` holds it to the same contract as the shell
agent it imitates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from steps.agent import AGENTD, MARK, SCRIPTS, SERVICES, SIGNALS
from steps.inventory import DEFAULT_AGENT_HOME
from steps.testing import Answer, Hang, UnexpectedCommand, result

from .fake_shell import Hanging, run_list

@dataclass
class FakeProcess:
    pid: int
    name: str
    start: int  # clock ticks since boot (/proc/PID/stat field 22)
    ignores_term: bool = False
    zombie: bool = False


class FakeAgent:
    """One host's OCP agent 4.x, as a ``FakeRunner`` handler, answering as the sandbox's ``ocp_agentctl`` does.

    State: ``processes`` (pid -> FakeProcess), ``pid_files`` (name -> the file's content; set one to junk to test
    parsing), ``disabled`` services. Faults, set as attributes:

    * ``cli = False``: ``{home}/bin/ocp_agentctl`` is missing (exit 127).
    * ``start_error = "agentd_exited_quickly"``: ``start`` fails with that error.
    * ``stop_hangs = True``: ``stop`` prints ``stopping ocp_agentd (pid N)`` and never returns.
    * ``stop_leaves = {"ocp_monagent"}``: ``stop`` leaves these processes running (with ``ocp_agentd`` among them
      it fails with ``wait_for_exit_timeout``); ``leftovers_ignore_term = True``: they survive SIGTERM too.
    * ``service_error = "..."``: ``service start|stop`` fails with it.
    * ``lagging_statuses = N``: after ``start`` or ``service start``, the services come up only after N more
      ``status`` calls.
    * ``reuse_pids = True``: a new process gets the pid its predecessor of the same name had (new start time).
    * ``zombies = True``: a killed process stays a zombie (``ps`` shows state Z).

    Records: ``commands`` (every command), ``ctl_calls`` (each ``ocp_agentctl`` argv after the CLI),
    ``signals`` ((signal, pids) sent by ``kill``).
    """

    def __init__(self, home: str = DEFAULT_AGENT_HOME, *, running: bool = True) -> None:
        self.home = home
        self.cli = True
        self.start_error: str | None = None
        self.stop_hangs = False
        self.stop_leaves: set[str] = set()
        self.leftovers_ignore_term = False
        self.service_error: str | None = None
        self.lagging_statuses = 0
        self.reuse_pids = False
        self.zombies = False
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
        if running:
            self._start_agent()

    @property
    def ctl(self) -> str:
        return f"{self.home}/bin/ocp_agentctl"

    @property
    def run_dir(self) -> str:
        return f"{self.home}/run"

    def pids(self) -> dict[str, int]:
        """The live agent processes by name (the process table's view, not the pid files')."""
        return {p.name: p.pid for p in sorted(self.processes.values(), key=lambda p: p.pid) if not p.zombie}

    def alive(self, pid: int) -> bool:
        proc = self.processes.get(pid)
        return proc is not None and not proc.zombie

    # -- the handler ----------------------------------------------------------------------------------------

    def __call__(self, command: str) -> Answer:
        self.commands.append(command)
        for script in SCRIPTS:
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

    def _ctl_at(self, path: str, args: list[str]) -> tuple[int, str, str]:
        if path != self.ctl or not self.cli:
            return 127, "", f"sh: 1: {path}: not found\n"
        self.ctl_calls.append(list(args))
        return self._ctl(args)

    def _proc_stats(self, pids: list[str]) -> str:
        """What steps.agent's LIVE loop prints for ``pids``: ``pid state comm`` per process there is."""
        if not all(p.isdigit() for p in pids):
            raise UnexpectedCommand(f"live processes of {pids!r}: not a list of pids")
        return "".join(f"{p.pid} {'Z' if p.zombie else 'S'} {p.name}\n"
                       for p in (self.processes.get(int(pid)) for pid in pids) if p is not None)

    # -- the scripts (steps.agent.SCRIPTS) ------------------------------------------------------------------

    def _script_status_if_cli(self, command: str, args: list[str]) -> Answer:
        (path,) = args
        if path != self.ctl or not self.cli:
            return result(command, exit_status=127)
        status, stdout, stderr = self._ctl_at(path, ["status"])
        return result(command, stdout, stderr, status)

    def _script_identities_then_stop(self, command: str, args: list[str]) -> Answer:
        path, run, *names = args
        lines = []
        for name in names:
            content = self.pid_files.get(name) if run == self.run_dir else None
            if content is None:
                continue
            value = content[:32].rstrip("\n")
            if not value or not all(c in "0123456789" for c in value):
                continue
            proc = self.processes.get(int(value))
            lines.append(f"{name} {value} {proc.start if proc is not None else '-'}\n")
        head = "".join(lines) + MARK + "\n"
        try:
            status, stdout, stderr = self._ctl_at(path, ["stop"])
        except Hanging as hang:
            return Hang(head + hang.stdout, hang.stderr)
        return result(command, head + stdout, stderr, status)

    def _script_start_times(self, command: str, args: list[str]) -> Answer:
        lines = [f"{pid} {self.processes[int(pid)].start}\n" for pid in args
                 if pid.isdigit() and int(pid) in self.processes]
        return result(command, "".join(lines))

    def _script_live(self, command: str, args: list[str]) -> Answer:
        return result(command, self._proc_stats(args))

    def _script_live_then_status(self, command: str, args: list[str]) -> Answer:
        path, *pids = args
        listed = self._proc_stats(pids) + f"{MARK}\n"
        if path != self.ctl or not self.cli:
            return result(command, listed, f"sh: 1: exec: {path}: not found\n", 127)
        status, stdout, stderr = self._ctl_at(path, ["status"])
        return result(command, listed + stdout, stderr, status)

    def _script_signal(self, command: str, args: list[str]) -> Answer:
        sig, *pids = args
        if sig not in SIGNALS or not all(p.isdigit() for p in pids):
            raise UnexpectedCommand(f"kill -s {sig} {pids}")
        self.signals.append((sig, [int(p) for p in pids]))
        for pid in map(int, pids):
            proc = self.processes.get(pid)
            if proc is not None and not proc.zombie and (sig == "KILL" or not proc.ignores_term):
                self._kill(proc)
        return result(command)

    # -- ocp_agentctl -----------------------------------------------------------------------------------------

    def _ctl(self, args: list[str]) -> tuple[int, str, str]:
        if args == ["status"]:
            return self._status()
        if args == ["start"]:
            if self._agentd() is not None:
                return _ok()
            if self.start_error:
                return _fail(self.start_error)
            self._start_agent()
            return _ok()
        if args == ["stop"]:
            return self._stop()
        if len(args) == 3 and args[0] == "service" and args[1] in ("start", "stop"):
            return self._service(args[1], args[2])
        return _fail("usage: ocp_agentctl status|start|stop|service start|stop ocp_mgragent|ocp_monagent", 2)

    def _status(self) -> tuple[int, str, str]:
        agentd = self._agentd()
        if agentd is None:
            return _fail("agentd is not running")
        if self._pending:
            self._pending -= 1
            if not self._pending:
                self._spawn_services()
        services = {}
        for name in SERVICES:
            pid = self._running(name)
            services[name] = {"state": "running" if pid else "stopped", "pid": pid or 0}
        ready = all(s["state"] == "running" for s in services.values())
        message = {"state": "running", "ready": ready, "pid": agentd, "services": services}
        return 0, json.dumps({"successful": True, "message": message}) + "\n", ""

    def _stop(self) -> tuple[int, str, str]:
        agentd = self._agentd()
        if agentd is None:
            return _ok()
        if self.stop_hangs:
            raise Hanging(f"stopping ocp_agentd (pid {agentd})\n")
        for proc in [p for p in self.processes.values() if not p.zombie]:
            if proc.name in self.stop_leaves:
                proc.ignores_term = proc.ignores_term or self.leftovers_ignore_term
            else:
                self._kill(proc)
                self.pid_files.pop(proc.name, None)
        self._pending = 0
        if self._agentd() is not None:
            return _fail("wait_for_exit_timeout")
        return _ok()

    def _service(self, action: str, name: str) -> tuple[int, str, str]:
        if name not in SERVICES:
            return _fail(f"unknown service: {name}")
        if self._agentd() is None:
            return _fail("agentd is not running")
        if self.service_error:
            return _fail(self.service_error)
        if action == "stop":
            self.disabled.add(name)
            pid = self._running(name)
            if pid:
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

    def _agentd(self) -> int | None:
        return self._running(AGENTD) or None

    def _running(self, name: str) -> int:
        """The pid in run/NAME.pid if that is a live process of that name, else 0 (as the CLI checks)."""
        value = self.pid_files.get(name, "").strip()
        if not value.isdigit():
            return 0
        proc = self.processes.get(int(value))
        return proc.pid if proc is not None and not proc.zombie and proc.name == name else 0

    def _start_agent(self) -> None:
        self.disabled.clear()
        self._spawn(AGENTD)
        if self.lagging_statuses:
            self._pending = self.lagging_statuses
        else:
            self._spawn_services()

    def _spawn_services(self) -> None:
        for name in SERVICES:
            if name not in self.disabled and not self._running(name):
                self._spawn(name)

    def _spawn(self, name: str) -> FakeProcess:
        self._ticks += 137
        pid = self._last_pid.get(name) if self.reuse_pids else None
        if pid is None or pid in self.processes:
            self._next_pid += 1
            while self._next_pid in self.processes:
                self._next_pid += 1
            pid = self._next_pid
        proc = self.processes[pid] = FakeProcess(pid, name, self._ticks)
        self._last_pid[name] = pid
        self.pid_files[name] = f"{pid}\n"
        return proc

    def _kill(self, proc: FakeProcess) -> None:
        if self.zombies:
            proc.zombie = True
        else:
            del self.processes[proc.pid]


def _ok() -> tuple[int, str, str]:
    return 0, '{"successful":true,"message":"ok"}\n', ""


def _fail(error: str, status: int = 1) -> tuple[int, str, str]:
    return status, "", json.dumps({"successful": False, "error": error}) + "\n"


__all__ = ["FakeAgent", "FakeProcess"]
