"""Process helpers for the sandbox, on psutil: liveness (a zombie counts as gone), process trees, the processes of
an agent home, TERM-then-KILL, and reaping the children we start."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable

import psutil

#: Every agent process started by a sandbox agent (ocp_agentd, the services, the ctl's own children) carries
#: ``OCP_SANDBOX_HOME=<agent_home>`` in its environment: ``ocp_agentctl`` exports it before starting anything.
MARKER = "OCP_SANDBOX_HOME"
_GONE = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)


def is_alive(pid: int | None) -> bool:
    """True for a live process; False for a missing pid, a gone process or a zombie."""
    if not pid or pid <= 0:
        return False
    try:
        return psutil.Process(pid).status() not in _GONE
    except psutil.Error:
        return False


def descendants(roots: Iterable[int], name: str | None = None) -> list[int]:
    """Every live descendant of ``roots`` (not the roots themselves), only those called ``name`` when given.

    One scan of the process table for all roots: psutil's ``children(recursive=True)`` scans it once per root, and a
    1,000-host sandbox's stop (1,000 sshd roots, ~7,000 processes) then took minutes."""
    roots = list(roots)
    children: dict[int, list[int]] = {}
    for proc in psutil.process_iter(["ppid"]):
        children.setdefault(proc.info["ppid"], []).append(proc.pid)
    found: list[int] = []
    seen, todo = set(roots), list(roots)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child in seen:
                continue
            seen.add(child)
            todo.append(child)
            try:
                process = psutil.Process(child)
                if process.status() not in _GONE and (name is None or process.name() == name):
                    found.append(child)
            except psutil.Error:
                pass
    return found


def marked_processes(agent_homes: Iterable[str], uid: int | None = None) -> dict[str, list[tuple[int, str]]]:
    """Live processes (of ``uid`` when given) belonging to each agent home, as (pid, name), by one of two rules:

    - its environment holds ``OCP_SANDBOX_HOME=<agent_home>`` (agentd, services, blocker, sleeps), or
    - an argument of its command line starts with ``<agent_home>/bin/`` (e.g. an ``ocp_agentctl`` run over SSH,
      which does not have the marker in its own initial environment).
    """
    homes: dict[str, list[tuple[int, str]]] = {h.rstrip("/"): [] for h in agent_homes}
    prefixes = [(f"{h}/bin/", h) for h in homes]
    me = os.getpid()
    for proc in psutil.process_iter(["status", "uids", "environ", "cmdline", "name"]):
        info = proc.info  # attributes it may not read (another user's environment) are None
        if proc.pid == me or info["status"] in _GONE or (uid is not None and info["uids"].effective != uid):
            continue
        home = (info["environ"] or {}).get(MARKER)
        if home not in homes:
            home = next((h for arg in info["cmdline"] or () for prefix, h in prefixes if arg.startswith(prefix)), None)
        if home is not None:
            homes[home].append((proc.pid, info["name"]))
    return homes


def start_detached(argv: list[str], *, home: str, env: dict[str, str], as_user: list[str] | None = None) -> int:
    """Start ``argv`` in ``home`` as an operator's shell would with ``&``: detached, not our child, its output
    dropped, marked as one of ``home``'s processes (MARKER); its pid. ``as_user``: a prefix such as ``runuser -u
    USER --`` when the agent's user is not ours."""
    started = subprocess.run(
        [*(as_user or []), "/bin/sh", "-c", '"$@" </dev/null >/dev/null 2>&1 & echo $!', "sh", *argv],
        capture_output=True,
        text=True,
        check=True,
        cwd=home,
        env={**env, MARKER: home},
    )
    return int(started.stdout.strip())


def signal_pids(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def terminate(pids: Iterable[int], grace: float = 1.0) -> list[int]:
    """SIGTERM (and SIGCONT, for stopped ones) ``pids``, wait up to ``grace`` s, SIGKILL what is left.

    Returns the pids that had to be killed. (Not psutil.wait_procs: a zombie that is not our child counts as gone
    here, as the agents' own checks count it.)
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


def reap(process: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float) -> None:
    """Wait up to ``timeout`` s for a child we started to exit; SIGKILL it if it has not; reap it either way."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
