"""Small /proc helpers: liveness (a zombie counts as gone), process trees, marked processes, TERM-then-KILL."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass

#: Every agent process started by a sandbox agent (ocp_agentd, the services, the ctl's own children) carries
#: ``OCP_SANDBOX_HOME=<agent_home>`` in its environment: ``ocp_agentctl`` exports it before starting anything.
MARKER = "OCP_SANDBOX_HOME"


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    state: str
    comm: str
    uid: int


def read_proc(pid: int) -> Proc | None:
    """The process ``pid`` from /proc/PID/stat, or None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("utf-8", "replace")
        uid = os.stat(f"/proc/{pid}").st_uid
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split at the last ')'.
    head, _, tail = raw.rpartition(")")
    comm = head.partition("(")[2]
    fields = tail.split()
    return Proc(pid, int(fields[1]), fields[0], comm, uid)


def is_alive(pid: int | None) -> bool:
    """True for a live process; False for a missing pid, a gone process or a zombie (state Z/X)."""
    if not pid or pid <= 0:
        return False
    proc = read_proc(pid)
    return proc is not None and proc.state not in ("Z", "X")


def all_procs() -> dict[int, Proc]:
    procs: dict[int, Proc] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            proc = read_proc(int(name))
            if proc is not None:
                procs[proc.pid] = proc
    return procs


def descendants(roots: Iterable[int], procs: dict[int, Proc] | None = None) -> list[int]:
    """Every live descendant of ``roots`` (not the roots themselves)."""
    procs = all_procs() if procs is None else procs
    children: dict[int, list[int]] = {}
    for proc in procs.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    found: list[int] = []
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), ()):
            if procs[child].state not in ("Z", "X"):
                found.append(child)
            todo.append(child)
    return found


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:  # gone, or not ours to read
        return b""


def marked_processes(agent_homes: Iterable[str], uid: int | None = None,
                     procs: dict[int, Proc] | None = None) -> dict[str, list[tuple[int, str]]]:
    """Live processes (of ``uid`` when given) belonging to each agent home, by one of two rules:

    - its /proc/PID/environ holds ``OCP_SANDBOX_HOME=<agent_home>`` (agentd, services, blocker, sleeps), or
    - an argument of its /proc/PID/cmdline starts with ``<agent_home>/bin/`` (e.g. an ``ocp_agentctl`` run
      over SSH, which does not have the marker in its own initial environment).
    """
    homes = {h.rstrip("/"): [] for h in agent_homes}
    by_marker = {f"{MARKER}={h}".encode(): h for h in homes}
    by_prefix = [(f"{h}/bin/".encode(), h) for h in homes]
    procs = all_procs() if procs is None else procs
    me = os.getpid()
    for proc in procs.values():
        if proc.pid == me or proc.state in ("Z", "X") or (uid is not None and proc.uid != uid):
            continue
        home = None
        for var in _read(f"/proc/{proc.pid}/environ").split(b"\0"):
            if var.startswith(MARKER.encode()):
                home = by_marker.get(var)
                break
        if home is None:
            for arg in _read(f"/proc/{proc.pid}/cmdline").split(b"\0"):
                home = next((h for prefix, h in by_prefix if arg.startswith(prefix)), None)
                if home is not None:
                    break
        if home is not None:
            homes[home].append((proc.pid, proc.comm))
    return homes


def signal_pids(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def terminate(pids: Iterable[int], grace: float = 1.0) -> list[int]:
    """SIGTERM (and SIGCONT, for stopped ones) ``pids``, wait up to ``grace`` s, SIGKILL what is left.

    Returns the pids that had to be killed.
    """
    pids = [p for p in set(pids) if p > 1 and p != os.getpid()]
    signal_pids(pids, signal.SIGTERM)
    signal_pids(pids, signal.SIGCONT)
    deadline = time.monotonic() + grace
    left = [p for p in pids if is_alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.01)
        left = [p for p in left if is_alive(p)]
    signal_pids(left, signal.SIGKILL)
    return left


def reap(process: subprocess.Popen, timeout: float) -> None:
    """Wait up to ``timeout`` s for a child we started to exit; SIGKILL it if it has not; reap it either way."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
