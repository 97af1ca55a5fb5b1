"""Fakes for testing host work without sshd, shipped beside the real thing (as ``fabric.testing`` and httpx's
``MockTransport`` are): the Runner and Step interfaces, faked. This is the product's testing API.

* ``FakeRunner(handler)``: a Runner (``steps/runner.py``) whose commands are answered by ``handler(command)``, a
  CommandResult, or ``Hang`` for a command that never finishes: then it raises CommandTimeout, or SubtaskCancelled
  if ``stop()`` says so, as SSHSession does after killing the command's process group (without waiting out the
  deadline, unless ``real_time``). ``result(...)`` builds a handler's answer; a mapping of commands to answers
  raises UnexpectedCommand for any other command.
* ``FakeStep``: the Step protocol (``steps/step.py``) over a Runner, fenced by the real runs' ``FencedRunner``,
  with a ``FakeLog`` that keeps its lines.

    step = FakeStep(Host(id=1, name="h1", address="127.0.0.1"), FakeRunner({"true": result("true", "hi")}))
    assert step.runner().run("true", deadline=step.deadline).stdout == "hi"
    step.fenced = "the lease was lost"  # from now on step.runner() sends nothing: Fenced

A handler that simulates a whole host's OCP agent (processes, pid files, ``ocp_agentctl``, the scripts of
``steps.agent.SCRIPTS``, faults) lives beside the shell agent it imitates, in the sandbox:
``deployments.sandbox.fake_agent.FakeAgent``; ``FakeStep.on(FakeAgent())`` gives a step on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .agent import Limits
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

    def __init__(
        self,
        handler: Handler | Mapping[str, Answer],
        *,
        label: str = "fake-host(127.0.0.1:22)",
        real_time: bool = False,
    ) -> None:
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
            raise SubtaskCancelled(
                f"cancelled by an operator while {command!r} ran; {note}"
                + (f"; its output:\n{answer.output}" if answer.output else "")
            )
        took = max(deadline, time.monotonic()) - started
        raise CommandTimeout(
            f"{self.label}: {command!r} did not finish within {took:.1f} s; {note}", output=answer.output
        )


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
    limits: Limits = field(default_factory=Limits)
    version: str | None = None  # what record_version kept

    def __post_init__(self) -> None:
        if not self.deadline:
            self.deadline = time.monotonic() + self.timeout

    @classmethod
    def on(cls, agent: Handler, *, host_id: int = 1, agent_home: str | None = None, **kwargs: object) -> FakeStep:
        """A step on a host answered by ``agent`` (FakeRunner(agent) as its connection), e.g. a FakeAgent. The
        host's agent home is ``agent_home``, else the handler's ``home`` (a FakeAgent has one), else the default."""
        home = agent_home or getattr(agent, "home", DEFAULT_AGENT_HOME)
        host = Host(id=host_id, name=f"fake-{host_id}", address="127.0.0.1", agent_home=home)
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

    def record_version(self, version: str) -> None:
        if self.fenced is not None:
            raise Fenced(f"not acting: {self.fenced}")
        self.version = version


__all__ = ["Answer", "FakeLog", "FakeRunner", "FakeStep", "Hang", "Handler", "UnexpectedCommand", "result"]
