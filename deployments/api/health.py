"""``GET /api/status``'s checks: is each module this server needs up? Bounded in time, whatever a module does.

Each check runs in a small thread pool and is waited for ``timeout`` seconds at most; a check still running then
counts as down, and a later probe waits on that same run instead of starting another, so a hung database never
piles up threads. Modules: ``store`` (the task store answers a read) and, when flows run as Prefect deployments,
``prefect`` (the Prefect API's ``/health`` answers).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

import httpx

from flows.store import TaskStore

TIMEOUT_SECONDS = 2.0  # load balancers and watchdogs probe often and give up after a few seconds


class Health:
    """The named checks (each returns, or raises when its module is down)."""

    def __init__(self, checks: dict[str, Callable[[], object]], timeout: float = TIMEOUT_SECONDS) -> None:
        self.checks, self.timeout = checks, timeout
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(checks)), thread_name_prefix="health")
        self._running: dict[str, Future[object]] = {}
        self._lock = threading.Lock()

    def down(self) -> list[str]:
        """The modules that are down (failed, or not answering within the timeout), in the checks' order."""
        with self._lock:
            for name, check in self.checks.items():
                if name not in self._running or self._running[name].done():
                    self._running[name] = self._pool.submit(check)
            futures = dict(self._running)
        wait(futures.values(), timeout=self.timeout)
        return [name for name, f in futures.items() if not f.done() or f.exception() is not None]


def store_check(store: TaskStore) -> Callable[[], object]:
    return store.locks  # a read of a table: SQLite answers `SELECT 1` without opening the file


def prefect_check(timeout: float = TIMEOUT_SECONDS) -> Callable[[], object]:
    """The Prefect API this process's deployments run on (PREFECT_API_URL) answers its health check."""

    def check() -> object:
        from prefect.settings import get_current_settings

        api = get_current_settings().api
        if not api.url:
            raise RuntimeError("PREFECT_API_URL is not set")
        auth = api.auth_string.get_secret_value() if api.auth_string else None
        user, _, password = (auth or "").partition(":")
        response = httpx.get(f"{api.url.rstrip('/')}/health", timeout=timeout, auth=(user, password) if auth else None)
        response.raise_for_status()
        return response

    return check
