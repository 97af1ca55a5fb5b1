"""The agent contract (tests/agent_contract.py) against the FakeAgent and the sandbox's shell agent run locally.

The shell agent is installed in a temp dir as a sandbox host's is and driven by a LocalRunner: real processes, no
sshd, no root. Tests that wait out the shell agent's own give-up time run on the fake only here; the end-to-end
tier runs them on the shell agent (tests/test_agent_contract_ssh.py).
"""

from __future__ import annotations

import pytest
from agent_contract import (  # noqa: F401  (the test classes run here)
    FakeAgentDriver,
    ShellAgentDriver,
    TestScripts,
    TestServices,
    TestStatus,
    TestStopAndStart,
    TestTheSteps,
)

from deployments.sandbox.agent_home import AgentHome
from deployments.sandbox.local import LocalRunner


@pytest.fixture(params=["fake", "shell"])
def agent(request, tmp_path):
    """A started agent: the FakeAgent, or the shell agent in a fresh home under tmp_path (stopped afterwards)."""
    if request.param == "fake":
        yield FakeAgentDriver()
        return
    if getattr(request.function, "waits_for_the_agent", False):
        pytest.skip("waits out the shell agent's give-up time: run in the end-to-end tier")
    home = AgentHome(tmp_path / "ocp_agent").install()
    home.set_delays(wait_seconds=1)
    driver = ShellAgentDriver(home, LocalRunner(label="local-agent"))
    try:
        yield driver.start()
    finally:
        driver.close()
