"""Shared fixtures: an isolated home, one real Prefect server for the session, sandbox hosts."""

from __future__ import annotations

import os
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
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("OCP_RESTART_STORE_URL", None)
os.environ.pop("OCP_RESTART_INVENTORY", None)

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


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


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``ocp-restart`` in a fresh process, as a user would."""
    exe = shutil.which("ocp-restart", path=str(Path(sys.executable).parent)) or shutil.which("ocp-restart")
    command = [exe, *args] if exe else [sys.executable, "-m", "deployments.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
