"""Real services for the scale-out tests, started as our own child processes and stopped by PID:
PostgreSQL from Debian's packages, a Prefect server on it, Prefect process workers."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

from conftest import ROOT, free_port


def terminate(process: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM a child we started, SIGKILL it if it outlives ``grace`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (trust auth), as user postgres when we are root."""

    def __init__(self) -> None:
        import tempfile

        self.bin = _postgres_bin()
        # Its own directory under /tmp: pytest's tmp dirs are 0700 root, which the postgres user cannot enter.
        self.base = Path(tempfile.mkdtemp(prefix="ocp-restart-pg-"))
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def available(self) -> bool:
        return self.bin is not None

    def _as_owner(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def start(self) -> "PostgresServer":
        data = self.base / "pgdata"
        self.base.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres")
            os.chmod(self.base, 0o700)
        subprocess.run(self._as_owner([str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                                       "-E", "UTF8", "--locale=C"]), check=True, capture_output=True)
        self.log = open(self.base / "postgres.log", "ab")
        self.process = subprocess.Popen(
            self._as_owner([str(self.bin / "postgres"), "-D", str(data), "-p", str(self.port), "-k", str(self.base),
                            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"]),
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready = subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                                   capture_output=True)
            if ready.returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"PostgreSQL did not start; see {self.log.name}")
        for db in ("prefect", "ocp_restart"):
            subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-c", f"CREATE DATABASE {db}"],
                           check=True, capture_output=True)
        return self

    def url(self, db: str, driver: str) -> str:
        return f"postgresql+{driver}://postgres@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process)  # SIGTERM: PostgreSQL's smart shutdown
        shutil.rmtree(self.base, ignore_errors=True)


def prefect_exe() -> str:
    return shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"


class PrefectServer:
    """``prefect server start`` on loopback over PostgreSQL."""

    def __init__(self, base: Path, database_url: str, auth: str | None = None) -> None:
        self.base, self.database_url = base, database_url
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.env = {
            **os.environ, "PREFECT_HOME": str(base / "server-home"), "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1", "PREFECT_UI_ENABLED": "false",
        }
        if auth:  # the server requires it; its clients (workers, CLI, flow runs) send it
            self.env.update(PREFECT_SERVER_API_AUTH_STRING=auth, PREFECT_API_AUTH_STRING=auth)

    def start(self) -> "PrefectServer":
        self.log = open(self.base / "prefect-server.log", "ab")
        self.process = subprocess.Popen(
            [prefect_exe(), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.base,
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
        self.env = {**env, "PREFECT_HOME": str(self.dir / "prefect-home"), "PREFECT_WORKER_QUERY_SECONDS": "1",
                    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "INFO",
                    "PREFECT_WORKER_PREFETCH_SECONDS": "5"}
        self.log = open(self.dir / "worker.log", "ab")
        self.process = subprocess.Popen(
            [prefect_exe(), "worker", "start", "--pool", pool, "--type", "process", "--name", name],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir,
        )

    def stop(self) -> None:
        terminate(self.process)


__all__ = ["PostgresServer", "PrefectServer", "Worker", "ROOT"]
