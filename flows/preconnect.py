"""SSH connections a CLI run opens while its Prefect server comes up, for its flow's steps to use (#23).

A local Prefect server takes 4-8 s to start; the run's first step waits for it anyway. So the CLI opens each host's
connection (TCP, handshake, host key checked against known_hosts, authentication: the same ``SSHSession.connect``
a step does) meanwhile, and ``RunContext.session`` takes it instead of connecting. Nothing is run on a host: every
command is still a step of the flow. A connection that failed is dropped and the step connects itself (and fails
with its own error in its own log); the notes of a connection (a new host key accepted) go to the step's log.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from steps.inventory import Host
from steps.ssh import SSHSession


@dataclass(frozen=True)
class Opened:
    """A connection opened ahead: the session, its notes for the log, how long connecting took."""

    session: SSHSession
    notes: list[str]
    seconds: float


class Preconnect:
    """Connections to ``hosts`` opened in the background (at most ``workers`` at once) until ``deadline``."""

    def __init__(self, hosts: list[Host], *, accept_new_host_keys: bool, deadline: float, workers: int) -> None:
        self._hosts = {h.id: h for h in hosts}
        self._accept = accept_new_host_keys
        self._deadline = deadline
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(hosts))), thread_name_prefix="preconnect")
        self._futures: dict[int, Future[Opened | None]] = {h.id: self._pool.submit(self._open, h) for h in hosts}
        self._lock = threading.Lock()
        self._pool.shutdown(wait=False)

    def _open(self, host: Host) -> Opened | None:
        session = SSHSession(host, accept_new_host_key=self._accept)
        started = time.monotonic()
        try:
            notes = session.connect(deadline=self._deadline)
        except Exception:  # the step connects again and reports it as its own failure
            return None
        return Opened(session, notes, time.monotonic() - started)

    def take(self, host: Host, deadline: float) -> Opened | None:
        """The host's connection if it was opened for this same host (address, user, key: the inventory may have
        changed since) and is alive; waits for it at most until ``deadline``. Each is handed out once."""
        with self._lock:
            future = self._futures.pop(host.id, None)
        if future is None:
            return None
        try:
            opened = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            future.add_done_callback(_close_result)
            return None
        if opened is None:
            return None
        if self._hosts.get(host.id) != host or not opened.session.connected:
            opened.session.close()
            return None
        return opened

    def close(self) -> None:
        """Close what no step took (a host whose Prepare never ran)."""
        with self._lock:
            futures, self._futures = list(self._futures.values()), {}
        for future in futures:
            future.add_done_callback(_close_result)


def _close_result(future: Future[Opened | None]) -> None:
    opened = future.result() if not future.cancelled() else None
    if opened is not None:
        opened.session.close()


_OFFERED: dict[int, Preconnect] = {}  # task id -> its connections
_OFFERED_LOCK = threading.Lock()


def offer(task_id: int, connections: Preconnect) -> None:
    with _OFFERED_LOCK:
        _OFFERED[task_id] = connections


def take(task_id: int, host: Host, deadline: float) -> Opened | None:
    with _OFFERED_LOCK:
        connections = _OFFERED.get(task_id)
    return connections.take(host, deadline) if connections is not None else None


def withdraw(task_id: int) -> None:
    """The run is over: close what it did not use."""
    with _OFFERED_LOCK:
        connections = _OFFERED.pop(task_id, None)
    if connections is not None:
        connections.close()
