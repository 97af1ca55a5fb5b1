"""End to end (issue #20 point 2): a restart that failed on hosts in each field state can be retried to SUCCESSFUL,
and rolled back to an agent that runs and serves, over real SSH.

Each host is put in its state (``test_field_states.States``: stopped, agentd killed with its services orphaned, a
stale pid file naming a live stranger, a duplicate service, a service stopped), then agentd is made unable to start
(sandbox fault ``agentd_fails``), so the restart FAILS at Start all on every host with the agent stopped. The cause
is then cleared, as an operator would, and the task is retried or rolled back. One module-scoped sandbox, one host
per (operation, state), one task per operation.
"""

from __future__ import annotations

import itertools

import pytest
from test_field_states import NAMES, STAGES, States, agent_processes, restart, wait

from deployments.sandbox import Sandbox
from flows.settings import Settings

pytestmark = pytest.mark.usefixtures("prefect_api")

STATES = ("stopped", "agentd-killed", "stale-pid-file", "duplicate-service", "service-stopped")
OPERATIONS = ("retry", "rollback")
PREPARE, POS_PROXY, STOP, START, FINISH = STAGES
WHY = "cannot open log/agentd.log.1: no space left on device"


@pytest.fixture(scope="module")
def hosts_in_states():
    """A sandbox host per (operation, state), each in its state and with agentd unable to start; undone after."""
    with Sandbox(len(OPERATIONS) * len(STATES)) as box:
        if box.login.is_self:
            pytest.skip("needs root: the stranger must run as the agent's user")
        for h in box.hosts:
            h.set_delays(wait_seconds=2)
        for h in box.hosts:  # each mgragent serving before any state is made
            wait(lambda h=h: (h.home.run_dir / f"ocp_mgragent.{h.agent_pids()['ocp_mgragent']}.sock").exists())
        hosts = dict(zip(itertools.product(OPERATIONS, STATES), box.hosts, strict=True))
        setup = States(box)
        try:
            strangers = {key: setup.apply(key[1], host) for key, host in hosts.items()}
            before = {key: agent_processes(host) for key, host in hosts.items()}
            for h in box.hosts:
                h.set_fault("agentd_fails", WHY)
            yield box, hosts, strangers, before
        finally:
            setup.close()


def serving(host) -> bool:
    """The host's agent runs as exactly one of each process, and mgragent's socket is there."""
    pids = host.agent_pids()
    if sorted(name for _, name in agent_processes(host)) != sorted(NAMES) or not all(pids.values()):
        return False
    return (host.home.run_dir / f"ocp_mgragent.{pids['ocp_mgragent']}.sock").exists()


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_failed_restart_from_each_field_state_is_retried_or_rolled_back(hosts_in_states, home, operation):
    """Start all FAILS on every host (agentd cannot start, its reason in the log); with the cause cleared, a retry
    ends SUCCESSFUL with one new agent per host, and a rollback ends with one agent running and serving per host;
    a stranger named by a stale pid file is never signalled."""
    from flows.actions import ACTIONS
    from flows.options import RestartOptions
    from flows.restart import restart_agents
    from flows.store import TaskStore

    box, hosts, strangers, before = hosts_in_states
    chosen = [hosts[(operation, state)] for state in STATES]
    first, logs = restart(box, chosen)
    assert first["status"] == "FAILED", first
    starts = [s for s in first["subtasks"] if s["name"] == START]
    assert [s["status"] for s in starts] == ["FAILED"] * len(STATES), starts
    assert all(WHY in logs[s["id"]] for s in starts)
    for host in chosen:
        host.clear_fault("agentd_fails")
    with TaskStore(Settings().store_url) as store:
        ACTIONS[operation].apply(store, first["id"])
    final = restart_agents(
        task_id=first["id"],
        host_ids=[h.id for h in chosen],
        inventory=str(box.inventory_path),
        options=RestartOptions(timeouts={"stop_all": 8, "start_all": 8}),
    )
    assert final["status"] == "SUCCESSFUL" and final["operation"] == operation.upper(), final
    with TaskStore(Settings().store_url) as store:
        rolled = [store.log(s["id"]) for s in final["subtasks"] if s["name"] == START]
    failures = []
    for index, state in enumerate(STATES):
        host, key = chosen[index], (operation, state)
        mine = {s["name"]: s["status"] for s in final["subtasks"] if s["parallelIdx"] == index}
        try:
            if operation == "retry":
                assert set(mine.values()) == {"SUCCESSFUL"}, mine
            else:
                assert set(mine.values()) == {"PENDING"}, mine  # OCP's rolled-back subtasks
                assert "serves (pid" in rolled[index], rolled[index]  # rollback waited until mgragent answered
            assert serving(host), (host.agent_pids(), agent_processes(host))
            assert not {pid for pid, _ in before[key]} & {pid for pid, _ in agent_processes(host)}, "an old pid"
            if strangers[key] is not None:
                stat = open(f"/proc/{strangers[key]}/stat").read()
                assert stat.rpartition(")")[2].split()[0] != "Z", "the stranger was signalled"
        except AssertionError as exc:
            failures.append(f"{state}: {exc}")
    assert not failures, "\n".join(failures)
