"""A Runner for this machine: each command run by ``/bin/sh -c`` as the leader of its own process group.

It keeps SSHSession's contract (``steps/ssh.py``) without sshd: the deadline and the operator's stop are checked
while the command runs, and either kills the command's whole process group (TERM, then KILL after 1 s) and raises
CommandTimeout or SubtaskCancelled with the same messages; the output is read to EOF, each stream capped as over
SSH; a command killed by a signal exits -1 as paramiko reports it. The agent contract tests drive a shell agent
installed in a temp dir (``agent_home.AgentHome``) with it: no sshd, no root.

    runner = LocalRunner()
    runner.run("echo hi", deadline=time.monotonic() + 5).stdout  # "hi\\n"
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping

from steps.errors import CommandTimeout, SubtaskCancelled
from steps.runner import CommandResult
from steps.ssh import COMMAND_POLL_SECONDS, _Capped  # the same poll and the same output cap as over SSH

from .agent_home import CLEAN_ENV

KILL_GRACE = 1.0  # as steps.ssh.KILL_GROUP: TERM the group, KILL what is left after 1 s


class LocalRunner:
    """Runs commands on this machine as its current user, in ``cwd`` with ``env`` (a clean PATH by default, as a
    non-interactive SSH session has). ``commands`` keeps every command sent; ``killed``, the process groups killed."""

    def __init__(self, *, label: str = "localhost", cwd: str = "/", env: Mapping[str, str] | None = None) -> None:
        self.label = label
        self.cwd = cwd
        self.env = dict(CLEAN_ENV if env is None else env)
        self.commands: list[str] = []
        self.killed: list[int] = []

    def run(self, command: str, *, deadline: float, stop: Callable[[], bool] | None = None) -> CommandResult:
        started = time.monotonic()
        if deadline - started <= 0:
            raise CommandTimeout(f"deadline passed before running {command!r} on {self.label}")
        self.commands.append(command)
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self.cwd,
            env=self.env,
            start_new_session=True,
        )
        out, err = _Capped(), _Capped()
        with selectors.DefaultSelector() as streams:
            streams.register(proc.stdout, selectors.EVENT_READ, out)
            streams.register(proc.stderr, selectors.EVENT_READ, err)
            try:
                # Until EOF on both streams (the output is complete only then), then until the exit status.
                while streams.get_map() or proc.poll() is None:
                    if stop is not None and stop():
                        note = self._kill(proc, streams)
                        output = _join(out.text(), err.text())
                        raise SubtaskCancelled(
                            f"cancelled by an operator while {command!r} ran; {note}"
                            + (f"; its output:\n{output}" if output else "")
                        )
                    if time.monotonic() >= deadline:
                        note = self._kill(proc, streams)
                        took = time.monotonic() - started
                        raise CommandTimeout(
                            f"{self.label}: {command!r} did not finish within {took:.1f} s; {note}",
                            output=_join(out.text(), err.text()),
                        )
                    wait = min(COMMAND_POLL_SECONDS, max(0.0, deadline - time.monotonic()))
                    if streams.get_map():
                        _read(streams, wait)
                    else:
                        try:
                            proc.wait(wait)
                        except subprocess.TimeoutExpired:
                            pass
            finally:
                for pipe in (proc.stdout, proc.stderr):
                    pipe.close()
                if proc.poll() is None:  # only after an error of ours: never leave a child running
                    self._kill(proc, None)
        status = proc.returncode if proc.returncode >= 0 else -1  # killed by a signal: paramiko's -1
        return CommandResult(command, status, out.text(), err.text(), time.monotonic() - started)

    def _kill(self, proc: subprocess.Popen, streams: selectors.BaseSelector | None) -> str:
        """TERM the command's process group, KILL what is left after KILL_GRACE, reap the leader; what was done."""
        pgid = proc.pid  # start_new_session: the shell leads its own session and group
        _signal_group(pgid, signal.SIGTERM)
        give_up = time.monotonic() + KILL_GRACE
        while time.monotonic() < give_up:
            proc.poll()  # reap the leader
            if not _group_alive(pgid):
                break
            time.sleep(0.01)
        else:
            _signal_group(pgid, signal.SIGKILL)
        proc.wait()
        if streams is not None:  # what it printed before it died
            while streams.get_map() and _read(streams, 0.05):
                pass
        self.killed.append(pgid)
        return f"killed its process group {pgid} on the host"


def _read(streams: selectors.BaseSelector, timeout: float) -> bool:
    """Read what is ready within ``timeout`` into each stream's buffer; unregister a stream at EOF. Whether any
    stream was ready."""
    ready = streams.select(timeout)
    for key, _ in ready:
        chunk = os.read(key.fd, 65536)
        if chunk:
            key.data.add(chunk)
        else:
            streams.unregister(key.fileobj)
    return bool(ready)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    """Whether process group ``pgid`` has a live member. Not ``kill -0``: the children of a killed shell are
    orphans whose zombies wait for PID 1, which may reap them late, and a zombie is no reason to wait."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                fields = stat.read().rpartition(b")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _join(*parts: str) -> str:
    return "\n".join(p.rstrip("\n") for p in parts if p.strip())


__all__ = ["LocalRunner"]
