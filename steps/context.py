"""The state one flow run shares with its step tasks (store, hosts, SSH sessions), and one step's own context.

Prefect task parameters are hashed and recorded, so steps receive a short run key and look the run up here.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

from flows.errors import SubtaskCancelled
from flows.options import RestartOptions
from flows.store import TaskRecord, TaskStore

from .agent import AgentControl
from .inventory import Host
from .ssh import SSHSession
from .subtask_log import LogWriter, SubtaskLog

_RUNS: dict[str, RunContext] = {}
_RUNS_LOCK = threading.Lock()
CANCEL_POLL_SECONDS = 0.5


@dataclass
class RunContext:
    task_id: int
    store: TaskStore
    record: TaskRecord
    hosts: dict[int, Host]
    options: RestartOptions
    _sessions: dict[int, SSHSession] = field(default_factory=dict)
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    logs: LogWriter = field(init=False)
    _canceling: frozenset[int] = frozenset()
    _canceling_read: float = float("-inf")
    _cancel_lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> RunContext:
        self.logs = LogWriter(self.store).__enter__()
        with _RUNS_LOCK:
            _RUNS[self.key] = self
        return self

    def __exit__(self, *exc: object) -> None:
        with _RUNS_LOCK:
            _RUNS.pop(self.key, None)
        for host_id in list(self._sessions):
            self.close_session(host_id)
        self.logs.__exit__(*exc)

    def canceling(self, fresh: bool = False) -> frozenset[int]:
        """The subtasks an operator asked to cancel: one store read per run every 0.5 s (``fresh``: now), however
        many steps are running and asking."""
        with self._cancel_lock:
            if fresh or time.monotonic() - self._canceling_read >= CANCEL_POLL_SECONDS:
                self._canceling = frozenset(self.store.canceling(self.task_id))
                self._canceling_read = time.monotonic()
            return self._canceling

    def session(self, host: Host, deadline: float, log: SubtaskLog) -> SSHSession:
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


@dataclass
class Step:
    """One subtask's run: its host, log, deadline, and whether an operator cancelled it."""

    run: RunContext
    subtask_id: int
    host: Host | None
    log: SubtaskLog
    deadline: float
    timeout: int

    def cancelled(self) -> bool:
        """True once the subtask is CANCELING in the store (seen within 0.5 s)."""
        return self.subtask_id in self.run.canceling()

    def check_cancelled(self) -> None:
        if self.subtask_id in self.run.canceling(fresh=True):
            raise SubtaskCancelled("cancelled by an operator")

    def agent(self) -> AgentControl:
        assert self.host is not None, "a Wait node has no host"
        session = self.run.session(self.host, self.deadline, self.log)
        return AgentControl(session, self.host.agent_home, self.log.info, stop=self.cancelled)

    @property
    def snapshot(self) -> dict[str, int] | None:
        """The agent's pids when Prepare ran (kept in the store, so a retry still knows them)."""
        return self.run.store.snapshot(self.run.task_id, self.host.id) if self.host else None


def lookup(key: str) -> RunContext:
    with _RUNS_LOCK:
        try:
            return _RUNS[key]
        except KeyError:
            raise RuntimeError(f"no restart run with key {key!r} in this process") from None
