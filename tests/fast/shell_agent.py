"""A started shell agent for the fast tier's tests that need a real one (imported as a fixture)."""

from __future__ import annotations

import time

import pytest

from deployments.sandbox.agent_home import AgentHome
from deployments.sandbox.local import LocalRunner
from steps.agent import AgentControl


@pytest.fixture
def serving_home(tmp_path):
    """A started shell agent (the sandbox's, on this machine, no sshd) whose mgragent serves on its socket; stopped
    afterwards."""
    home = AgentHome(tmp_path / "ocp_agent").install()
    home.set_delays(wait_seconds=2)
    agent = AgentControl(LocalRunner(), str(home.path), lambda line: None)
    try:
        assert LocalRunner().run(f"{home.ctl} start", deadline=time.monotonic() + 20).ok
        agent.wait_until_serving(time.monotonic() + 20)
        yield home
    finally:
        home.terminate()
