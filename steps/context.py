"""The state one flow run shares with its step tasks: store, hosts, SSH sessions, pid snapshots.

Prefect task parameters are hashed and recorded, so steps receive a short run key and look the context up here.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

from flows.options import RestartOptions
from flows.store import TaskRecord, TaskStore

from .agent import AgentStatus
from .inventory import Host
from .ssh import SSHSession

_RUNS: dict[str, RunContext] = {}
_RUNS_LOCK = threading.Lock()


@dataclass
class RunContext:
    task_id: int
    store: TaskStore
    record: TaskRecord
    hosts: dict[int, Host]
    options: RestartOptions
    snapshots: dict[int, AgentStatus] = field(default_factory=dict)  # host id -> agent pids at Prepare
    _sessions: dict[int, SSHSession] = field(default_factory=dict)
    key: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __enter__(self) -> RunContext:
        with _RUNS_LOCK:
            _RUNS[self.key] = self
        return self

    def __exit__(self, *exc: object) -> None:
        with _RUNS_LOCK:
            _RUNS.pop(self.key, None)
        for host_id in list(self._sessions):
            self.close_session(host_id)

    def session(self, host: Host, deadline: float, log) -> SSHSession:
        """The host's connection, opened (and host-key verified) on first use, reused by later steps."""
        current = self._sessions.get(host.id)
        if current is not None and current.connected:
            return current
        session = SSHSession(host, accept_new_host_key=self.options.accept_new_host_keys)
        started = time.monotonic()
        for note in session.connect(deadline=deadline):
            log.warning(note)
        log.info(f"connected to {host.label} as {host.user}, host key verified ({(time.monotonic() - started) * 1000:.0f} ms)")
        self._sessions[host.id] = session
        return session

    def close_session(self, host_id: int) -> None:
        session = self._sessions.pop(host_id, None)
        if session is not None:
            session.close()


def lookup(key: str) -> RunContext:
    with _RUNS_LOCK:
        try:
            return _RUNS[key]
        except KeyError:
            raise RuntimeError(f"no restart run with key {key!r} in this process") from None
