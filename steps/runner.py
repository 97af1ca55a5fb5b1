"""The narrow interface between host work and I/O: run one command on one host before a deadline.

``steps/ssh.py`` implements it over paramiko; ``steps/testing.py`` ships a fake beside it (as httpx ships
``MockTransport``), so host work is testable without sshd.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_status: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    @property
    def output(self) -> str:
        return "\n".join(part for part in (self.stdout.rstrip("\n"), self.stderr.rstrip("\n")) if part)


class Runner(Protocol):
    """The I/O surface the steps need: run one command on one host before a deadline (time.monotonic()).

    ``stop``, when given, is polled while the command runs; once it returns True the command is killed and
    SubtaskCancelled raised.
    """

    def run(self, command: str, *, deadline: float, stop: Callable[[], bool] | None = None) -> CommandResult: ...


# -- shell text, built from argv lists only ---------------------------------------------------------------------
#
# A command is one shell string per round trip, but nothing is pasted into it: every word is an argv element
# rendered by shlex.join, commands are joined only by one fixed operator (``sh``), and anything that needs shell
# variables, loops or redirections is a fixed ``Script`` that takes its inputs as positional parameters.

OPERATORS = ("&&", "||", ";")
_RESERVED = frozenset("if then else elif fi do done case esac while until for in function select time".split())
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


def sh(*argvs: Sequence[str], sep: str = "&&") -> str:
    """Simple commands, each an argv list rendered with ``shlex.join``, joined by one fixed shell operator.

    ``sh(["a", "x y"], ["b"])`` is ``a 'x y' && b``. A plain string is refused: it would be split into letters,
    and a pasted fragment is exactly what this exists to prevent.
    """
    if sep not in OPERATORS:
        raise ValueError(f"sep must be one of {OPERATORS}, got {sep!r}")
    if not argvs:
        raise ValueError("sh() needs at least one command")
    for argv in argvs:
        if isinstance(argv, (str, bytes)) or not argv or not all(isinstance(word, str) for word in argv):
            raise TypeError(f"each command must be a non-empty list of str (an argv), got {argv!r}")
        if argv[0] in _RESERVED or _ASSIGNMENT.match(argv[0]):
            # shlex.quote leaves these bare, and bare they are syntax, not a command name.
            raise ValueError(f"{argv[0]!r} cannot be a command name here")
    return f" {sep} ".join(shlex.join(argv) for argv in argvs)


@dataclass(frozen=True)
class Script:
    """A fixed one-line POSIX sh script whose variable inputs are its positional parameters.

    ``render(*args)`` is ``set -- ARGS; BODY``, the args rendered with ``shlex.join``: the values never become
    shell syntax, and no extra shell is started for them. ``parse`` is its inverse (for fakes and tests).
    """

    name: str
    body: str

    def __post_init__(self) -> None:
        if "\n" in self.body:  # one line: survives any login shell's quoting of the whole command
            raise ValueError(f"script {self.name}: the body must be one line")

    def render(self, *args: str) -> str:
        if not all(isinstance(arg, str) for arg in args):
            raise TypeError(f"script {self.name}: arguments must be str, got {args!r}")
        return shlex.join(["set", "--", *args]) + "; " + self.body

    def parse(self, command: str) -> list[str] | None:
        """The arguments ``command`` passes to this script, or None if it is not this script."""
        if not command.endswith("; " + self.body):
            return None
        try:
            words = shlex.split(command[: -len(self.body) - 2])
        except ValueError:
            return None
        return words[2:] if words[:2] == ["set", "--"] else None


def is_decimal(text: str) -> bool:
    """ASCII digits only: str.isdigit() also takes '²' (int() refuses it) and '٣' (int() reads it as 3)."""
    return text.isascii() and text.isdigit()


def integers(values: Iterable[int]) -> list[str]:
    """Integers (pids, process group ids) as words: ``str(int(x))``, sorted, so nothing else can pass as one."""
    return [str(value) for value in sorted(int(value) for value in values)]
