"""Real services for the scale-out tests, started as our own child processes and stopped by PID:
PostgreSQL from Debian's packages, a Prefect server on it, Prefect process workers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
from conftest import ROOT, free_port

from deployments.sandbox.postgres import PostgresCluster
from deployments.sandbox.procs import reap


def terminate(process: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM a child we started, SIGKILL it if it outlives ``grace`` seconds."""
    if process.poll() is None:
        process.terminate()
        reap(process, grace)


class PostgresServer(PostgresCluster):
    """A throwaway PostgreSQL cluster with the databases the scale-out tests use: prefect and ocp_restart."""

    def __init__(self) -> None:
        super().__init__(free_port(), databases=("prefect", "ocp_restart"))


def prefect_exe() -> str:
    return shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"


class PrefectServer:
    """``prefect server start`` on loopback over PostgreSQL."""

    def __init__(self, base: Path, database_url: str, auth: str | None = None) -> None:
        self.base, self.database_url = base, database_url
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.env = {
            **os.environ,
            "PREFECT_HOME": str(base / "server-home"),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_UI_ENABLED": "false",
        }
        if auth:  # the server requires it; its clients (workers, CLI, flow runs) send it
            self.env.update(PREFECT_SERVER_API_AUTH_STRING=auth, PREFECT_API_AUTH_STRING=auth)

    def start(self) -> PrefectServer:
        self.log = open(self.base / "prefect-server.log", "ab")
        self.process = subprocess.Popen(
            [prefect_exe(), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=self.base,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prefect server exited; see {self.log.name}")
            try:
                if httpx.get(self.api_url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"prefect server did not answer within 120 s; see {self.log.name}")

    def stop(self) -> None:
        terminate(self.process)


class Worker:
    """``prefect worker start`` for the process pool, as if on its own machine (own home and directory)."""

    def __init__(self, base: Path, name: str, env: dict[str, str], pool: str = "ocp-restart") -> None:
        self.dir = base / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.env = {
            **env,
            "PREFECT_HOME": str(self.dir / "prefect-home"),
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "INFO",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        }
        self.log = open(self.dir / "worker.log", "ab")
        self.process = subprocess.Popen(
            [prefect_exe(), "worker", "start", "--pool", pool, "--type", "process", "--name", name],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
        )

    def stop(self) -> None:
        terminate(self.process)


__all__ = ["PostgresServer", "PrefectServer", "Worker", "ROOT"]
