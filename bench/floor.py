"""The floor: a bare paramiko thread pool doing the five steps, with a barrier after each, no orchestration,
no records.

One connection per host (our own socket with TCP_NODELAY, the host key checked against the sandbox's
known_hosts, key auth), then five stages run as ``pool.map`` over the hosts, so each stage waits for every host.
The commands are the core of what our steps run (``COMMANDS``); our steps run a few more (pid snapshots,
start times, ``ps``), which is part of what the comparison measures.

Two session kinds: ``bare`` (paramiko Transport, key and known_hosts loaded once: the floor) and ``ours``
(steps.ssh.SSHSession: the same five stages over our SSH layer, to show what that layer costs by itself).
"""

from __future__ import annotations

import shlex
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import paramiko

from .common import STAGES, Result, agent_pids, machine_busy_seconds, restarted_hosts, spans_to_result

# (command, whether it must succeed). After `stop`, `status` must FAIL: the agent is not running.
COMMANDS: dict[str, list[tuple[str, bool]]] = {
    "prepare": [("test -x {ctl}", True), ("{ctl} status", True)],
    "pos_proxy": [("{ctl} service stop ocp_mgragent", True), ("{ctl} service start ocp_mgragent", True),
                  ("{ctl} status", True)],
    "stop": [("{ctl} stop", True), ("{ctl} status", False)],
    "start": [("{ctl} start", True), ("{ctl} status", True)],
    "finish": [("{ctl} status", True)],
}


@dataclass(frozen=True)
class Target:
    """What the floor needs to reach one sandbox host."""

    id: int
    address: str
    port: int
    user: str
    ctl: str


class BareSession:
    """paramiko as thin as it gets: Transport on our own TCP_NODELAY socket, exec, read to EOF."""

    def __init__(self, target: Target, known: paramiko.HostKeys, pkey: paramiko.PKey) -> None:
        self.target, self.known, self.pkey = target, known, pkey
        self.transport: paramiko.Transport | None = None

    def connect(self) -> None:
        t = self.target
        sock = socket.create_connection((t.address, t.port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = paramiko.Transport(sock)
        transport.start_client(timeout=30)
        key = transport.get_remote_server_key()
        if not self.known.check(f"[{t.address}]:{t.port}", key):
            transport.close()
            raise RuntimeError(f"host key of {t.address}:{t.port} is not the known one")
        transport.auth_publickey(t.user, self.pkey)
        self.transport = transport

    def run(self, command: str) -> tuple[int, str]:
        chan = self.transport.open_session(timeout=30)
        chan.set_combine_stderr(True)
        chan.exec_command(command)
        output = chan.makefile("rb").read().decode(errors="replace")
        status = chan.recv_exit_status()
        chan.close()
        return status, output

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class OurSession:
    """The same interface over steps.ssh.SSHSession (deadlines, process groups, capped output)."""

    def __init__(self, host) -> None:
        from steps.ssh import SSHSession

        self.session = SSHSession(host)

    def connect(self) -> None:
        self.session.connect(deadline=time.monotonic() + 60)

    def run(self, command: str) -> tuple[int, str]:
        result = self.session.run(command, deadline=time.monotonic() + 60)
        return result.exit_status, result.output

    def close(self) -> None:
        self.session.close()


def targets(sandbox) -> list[Target]:
    return [Target(h.id, h.address, h.port, sandbox.user, shlex.quote(str(h.ctl))) for h in sandbox.hosts]


def make_sessions(sandbox, kind: str) -> list:
    if kind == "bare":
        known = paramiko.HostKeys(str(sandbox.known_hosts))
        pkey = paramiko.PKey.from_path(sandbox.key_file)
        return [BareSession(t, known, pkey) for t in targets(sandbox)]
    from steps.inventory import load_inventory

    inventory = load_inventory(sandbox.inventory_path)
    return [OurSession(inventory.hosts[h.id]) for h in sandbox.hosts]


def _stage(session, ctl: str, stage: str, connect: bool) -> float:
    """One host's share of a stage; returns its seconds. Raises on an unexpected exit status."""
    started = time.monotonic()
    if connect:
        session.connect()
    for template, must_succeed in COMMANDS[stage]:
        command = template.format(ctl=ctl)
        status, output = session.run(command)
        if (status == 0) != must_succeed:
            raise RuntimeError(f"{stage}: {command!r} exited {status}: {output[-300:]}")
    if stage == "finish" and '"ready":true' not in output:
        raise RuntimeError(f"agent not ready at the end: {output[-300:]}")
    return time.monotonic() - started


def run_floor(sandbox, *, kind: str = "bare", workers: int = 32) -> Result:
    """Connect + five barriered stages on every host of ``sandbox``; the stage spans come from the barriers."""
    name = "floor (bare paramiko)" if kind == "bare" else "floor over SSHSession"
    before = agent_pids(sandbox)
    ctls = [shlex.quote(str(h.ctl)) for h in sandbox.hosts]
    sessions = make_sessions(sandbox, kind)
    busy0, cpu0 = machine_busy_seconds(), time.process_time()
    launched = t0 = time.monotonic()
    spans, per_host, error = {}, {}, ""
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for stage in STAGES:
                begin = time.monotonic()
                seconds = list(pool.map(_stage, sessions, ctls, [stage] * len(sessions),
                                        [stage == "prepare"] * len(sessions)))
                spans[stage] = (begin, time.monotonic())
                per_host[stage] = round(sum(seconds) / len(seconds), 3)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        for session in sessions:
            session.close()
    wall = time.monotonic() - t0
    result = Result(name=name, wall=round(wall, 3), ok=not error, note=error,
                    cpu_s=round(time.process_time() - cpu0, 2), machine_cpu_s=round(machine_busy_seconds() - busy0, 2),
                    extra={"workers": workers, "session": kind, "mean_host_seconds": per_host})
    spans_to_result(result, spans, launched, launched + wall)
    result.restarted = restarted_hosts(before, agent_pids(sandbox))
    return result
