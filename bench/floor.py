"""The floor: a bare paramiko thread pool doing the five steps, with a barrier after each, no orchestration,
no records.

One connection per host (our own socket with TCP_NODELAY, the host key checked against the sandbox's
known_hosts, key auth), then five stages run as ``pool.map`` over the hosts, so each stage waits for every host.

Three kinds, each a rung between the floor and our flow:
- ``bare``: paramiko Transport, key and known_hosts loaded once, the core commands of ``COMMANDS``: the floor;
- ``session``: the same commands over steps.ssh.SSHSession: what our SSH layer costs by itself;
- ``steps``: the real step functions of steps/work.py (so exactly the remote commands our flow sends) run on
  a real steps.step.Step over SSHSession, with a stand-in run that has no task store, no subtask log and
  no Prefect: our remote work alone. What ``ours`` costs beyond it is orchestration and records.
"""

from __future__ import annotations

import shlex
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import paramiko

from steps.agent import Limits

from .common import STAGES, MachineCpu, Result, agent_pids, restarted_hosts, spans_to_result

KINDS = {"bare": "floor (bare paramiko)", "session": "floor over SSHSession", "steps": "floor, our steps' commands"}

# (command, whether it must succeed). After `stop`, `status` must FAIL: the agent is not running.
COMMANDS: dict[str, list[tuple[str, bool]]] = {
    "prepare": [("test -x {ctl}", True), ("{ctl} status", True)],
    "pos_proxy": [
        ("{ctl} service stop ocp_mgragent", True),
        ("{ctl} service start ocp_mgragent", True),
        ("{ctl} status", True),
    ],
    "stop": [("{ctl} stop", True), ("{ctl} status", False)],
    "start": [("{ctl} start", True), ("{ctl} status", True)],
    "finish": [("{ctl} status", True)],
}


# -- sessions for the core commands ----------------------------------------------------------------------------


class BareSession:
    """paramiko as thin as it gets: Transport on our own TCP_NODELAY socket, exec, read to EOF."""

    def __init__(self, host, user: str, known: paramiko.HostKeys, pkey: paramiko.PKey) -> None:
        self.host, self.user, self.known, self.pkey = host, user, known, pkey
        self.transport: paramiko.Transport | None = None

    def connect(self) -> None:
        address, port = self.host.address, self.host.port
        sock = socket.create_connection((address, port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = paramiko.Transport(sock)
        transport.start_client(timeout=30)
        if not self.known.check(f"[{address}]:{port}", transport.get_remote_server_key()):
            transport.close()
            raise RuntimeError(f"host key of {address}:{port} is not the known one")
        transport.auth_publickey(self.user, self.pkey)
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


def core_stage(session, ctl: str, stage: str) -> None:
    """One host's share of a stage with the core commands. Raises on an unexpected exit status."""
    if stage == "prepare":
        session.connect()
    output = ""
    for template, must_succeed in COMMANDS[stage]:
        command = template.format(ctl=ctl)
        status, output = session.run(command)
        if (status == 0) != must_succeed:
            raise RuntimeError(f"{stage}: {command!r} exited {status}: {output[-300:]}")
    if stage == "finish" and '"ready":true' not in output:
        raise RuntimeError(f"agent not ready at the end: {output[-300:]}")


# -- our real steps without records ----------------------------------------------------------------------------


class _NullStore:
    """The task-store calls steps/work.py makes, kept in memory."""

    def __init__(self) -> None:
        self.snapshots: dict = {}

    def save_snapshot(self, task_id: int, host_id: int, pids: dict, phase: str = "before") -> None:
        self.snapshots[(host_id, phase)] = dict(pids)

    def snapshot(self, task_id: int, host_id: int, phase: str = "before") -> dict | None:
        return self.snapshots.get((host_id, phase))


class _NullLog:
    """A SubtaskLog that keeps nothing."""

    def info(self, message: str) -> None:
        pass

    warning = error = info


class BareRun:
    """One SSHSession per host, no store, no log: what BareStep needs."""

    def __init__(self, hosts: dict) -> None:
        from flows.options import RestartOptions

        self.task_id, self.store, self.hosts, self.options = 0, _NullStore(), hosts, RestartOptions()
        self.sessions: dict = {}

    def session(self, host, deadline: float, log) -> object:
        from steps.ssh import SSHSession

        current = self.sessions.get(host.id)
        if current is None or not current.connected:
            current = SSHSession(host)
            current.connect(deadline=deadline)
            self.sessions[host.id] = current
        return current

    def canceling(self, fresh: bool = False) -> frozenset[int]:
        return frozenset()

    def close_session(self, host_id: int) -> None:
        session = self.sessions.pop(host_id, None)
        if session is not None:
            session.close()

    def close(self) -> None:
        for host_id in list(self.sessions):
            self.close_session(host_id)


class BareStep:
    """The Step interface (steps/step.py) with nothing behind it but the host's SSH session."""

    def __init__(self, run: BareRun, host, timeout: float) -> None:
        self.run, self.host, self.timeout = run, host, timeout
        self.deadline = time.monotonic() + timeout
        self.log = _NullLog()

    def runner(self):
        return self.run.session(self.host, self.deadline, self.log)

    def cancelled(self) -> bool:
        return False

    def may_act(self) -> None:
        pass

    def record_pids(self, phase: str, pids: dict) -> None:
        self.run.store.save_snapshot(0, self.host.id, pids, phase)

    def recorded_pids(self, phase: str):
        return self.run.store.snapshot(0, self.host.id, phase)

    @property
    def limits(self) -> Limits:
        return Limits()

    def record_version(self, version: str) -> None:
        pass


def steps_stage(run: BareRun, host, stage: str) -> None:
    """One host's share of a stage: the real execute step of steps/work.py, with the stage's real timeout."""
    from flows.plan import STAGES as TEMPLATES
    from steps import work

    kind = {
        "prepare": "prepare",
        "pos_proxy": "restart_pos_proxy",
        "stop": "stop_all",
        "start": "start_all",
        "finish": "finish",
    }[stage]
    timeout = next(t.timeout for t in TEMPLATES if t.kind.value == kind)
    getattr(work, kind)(BareStep(run, host, timeout))
    if kind == "finish":
        run.close_session(host.id)


# -- the measurement -----------------------------------------------------------------------------------------


def _host_jobs(sandbox, kind: str) -> tuple[list, object]:
    """Per host a function(stage) doing that host's share, and a closer for the connections."""
    if kind == "steps":
        from steps.inventory import load_inventory

        inventory = load_inventory(sandbox.inventory_path)
        run = BareRun({h.id: inventory.hosts[h.id] for h in sandbox.hosts})
        return [lambda stage, h=run.hosts[h.id]: steps_stage(run, h, stage) for h in sandbox.hosts], run.close
    if kind == "bare":
        known = paramiko.HostKeys(str(sandbox.known_hosts))
        pkey = paramiko.PKey.from_path(sandbox.key_file)
        sessions = [BareSession(h, sandbox.user, known, pkey) for h in sandbox.hosts]
    else:
        from steps.inventory import load_inventory

        inventory = load_inventory(sandbox.inventory_path)
        sessions = [OurSession(inventory.hosts[h.id]) for h in sandbox.hosts]
    jobs = [
        lambda stage, s=s, ctl=shlex.quote(str(h.ctl)): core_stage(s, ctl, stage)
        for s, h in zip(sessions, sandbox.hosts)
    ]
    return jobs, lambda: [s.close() for s in sessions]


def _timed(job, stage: str) -> float:
    started = time.monotonic()
    job(stage)
    return time.monotonic() - started


def run_floor(sandbox, *, kind: str = "bare", workers: int = 32) -> Result:
    """Connect + five barriered stages on every host of ``sandbox``; the stage spans come from the barriers."""
    before = agent_pids(sandbox)
    jobs, close = _host_jobs(sandbox, kind)
    cpu0 = time.process_time()
    launched = time.monotonic()
    spans, per_host, error = {}, {}, ""
    try:
        with MachineCpu() as machine, ThreadPoolExecutor(max_workers=workers) as pool:
            for stage in STAGES:
                begin = time.monotonic()
                seconds = list(pool.map(_timed, jobs, [stage] * len(jobs)))
                spans[stage] = (begin, time.monotonic())
                per_host[stage] = round(sum(seconds) / len(seconds), 3)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        close()
    wall = time.monotonic() - launched
    result = Result(
        name=KINDS[kind],
        wall=round(wall, 3),
        ok=not error,
        note=error,
        cpu_s=round(time.process_time() - cpu0, 2),
        extra={"workers": workers, "session": kind, "mean_host_seconds": per_host},
    )
    machine.record(result)
    spans_to_result(result, spans, launched, launched + wall)
    result.restarted = restarted_hosts(before, agent_pids(sandbox))
    return result
