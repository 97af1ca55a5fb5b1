"""End to end (#20 point 6): agent versions over real sshd — Prepare reads each host's, a mixed-version batch says
so (OCP's alert host_agent_version_not_same) in its Wait node's log and the CLI's summary, and the host's agent
(``ocp-restart agent``, GET .../agent) shows its version."""

from __future__ import annotations

import json

import pytest
from conftest import cli

pytestmark = pytest.mark.usefixtures("prefect_api")

OLD = "4.1.0-20221230"


def test_a_mixed_version_batch_says_so_and_each_host_shows_its_version(box, home):
    """Two hosts at the sandbox's version, one at an older one: the restart succeeds; the summary and the Wait
    node after Prepare name the alert and which hosts run which version; each Prepare logs its host's."""
    usual, other, odd = box.hosts
    odd.set_version(OLD)
    inventory = ["--inventory", str(box.inventory_path)]
    done = cli("run", *inventory, "--host-ids", f"{usual.id},{other.id},{odd.id}")
    assert done.returncode == 0, done.stdout + done.stderr
    alert = (
        "host_agent_version_not_same: the hosts run different agent versions: "
        f"4.2.1-sandbox on host(s) {usual.id}, {other.id}; {OLD} on host(s) {odd.id}"
    )
    assert alert in done.stdout, done.stdout
    task_id = done.stdout.strip().splitlines()[-1].split()[1]
    logs = cli("log", task_id)
    assert logs.returncode == 0, logs.stderr
    sections = logs.stdout.split("== subtask ")
    wait = next(s for s in sections if " Wait node" in s.partition("\n")[0])  # the first: after the Prepares
    assert alert in wait, wait
    assert f"agent version {OLD} (ocp_agentctl version)" in logs.stdout
    shown = cli("agent", str(odd.id), *inventory, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["version"] == OLD
    same = cli("run", *inventory, "--host-ids", f"{usual.id},{other.id}")
    assert same.returncode == 0 and "host_agent_version_not_same" not in same.stdout + same.stderr
