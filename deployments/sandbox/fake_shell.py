"""The shell text ``steps.runner.sh`` renders, read back and evaluated: what ``FakeAgent`` understands.

``sh()`` renders and-or lists of simple commands (argv lists quoted by ``shlex.join``, joined by ``&&``, ``||`` or
``;``) and nothing else; this reads exactly that back, and refuses (UnexpectedCommand) anything else, so a fake
answering through it notices when the code under test starts sending new shell syntax.
"""

from __future__ import annotations

from collections.abc import Callable

from steps.testing import Answer, Hang, UnexpectedCommand, result


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
            token = command[i : i + 2] if c != ";" else ";"
            end_command(token)
            i += len(token)
        elif c == "'":
            close = command.find("'", i + 1)
            if close < 0:
                raise UnexpectedCommand(f"unterminated ' in {command!r}")
            word = (word or []) + [command[i + 1 : close]]
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


__all__ = ["Hanging", "run_list", "split_commands"]
