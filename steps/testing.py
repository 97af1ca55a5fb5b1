"""Fakes for testing host work without sshd, shipped beside the real thing (as ``fabric.testing`` and httpx's
``MockTransport`` are).

* ``FakeRunner(handler)``: a Runner (``steps/runner.py``) whose commands are answered by ``handler(command)``, a
  CommandResult, or ``Hang`` for a command that never finishes: then it raises CommandTimeout, or SubtaskCancelled
  if ``stop()`` says so, as SSHSession does after killing the command's process group (without waiting out the
  deadline, unless ``real_time``).
* ``FakeAgent``: a handler simulating one host's OCP agent 4.x (processes with pids and start times, pid files,
  ``ocp_agentctl status|start|stop|service start|stop NAME``, ``ps``, signals) and its faults. It understands
  exactly the shell text ``AgentControl`` renders (argv lists joined by ``&&``/``||``/``;``, and the scripts of
  ``steps.agent.SCRIPTS``) and raises UnexpectedCommand for anything else.
* ``FakeStep``: the Step protocol (``steps/step.py``) over a Runner, with a log that keeps its lines.

    agent = FakeAgent()
    agent.stop_leaves = {"ocp_monagent"}
    step = FakeStep.on(agent, timeout=4)
    work.stop_all(step)
    assert "sending SIGTERM" in step.log.text
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .agent import AGENTD, MARK, SCRIPTS, SERVICES, SIGNALS
from .errors import CommandTimeout, Fenced, SubtaskCancelled
from .fencing import FencedRunner
from .inventory import DEFAULT_AGENT_HOME, Host
from .runner import CommandResult, Runner


class UnexpectedCommand(AssertionError):
    """A fake was sent a command it does not know: the code under test sent something new (or malformed)."""


@dataclass(frozen=True)
class Hang:
    """A handler's answer for a command that does not finish by itself: it prints ``stdout``/``stderr``, then
    blocks until it is killed."""

    stdout: str = ""
    stderr: str = ""

    @property
    def output(self) -> str:
        return "\n".join(part for part in (self.stdout.rstrip("\n"), self.stderr.rstrip("\n")) if part)


Answer = CommandResult | Hang
Handler = Callable[[str], Answer]


def result(command: str, stdout: str = "", stderr: str = "", exit_status: int = 0) -> CommandResult:
    """A CommandResult as a handler returns it (it took no time)."""
    return CommandResult(command, exit_status, stdout, stderr, 0.0)


class FakeRunner:
    """A Runner answering from ``handler``: a function of the command, or a mapping from commands to answers.

    Keeps every command sent (``commands``) and the process groups it "killed" (``killed``). A ``Hang`` raises
    CommandTimeout at once (the deadline is taken as passed) or, if ``stop()`` is already True, SubtaskCancelled;
    with ``real_time`` it polls ``stop`` until the deadline like the real one. Messages are SSHSession's.
    """

    def __init__(self, handler: Handler | Mapping[str, Answer], *, label: str = "fake-host(127.0.0.1:22)",
                 real_time: bool = False) -> None:
        self.handler = handler
        self.label = label
        self.real_time = real_time
        self.commands: list[str] = []
        self.killed: list[int] = []
        self._next_pgid = 40000

    def run(self, command: str, *, deadline: float, stop: Callable[[], bool] | None = None) -> CommandResult:
        started = time.monotonic()
        if deadline - started <= 0:
            raise CommandTimeout(f"deadline passed before running {command!r} on {self.label}")
        self.commands.append(command)
        if isinstance(self.handler, Mapping):
            if command not in self.handler:
                raise UnexpectedCommand(f"no answer for {command!r}; known: {sorted(self.handler)}")
            answer = self.handler[command]
        else:
            answer = self.handler(command)
        if isinstance(answer, CommandResult):
            return answer
        if not isinstance(answer, Hang):
            raise TypeError(f"a handler returns a CommandResult or a Hang, got {answer!r}")
        cancelled = stop is not None and stop()
        while self.real_time and not cancelled and time.monotonic() < deadline:
            time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))
            cancelled = stop is not None and stop()
        self._next_pgid += 1
        self.killed.append(self._next_pgid)
        note = f"killed its process group {self._next_pgid} on the host"
        if cancelled:
            raise SubtaskCancelled(f"cancelled by an operator while {command!r} ran; {note}"
                                   + (f"; its output:\n{answer.output}" if answer.output else ""))
        took = max(deadline, time.monotonic()) - started
        raise CommandTimeout(f"{self.label}: {command!r} did not finish within {took:.1f} s; {note}",
                             output=answer.output)


# -- the shell text AgentControl renders, read back -------------------------------------------------------------


def split_commands(command: str) -> list[tuple[str | None, list[str]]]:
    """``a 'b c' && d || e`` -> [(None, ["a", "b c"]), ("&&", ["d"]), ("||", ["e"])]: simple commands and the
    operator before each, honouring POSIX quoting. UnexpectedCommand for anything else (a pipe, a redirection,
    an unquoted ``$``, a subshell, an empty command): ``sh()`` never renders those."""
    parts: list[tuple[str | None, list[str]]] = []
    words: list[str] = []
    word: list[str] | None = None  # None: between words
    op: str | None = None
    i, n = 0, len(command)

    def end_command(next_op: str) -> None:
        nonlocal words, op
        if not words:
            raise UnexpectedCommand(f"an empty command before {next_op!r} in {command!r}")
        parts.append((op, words))
        words, op = [], next_op

    while i < n:
        c = command[i]
        if c in " \t":
            if word is not None:
                words.append("".join(word))
                word = None
            i += 1
        elif command.startswith(("&&", "||"), i) or c == ";":
            if word is not None:
                words.append("".join(word))
                word = None
            token = command[i:i + 2] if c != ";" else ";"
            end_command(token)
            i += len(token)
        elif c == "'":
            close = command.find("'", i + 1)
            if close < 0:
                raise UnexpectedCommand(f"unterminated ' in {command!r}")
            word = (word or []) + [command[i + 1:close]]
            i = close + 1
        elif c == '"':
            i += 1
            chunk: list[str] = []
            while i < n and command[i] != '"':
                if command[i] in "$`":
                    raise UnexpectedCommand(f"an expansion inside double quotes in {command!r}")
                if command[i] == "\\" and i + 1 < n and command[i + 1] in '"\\$`\n':
                    i += 1
                chunk.append(command[i])
                i += 1
            if i >= n:
                raise UnexpectedCommand(f'unterminated " in {command!r}')
            word = (word or []) + chunk
            i += 1
        elif c == "\\" and i + 1 < n:
            word = (word or []) + [command[i + 1]]
            i += 2
        elif c.isalnum() or c in _SAFE:
            word = (word or []) + [c]
            i += 1
        else:  # shlex.quote quotes everything else: unquoted, it is shell syntax sh() never renders
            raise UnexpectedCommand(f"shell syntax {c!r} at {i} in {command!r}: not a list of simple commands")
    if word is not None:
        words.append("".join(word))
    if not words:
        raise UnexpectedCommand(f"an empty command at the end of {command!r}")
    parts.append((op, words))
    return parts


_SAFE = "_@%+=:,./-"  # besides letters and digits, what shlex.quote leaves unquoted


def run_list(command: str, simple: Callable[[list[str]], tuple[int, str, str]]) -> Answer:
    """Evaluate an and-or list of simple commands as sh does (``&&`` and ``||`` left to right, ``;`` always runs
    the next), each by ``simple(argv) -> (exit status, stdout, stderr)``, which may raise Hanging."""
    status, out, err = 0, [], []
    for op, argv in split_commands(command):
        if (op == "&&" and status != 0) or (op == "||" and status == 0):
            continue
        try:
            status, stdout, stderr = simple(argv)
        except Hanging as hang:
            return Hang("".join(out) + hang.stdout, "".join(err) + hang.stderr)
        out.append(stdout)
        err.append(stderr)
    return result(command, "".join(out), "".join(err), status)


class Hanging(Exception):
    """Raised by a simulated command that blocks; carries what it printed first."""

    def __init__(self, stdout: str = "", stderr: str = "") -> None:
        super().__init__(stdout)
        self.stdout, self.stderr = stdout, stderr


# -- one host's agent -------------------------------------------------------------------------------------------


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


# -- a step ----------------------------------------------------------------------------------------------------


@dataclass
class FakeLog:
    """A subtask log that keeps its lines: ``lines`` as (level, message), ``text`` all messages."""

    lines: list[tuple[str, str]] = field(default_factory=list)

    def info(self, message: str) -> None:
        self.lines.append(("INFO", message))

    def warning(self, message: str) -> None:
        self.lines.append(("WARN", message))

    def error(self, message: str) -> None:
        self.lines.append(("ERROR", message))

    @property
    def text(self) -> str:
        return "\n".join(message for _, message in self.lines)


@dataclass
class FakeStep:
    """The Step protocol over ``connection``: pid records kept in ``pids`` (phase -> name -> pid), ``cancel``
    (an operator's cancel: ``cancelled()`` and ``may_act``) and ``fenced`` (a lost lease: nothing more is sent)."""

    host: Host
    connection: Runner
    timeout: int = 30
    deadline: float = 0.0  # 0: now + timeout
    log: FakeLog = field(default_factory=FakeLog)
    cancel: bool = False
    fenced: str | None = None
    pids: dict[str, dict[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.deadline:
            self.deadline = time.monotonic() + self.timeout

    @classmethod
    def on(cls, agent: FakeAgent, *, host_id: int = 1, **kwargs: object) -> FakeStep:
        """A step on a host whose agent is ``agent`` (FakeRunner(agent) as its connection)."""
        host = Host(id=host_id, name=f"fake-{host_id}", address="127.0.0.1", agent_home=agent.home)
        return cls(host, FakeRunner(agent, label=host.label), **kwargs)  # type: ignore[arg-type]

    def runner(self) -> Runner:
        return FencedRunner(self.connection, lambda: self.fenced)  # the real runs' fence, asking ``fenced``

    def cancelled(self) -> bool:
        return self.cancel or self.fenced is not None

    def may_act(self) -> None:
        if self.fenced is not None:
            raise Fenced(f"not acting: {self.fenced}")
        if self.cancel:
            raise SubtaskCancelled("cancelled by an operator")

    def record_pids(self, phase: str, pids: dict[str, int]) -> None:
        if self.fenced is not None:
            raise Fenced(f"not acting: {self.fenced}")
        self.pids[phase] = dict(pids)

    def recorded_pids(self, phase: str) -> dict[str, int] | None:
        return self.pids.get(phase)


__all__ = ["FakeAgent", "FakeLog", "FakeProcess", "FakeRunner", "FakeStep", "Hang", "Hanging", "UnexpectedCommand",
           "result", "run_list", "split_commands"]
