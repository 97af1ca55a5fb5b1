"""The newest lines of the agent's own logs, for a subtask that failed (#20: the operator sees why without logging
in): read in one bounded command, only files that changed recently, capped, secrets masked.

Only a failure sends it; a restart that succeeds sends nothing more (the bench's round trips stay as they were).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import StepError
from .runner import Runner, Script, is_decimal

# obagent's logs under {agent_home}/log/ (reference §3), the current generation's.
AGENT_LOG_FILES = (
    "agentd.log",
    "agentd.err.log",
    "agentd.out.log",
    "agentctl.log",
    "mgragent.log",
    "monagent.log",
    "ob_mgragent.error.log",
    "ob_mgragent.output.log",
    "ob_monagent.error.log",
    "ob_monagent.output.log",
)
TAIL_LINES = 20  # per file
TAIL_BYTES = 4096  # all files together, after masking
LINE_CHARS = 512  # a longer line is cut (on the host, so a line without newlines cannot flood us)
RECENT_SECONDS = 600  # a file not written for longer says nothing about this failure
GRACE_SECONDS = 3.0  # a node that failed at its deadline still gets this long to read them
MAX_SECONDS = 5.0  # never longer than this, whatever the node has left
_HEAD = "@@ocp-restart@@"

# For each file that exists, is readable and changed within $2 seconds (by the host's clock): a header line
# `@@ocp-restart@@ NAME MTIME`, then its last $3 lines, each cut to LINE_CHARS characters; last
# `@@ocp-restart@@ clock NOW`. $1: the log directory, the rest: file names. stat/tail/cut fork per file: this runs
# once per failed subtask, never on the success path.
TAIL = Script(
    "agent_log_tail",
    'set -f; d=$1 age=$2 n=$3; shift 3; now=$(date +%s); for f in "$@"; do '
    '[ -f "$d/$f" ] && [ -r "$d/$f" ] || continue; m=$(stat -c %Y -- "$d/$f" 2>/dev/null); '
    "case $m in ''|*[!0-9]*) continue;; esac; [ $((now - m)) -le \"$age\" ] || continue; "
    f'printf \'\\n{_HEAD} %s %s\\n\' "$f" "$m"; '
    f'tail -n "$n" -- "$d/$f" 2>/dev/null | cut -c 1-{LINE_CHARS}; done; '
    f"printf '\\n{_HEAD} clock %s\\n' \"$now\"",
)

_MASK = "***"
_SECRET_KEY = r"[\w.-]*(?:pass(?:word|wd)?|pwd|secret|token|credential|key)[\w.-]*"
_MASKS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization: Basic ..., "Authorization":"OCP-HMACSHA256 ...", authorization=...: everything after it
    (re.compile(r"""(?i)(["']?(?:proxy-)?authorization["']?\s*[:=]\s*)[^\r\n]*"""), rf"\1{_MASK}"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}"), rf"\1 {_MASK}"),
    # scheme://user:password@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s/@]+@"), rf"\1{_MASK}@"),
    # key=value, key: value, "key": "value", key value (no: only = and :) where the key looks secret
    (
        re.compile(rf"""(?i)(["']?\b{_SECRET_KEY}["']?\s*[:=]\s*)(?:"[^"]*"|'[^']*'|[^\s,;&"'}}\]]+)"""),
        rf"\1{_MASK}",
    ),
    # command-line flags: --password xyz, -p xyz is too ambiguous to guess
    (re.compile(rf"(?i)(--{_SECRET_KEY}[ =])\S+"), rf"\1{_MASK}"),
)


def mask_secrets(line: str) -> str:
    """``line`` with what looks like a secret replaced by ``***``: Authorization headers, Bearer/Basic
    credentials, a URL's password, the value of a key (``=``, ``:``, JSON) whose name contains password, passwd,
    pwd, secret, token, credential or key, and such ``--flags``."""
    for pattern, replacement in _MASKS:
        line = pattern.sub(replacement, line)
    return line


@dataclass(frozen=True)
class LogTail:
    """The newest lines of one agent log file (masked), and when it last changed (epoch seconds, host clock)."""

    name: str
    mtime: int
    lines: tuple[str, ...]


def parse_tails(stdout: str, files: Sequence[str]) -> tuple[list[LogTail], int | None]:
    """``TAIL``'s output -> the files' tails (masked, empty lines dropped; oldest change first) and the host's
    clock. A header naming no requested file is read as a log line (a log may print anything)."""
    tails: list[LogTail] = []
    clock: int | None = None
    name: str | None = None
    mtime = 0
    lines: list[str] = []

    def close() -> None:
        if name is not None:
            tails.append(LogTail(name, mtime, tuple(lines)))

    for line in stdout.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == _HEAD and is_decimal(words[2]):
            if words[1] == "clock":
                close()
                name, clock = None, int(words[2])
                continue
            if words[1] in files:
                close()
                name, mtime, lines = words[1], int(words[2]), []
                continue
        if name is not None and line.strip():
            lines.append(mask_secrets(line))
    close()
    return sorted(tails, key=lambda t: t.mtime), clock


def cap(tails: list[LogTail], budget: int = TAIL_BYTES) -> list[LogTail]:
    """At most ``budget`` bytes (UTF-8, a newline per line) over all files, shared fairly: each file keeps its
    newest lines within its share, and what one does not use goes to the others. A file left with no line is
    dropped; a single line longer than a share is cut at its end."""
    sizes = [[len(line.encode()) + 1 for line in t.lines] for t in tails]
    share = {i: 0 for i in range(len(tails))}
    left, open_ = budget, [i for i in range(len(tails)) if sizes[i]]
    while open_ and left > 0:
        each = max(1, left // len(open_))
        for i in list(open_):
            want = sum(sizes[i]) - share[i]
            give = min(want, each, left)
            share[i] += give
            left -= give
            if share[i] >= sum(sizes[i]):
                open_.remove(i)
        if each == 1:
            break
    capped = []
    for i, tail in enumerate(tails):
        kept: list[str] = []
        room = share[i]
        for line, size in zip(reversed(tail.lines), reversed(sizes[i]), strict=True):
            if size <= room:
                kept.append(line)
                room -= size
            else:
                if not kept and room > 4:  # one long line: its start (the masks ran on the whole line)
                    kept.append(line.encode()[: room - 4].decode(errors="ignore") + "…")
                break
        if kept:
            capped.append(LogTail(tail.name, tail.mtime, tuple(reversed(kept))))
    return capped


def render(tails: list[LogTail], log_dir: str, clock: int | None) -> str:
    """The tails as one log entry: a heading, then per file ``==> PATH (changed N s ago) <==`` and its lines."""
    parts = [f"the agent's own logs on the host (newest lines, at most {TAIL_LINES} per file, secrets masked):"]
    for tail in tails:
        ago = f"changed {max(0, clock - tail.mtime)} s ago" if clock is not None else f"mtime {tail.mtime}"
        parts.append(f"==> {log_dir}/{tail.name} ({ago}) <==")
        parts += list(tail.lines)
    return "\n".join(parts)


def read_tails(
    runner: Runner,
    agent_home: str,
    deadline: float,
    *,
    files: Sequence[str] = AGENT_LOG_FILES,
    stop: Callable[[], bool] | None = None,
) -> str:
    """The agent's recently changed logs as one log entry ('' if none changed): one command, bounded by
    ``deadline`` but at least GRACE_SECONDS and at most MAX_SECONDS from now. StepError if it fails."""
    now = time.monotonic()
    bounded = min(max(deadline, now + GRACE_SECONDS), now + MAX_SECONDS)
    log_dir = f"{agent_home.rstrip('/')}/log"
    result = runner.run(TAIL.render(log_dir, str(RECENT_SECONDS), str(TAIL_LINES), *files), deadline=bounded, stop=stop)
    tails, clock = parse_tails(result.stdout, files)
    capped = cap(tails)
    return render(capped, log_dir, clock) if capped else ""


def read_or_why(
    runner: Runner,
    agent_home: str,
    deadline: float,
    *,
    files: Sequence[str] = AGENT_LOG_FILES,
    stop: Callable[[], bool] | None = None,
) -> str:
    """``read_tails`` for a failed subtask's log, or a line saying why there are none. Never raises a StepError:
    the subtask has failed already, for its own reason."""
    try:
        text = read_tails(runner, agent_home, deadline, files=files, stop=stop)
    except StepError as exc:
        return f"the agent's own logs could not be read: {exc.message}"
    log_dir = f"{agent_home.rstrip('/')}/log"
    return text or f"the agent's own logs: none under {log_dir} changed in the last {RECENT_SECONDS} s"


__all__ = [
    "AGENT_LOG_FILES",
    "TAIL",
    "LogTail",
    "cap",
    "mask_secrets",
    "parse_tails",
    "read_or_why",
    "read_tails",
    "render",
]
