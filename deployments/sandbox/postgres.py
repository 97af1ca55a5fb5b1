"""A throwaway PostgreSQL cluster on loopback, for the scale-out tests and the bench's Prefect server.

Debian's PostgreSQL (/usr/lib/postgresql/*/bin): ``initdb`` (as user postgres via runuser when we are root, trust
auth), ``postgres`` on 127.0.0.1 with ``fsync=off`` and its socket in its own directory under /tmp, then one
``CREATE DATABASE`` per name given. Stopped by the postmaster's pid (fast shutdown, SIGKILL after a grace period);
its directory is removed.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from .procs import is_alive, reap


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return Path(found[-1]).parent if found else None


class PostgresCluster:
    """``PostgresCluster(port, databases).start()``; ``.pid`` is the postmaster; ``url(db, driver)``."""

    def __init__(self, port: int, databases: tuple[str, ...] = ("prefect",), max_connections: int = 200) -> None:
        self.bin = postgres_bin()
        self.port, self.databases, self.max_connections = port, databases, max_connections
        self.base: Path | None = None
        self.process: subprocess.Popen | None = None
        self.pid: int | None = None  # the postmaster

    @property
    def available(self) -> bool:
        return self.bin is not None

    def url(self, db: str, driver: str) -> str:
        return f"postgresql+{driver}://postgres@127.0.0.1:{self.port}/{db}"

    def _as_owner(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def start(self, timeout: float = 60.0) -> PostgresCluster:
        if self.bin is None:
            raise RuntimeError("no PostgreSQL under /usr/lib/postgresql/*/bin")
        # its own directory under /tmp: the postgres user must be able to enter it (pytest's tmp dirs are 0700 root)
        self.base = Path(tempfile.mkdtemp(prefix="ocp-restart-pg-"))
        data = self.base / "pgdata"
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres")
            os.chmod(self.base, 0o700)
        subprocess.run(
            self._as_owner(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ]
            ),
            check=True,
            capture_output=True,
        )
        self._spawn(timeout)
        for db in self.databases:
            subprocess.run(
                [
                    str(self.bin / "psql"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    "postgres",
                    "-c",
                    f"CREATE DATABASE {db}",
                ],
                check=True,
                capture_output=True,
            )
        return self

    def _spawn(self, timeout: float) -> None:
        """Start the postmaster on the cluster's data directory and wait until it accepts connections."""
        assert self.bin is not None and self.base is not None
        data = self.base / "pgdata"
        self.log = open(self.base / "postgres.log", "ab")
        self.process = subprocess.Popen(
            self._as_owner(
                [
                    str(self.bin / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.base),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    f"max_connections={self.max_connections}",
                ]
            ),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited {self.process.returncode}; see {self.log.name}")
            ready = subprocess.run(
                [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True
            )
            if ready.returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"PostgreSQL did not start within {timeout} s; see {self.log.name}")
        self.pid = int((data / "postmaster.pid").read_text().split()[0])

    def halt(self, grace: float = 20.0) -> None:
        """Stop the server (fast shutdown by the postmaster's pid), keeping its data: ``resume()`` starts it again.
        For outage tests: connections are refused meanwhile."""
        self._shutdown(grace)
        if self.process is not None:
            reap(self.process, timeout=10)
            self.log.close()
            self.process = None
        self.pid = None

    def resume(self, timeout: float = 60.0) -> None:
        """Start the server ``halt()`` stopped, on the same port and data."""
        self._spawn(timeout)

    def _shutdown(self, grace: float) -> None:
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and is_alive(self.pid):
                time.sleep(0.1)
            if is_alive(self.pid):
                os.kill(self.pid, signal.SIGKILL)

    def stop(self, grace: float = 20.0) -> None:
        """Fast shutdown (SIGINT) of the postmaster by its pid, SIGKILL after ``grace``; removes the directory."""
        self._shutdown(grace)
        if self.process is not None:  # runuser (when root): it exits with its child
            reap(self.process, timeout=10)
            self.log.close()
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
