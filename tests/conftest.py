"""Shared fixtures: an isolated home, one real Prefect server for the session, sandbox hosts."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Before Prefect is imported anywhere: an isolated home, no telemetry (this machine has no internet).
_HOME = Path(tempfile.mkdtemp(prefix="ocp-restart-tests-"))
os.environ["OCP_RESTART_HOME"] = str(_HOME / "home")
os.environ["PREFECT_HOME"] = str(_HOME / "prefect")
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "WARNING"
# Every Prefect server of the tests records task runs in batches, as the README tells users to (#14).
os.environ["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE"] = "100"
os.environ["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL"] = "1"
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("OCP_RESTART_STORE_URL", None)
os.environ.pop("OCP_RESTART_INVENTORY", None)
# A CLI run without PREFECT_API_URL starts a local Prefect server (deployments/local_prefect.py): in tests, let it
# stop soon after its last use instead of 10 minutes later.
os.environ["OCP_RESTART_PREFECT_IDLE_SECONDS"] = "5"

import pytest  # noqa: E402

from deployments.sandbox.procs import reap  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# schemathesis' seed (tests/test_fuzz.py): new on every run, so each CI run explores further; printed in the header.
FUZZ_SEED = os.environ.get("OCP_RESTART_FUZZ_SEED") or str(random.SystemRandom().randrange(1, 2**31))


def pytest_report_header(config) -> str:
    return f"fuzz seed: {FUZZ_SEED} (replay: OCP_RESTART_FUZZ_SEED={FUZZ_SEED})"


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """One temporary Prefect server (real, on loopback, SQLite) for the whole session; its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        url = PREFECT_API_URL.value()
        os.environ["PREFECT_API_URL"] = url  # for the CLI processes the tests start
        yield url
        os.environ.pop("PREFECT_API_URL", None)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh OCP_RESTART_HOME (task store) per test."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("OCP_RESTART_HOME", str(path))
    return path


@pytest.fixture
def sandbox(tmp_path):
    """Three sandbox hosts (real sshd on 127.0.0.x, simulated agent), torn down after the test."""
    from deployments.sandbox import Sandbox

    with Sandbox(3) as box:
        yield box


@pytest.fixture(scope="module")
def box():
    """Three sandbox hosts shared by a test module (real sshd on 127.0.0.x, simulated agent)."""
    from deployments.sandbox import Sandbox

    with Sandbox(3) as sandbox:
        yield sandbox


def write_users(path: Path, passwords: dict[str, str], roles: dict[str, list[str]]) -> Path:
    """A users file with each user's password and roles (the API's logins for a test module)."""
    from deployments.auth import add_user

    for name, password in passwords.items():
        add_user(path, name, password, roles[name])
    return path


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``ocp-restart`` in a fresh process, as a user would."""
    exe = shutil.which("ocp-restart", path=str(Path(sys.executable).parent)) or shutil.which("ocp-restart")
    command = [exe, *args] if exe else [sys.executable, "-m", "deployments.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ApiServer:
    """``ocp-restart serve`` as a real uvicorn process on loopback; stopped by its PID."""

    def __init__(self, inventory: Path, users: Path, home: Path) -> None:
        self.inventory, self.users, self.home = inventory, users, home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> ApiServer:
        import time

        import httpx

        env = {**os.environ, "OCP_RESTART_HOME": str(self.home)}
        exe = shutil.which("ocp-restart", path=str(Path(sys.executable).parent))
        command = [exe] if exe else [sys.executable, "-m", "deployments.cli"]
        self.log = open(self.home / f"serve-{self.port}.log", "ab")
        self.process = subprocess.Popen(
            [
                *command,
                "serve",
                "--inventory",
                str(self.inventory),
                "--users",
                str(self.users),
                "--port",
                str(self.port),
            ],
            env=env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ocp-restart serve exited {self.process.returncode}; see {self.log.name}")
            try:
                httpx.get(self.url + "/openapi.json", timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("ocp-restart serve did not answer within 60 s")

    def kill(self, sig: int = 15) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            reap(self.process, timeout=10)
        self.log.close()


def wait_for(api, task_id: int, until=lambda t: t["status"] != "RUNNING", timeout: float = 60) -> dict:
    """Poll GET /api/v2/tasks/instances/{id} (an httpx client with credentials) until ``until(task)`` holds."""
    import time

    deadline = time.monotonic() + timeout
    task: dict = {}
    while time.monotonic() < deadline:
        body = api.get(f"/api/v2/tasks/instances/{task_id}").json()
        assert body["successful"], body
        task = body["data"]
        if until(task):
            return task
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} did not get there within {timeout} s: {task}")


def strays(host) -> list:
    """Processes of the host outside the agent's own process group (e.g. a hung `ocp_agentctl stop`)."""
    agentd = host.agent_pids()["ocp_agentd"]
    out = []
    for pid, comm in host.processes():
        try:
            pgid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[2])
        except (OSError, ValueError, IndexError):
            continue
        if pgid != agentd:
            out.append((pid, comm))
    return out
