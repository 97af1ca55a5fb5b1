"""One flow run's shared state (store, lease, hosts, SSH sessions, logs) and the Step it hands each subtask.

Prefect task parameters are hashed and recorded, so step tasks receive a short run key and look the run up here.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from steps.agent import Limits
from steps.errors import Fenced, SubtaskCancelled
from steps.fencing import FencedRunner
from steps.inventory import Host
from steps.logline import log_line
from steps.runner import Runner
from steps.ssh import SSHSession

from . import preconnect
from .errors import StaleWriteError, StoreUnavailableError
from .lease import Lease
from .logs import LogWriter, SubtaskLog
from .machine import Transition
from .models import SubtaskStatus
from .options import RestartOptions
from .outage import StoreOutage
from .store import TaskRecord, TaskStore

_RUNS: dict[str, RunContext] = {}
_NOTHING_SENT = "; no command was sent meanwhile"
_RUNS_LOCK = threading.Lock()
CANCEL_POLL_SECONDS = 0.5


@dataclass
class RunContext:
    task_id: int
    store: TaskStore
    record: TaskRecord
    hosts: dict[int, Host]
    options: RestartOptions
    lease: Lease
    _sessions: dict[int, SSHSession] = field(default_factory=dict)
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    logs: LogWriter = field(init=False)
    tolerant_waits: bool = False  # a failure threshold: Wait nodes run once their upstreams are done
    stopping: str | None = None  # why no new subtask starts (a graceful stop)
    _advance_lock: threading.Lock = field(default_factory=threading.Lock)
    _running: set[int] = field(default_factory=set)
    _canceling: frozenset[int] = frozenset()
    _canceling_read: float = float("-inf")
    _cancel_lock: threading.Lock = field(default_factory=threading.Lock)
    # (host id, phase) -> pids: what this run wrote or read once; it holds the task's lease, so nobody else writes
    # them meanwhile, and each step reads them back without a store round trip.
    _snapshots: dict[tuple[int, str], dict[str, int] | None] = field(default_factory=dict)
    outage: StoreOutage = field(init=False)

    def __post_init__(self) -> None:
        self.outage = StoreOutage(self.task_id)

    def __enter__(self) -> RunContext:
        self.logs = LogWriter(self.store, runner=self.lease.runner, task_id=self.task_id).__enter__()
        with _RUNS_LOCK:
            _RUNS[self.key] = self
        return self

    def __exit__(self, *exc: object) -> None:
        with _RUNS_LOCK:
            _RUNS.pop(self.key, None)
        for host_id in list(self._sessions):
            self.close_session(host_id)
        self.logs.__exit__(*exc)

    def advance(self, decide: Callable[[TaskRecord], Transition]) -> TaskRecord:
        """One transition of this run: decided on the run's record, written guarded by this runner's id. Fenced
        (and the lease lost for good) if the store refuses it: another process owns the task now."""
        with self._advance_lock:
            self.lease.check()
            transition = decide(self.record)
            try:
                _, waited = self.outage.wait(
                    lambda: self.store.apply(transition, runner=self.lease.runner),
                    fence=self.lease.check,
                    doing="recording the next subtask transition",
                )
            except StaleWriteError as exc:
                self.lease.lose(exc.message)
                raise Fenced(f"not acting: {exc.message}") from None
            self.record = transition.after
            if waited:
                for sub in transition.changed:
                    note = f"the task store was unavailable: recording {sub.status.value} waited {waited:.1f} s"
                    self.logs.add(sub.id, log_line("WARN", "task store", note + _NOTHING_SENT))
            for sub in transition.changed:
                (self._running.add if sub.status is SubtaskStatus.RUNNING else self._running.discard)(sub.id)
            return self.record

    def stop(self, reason: str, grace: float) -> None:
        """A graceful stop: start nothing new, give running subtasks ``grace`` seconds to end, then give up the
        lease, which kills the commands still running on their hosts (their subtasks then end FAILED)."""
        self.stopping = reason
        until = time.monotonic() + grace
        while self._running and time.monotonic() < until:
            time.sleep(0.05)
        self.lease.lose(reason)

    def canceling(self, fresh: bool = False) -> frozenset[int]:
        """The subtasks an operator asked to cancel: one store read per run every 0.5 s (``fresh``: now), however
        many steps are running and asking."""
        with self._cancel_lock:
            if fresh or time.monotonic() - self._canceling_read >= CANCEL_POLL_SECONDS:
                try:
                    self._canceling = frozenset(self.store.canceling(self.task_id))
                except StoreUnavailableError:
                    pass  # an outage cancels nothing: the last answer holds, and the next write waits for the store
                self._canceling_read = time.monotonic()
            return self._canceling

    def session(self, host: Host, deadline: float, log: SubtaskLog) -> SSHSession:
        """The host's connection, opened (and host-key verified) on first use, reused by later steps."""
        current = self._sessions.get(host.id)
        if current is not None and current.connected:
            return current
        self.lease.check()
        opened = preconnect.take(self.task_id, host, deadline)
        if opened is not None:  # opened while the CLI's Prefect server started (flows/preconnect.py)
            session, notes, seconds, ahead = opened.session, opened.notes, opened.seconds, " before the flow started"
        else:
            session = SSHSession(host, accept_new_host_key=self.options.accept_new_host_keys)
            started = time.monotonic()
            notes, ahead = session.connect(deadline=deadline), ""
            seconds = time.monotonic() - started
        for note in notes:
            log.warning(note)
        log.info(f"connected to {host.label} as {host.user}, host key verified ({seconds * 1000:.0f} ms{ahead})")
        self._sessions[host.id] = session
        return session

    def connected(self, host_id: int) -> bool:
        """Whether the host's session is open (a command may be sent without connecting again)."""
        session = self._sessions.get(host_id)
        return session is not None and session.connected

    def close_session(self, host_id: int) -> None:
        session = self._sessions.pop(host_id, None)
        if session is not None:
            session.close()


@dataclass
class HostStep:
    """The Step (``steps/step.py``) of one subtask in a real run: fenced by the run's lease, cancellable by an
    operator, pid snapshots kept in the task store."""

    run: RunContext
    subtask_id: int
    host: Host
    log: SubtaskLog
    deadline: float
    timeout: int

    @property
    def limits(self) -> Limits:
        options = self.run.options
        return Limits(min_free_disk_mb=options.min_free_disk_mb, min_free_memory_mb=options.min_free_memory_mb)

    def runner(self) -> Runner:
        # The lease is asked before every command; a command stopped by a lost lease is Fenced, not a cancel.
        return FencedRunner(self.run.session(self.host, self.deadline, self.log), lambda: self.run.lease.lost)

    def cancelled(self) -> bool:
        return self.run.lease.lost is not None or self.subtask_id in self.run.canceling()

    def may_act(self) -> None:
        self.run.lease.check()
        if self.subtask_id in self.run.canceling(fresh=True):
            raise SubtaskCancelled("cancelled by an operator")

    def record_pids(self, phase: str, pids: dict[str, int]) -> None:
        _, waited = self.run.outage.wait(
            lambda: self.run.store.save_snapshot(self.run.task_id, self.host.id, pids, phase=phase),
            fence=self.run.lease.check,
            doing=f"recording {self.host.label}'s agent pids",
        )
        if waited:
            self.log.warning(f"the task store was unavailable: recording the pids waited {waited:.1f} s{_NOTHING_SENT}")
        self.run._snapshots[(self.host.id, phase)] = dict(pids)

    def record_version(self, version: str) -> None:
        self.run.lease.check()
        self.run.store.save_version(self.run.task_id, self.host.id, version)

    def recorded_pids(self, phase: str) -> dict[str, int] | None:
        key = (self.host.id, phase)
        if key not in self.run._snapshots:  # recorded by an earlier run of the task (this one is a retry)
            self.run._snapshots[key], waited = self.run.outage.wait(
                lambda: self.run.store.snapshot(self.run.task_id, self.host.id, phase),
                fence=self.run.lease.check,
                doing=f"reading {self.host.label}'s recorded agent pids",
            )
            if waited:
                self.log.warning(
                    f"the task store was unavailable: reading the pids waited {waited:.1f} s{_NOTHING_SENT}"
                )
        found = self.run._snapshots[key]
        return dict(found) if found is not None else None


def stop_runs(reason: str, grace: float) -> None:
    """Stop every run of this process gracefully, at once (see ``RunContext.stop``)."""
    with _RUNS_LOCK:
        runs = list(_RUNS.values())
    threads = [threading.Thread(target=run.stop, args=(reason, grace), name=f"stop-{run.task_id}") for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def lookup(key: str) -> RunContext:
    with _RUNS_LOCK:
        try:
            return _RUNS[key]
        except KeyError:
            raise RuntimeError(f"no restart run with key {key!r} in this process") from None
