"""The agent contract (tests/agent_contract.py) over real SSH, against one sandbox host's shell agent.

End-to-end tier: sshd, the sandbox's login user, our SSHSession. Every test of the contract runs here, those that
wait out the agent's own give-up time (1 s here) included; each starts from a freshly started agent.
"""

from __future__ import annotations

import time

import pytest
from agent_contract import (  # noqa: F401  (the test classes run here)
    ShellAgentDriver,
    TestScripts,
    TestServices,
    TestStatus,
    TestStopAndStart,
    TestTheSteps,
)

from deployments.sandbox import Sandbox
from steps.inventory import load_inventory
from steps.ssh import SSHSession


@pytest.fixture(scope="module")
def host():
    """One sandbox host whose agent gives up after 1 s, and an SSH session to it."""
    with Sandbox(1) as box:
        sandbox_host = box.hosts[0]
        sandbox_host.set_delays(wait_seconds=1)
        with SSHSession(load_inventory(box.inventory_path).hosts[sandbox_host.id]) as session:
            session.connect(deadline=time.monotonic() + 30)
            yield box, sandbox_host, session


@pytest.fixture
def agent(host):
    """The host's agent, restarted from scratch for this test: no process, pid file or fault left from before."""
    box, sandbox_host, session = host
    login = box.login
    uid, gid = (None, None) if login.is_self else (login.uid, login.gid)
    driver = ShellAgentDriver(sandbox_host.home, session, uid=uid, gid=gid)
    driver.close()  # whatever an earlier test left running
    for path in [
        *(sandbox_host.agent_home / "faults").iterdir(),
        *sandbox_host.home.run_dir.glob("*.pid"),
        *sandbox_host.home.run_dir.glob("*.disabled"),
    ]:
        path.unlink()
    (sandbox_host.agent_home / "conf" / "version").unlink(missing_ok=True)  # a version an earlier test set
    try:
        yield driver.start()
    finally:
        driver.close()
