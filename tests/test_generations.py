"""End to end (issue #20): both agent generations over real SSH — the older (Python) agent from each state it meets,
and a mixed batch (either generation, declared or detected) in one task with the seed's DAG unchanged."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from conftest import cli

from deployments.sandbox import Sandbox
from flows.settings import Settings

pytestmark = pytest.mark.usefixtures("prefect_api")

V3 = ("ocp_agentd", "pos_proxy", "ocp_exporter", "node_exporter", "obstat2", "ob_logtailer", "ob_cleaner")
V4 = ("ocp_agentd", "ocp_mgragent", "ocp_monagent")
STAGES = (
    "Prepare restart OCP agent",
    "Restart pos proxy",
    "Stop all OCP agent processes",
    "Start all OCP agent processes",
    "Finish OCP agent operation",
)
# host id -> (its generation setting in the sandbox, the state it is put in)
HOSTS = {
    1001: ("3", "running"),
    1002: ("3", "stopped"),
    1003: ("3", "pos_proxy-killed"),
    1004: ("3", "stale-pid-file"),
    1005: ("3", "agentd-killed"),
    1006: ("3", "disk-full"),
    1007: ("4", "running"),
    1008: ("auto:3", "running"),
    1009: ("auto:4", "running"),
    1010: ("3", "pos_proxy-mute"),
    1011: ("3", "cli-hangs"),
    1012: ("3", "duplicate-exporter"),
    1013: ("3", "start-fails"),  # retried once the cause is cleared
    1014: ("3", "start-fails"),  # rolled back once the cause is cleared
}
# host id -> (the stage that FAILS, a phrase of its log): states a restart cannot fix on the older agent
FAILING = {
    1006: ("Prepare restart OCP agent", "the agent home's filesystem is full: 1 MB free (simulated)"),
    1010: ("Restart pos proxy", "pos_proxy does not listen within 2"),
    1011: ("Stop all OCP agent processes", "did not finish within"),
}


def wait(check, seconds: float = 10.0):
    give_up = time.monotonic() + seconds
    while not (value := check()):
        assert time.monotonic() < give_up, "not within time"
        time.sleep(0.05)
    return value


def agent_processes(host) -> set[tuple[int, str]]:
    names = V3 if host.generation == "3" else V4
    return {(pid, name) for pid, name in host.processes() if name in names}


@pytest.fixture(scope="module")
def hosts():
    """A sandbox host per HOSTS entry, each in its state: (box, the processes before, the strangers)."""
    generations = {host_id: setting for host_id, (setting, _) in HOSTS.items()}
    strangers: list[subprocess.Popen] = []
    with Sandbox(len(HOSTS), generations=generations) as box:
        login = box.login
        as_user = {} if login.is_self else {"user": login.uid, "group": login.gid, "extra_groups": []}
        for host_id, (_, state) in HOSTS.items():
            h = box.host(host_id)
            if state == "stopped":
                assert h.agentctl("stop", "ocp_agent").returncode == 0
            elif state == "pos_proxy-killed":
                os.kill(h.agent_pids()["pos_proxy"], signal.SIGKILL)
                wait(lambda h=h: h.agent_pids()["pos_proxy"] is None)
            elif state == "stale-pid-file":
                assert h.agentctl("stop", "ocp_agent").returncode == 0
                stranger = subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL, **as_user)
                strangers.append(stranger)
                (h.home.run_dir / "ocp_agentd.pid").write_text(f"{stranger.pid}\n")
            elif state == "agentd-killed":
                os.kill(h.agent_pids()["ocp_agentd"], signal.SIGKILL)
                wait(lambda h=h: h.agent_pids()["ocp_agentd"] is None)
            elif state == "disk-full":
                h.set_fault("free_disk_mb", "1")
            elif state == "pos_proxy-mute":
                h.set_delays(wait_seconds=2)
                h.set_fault("pos_proxy_mute")  # the running pos_proxy listens on; a new one never will
            elif state == "cli-hangs":
                h.set_fault("stop_hang")
            elif state == "start-fails":  # the running agent is unaffected; the next start fails
                h.set_fault("start_fail")
            elif state == "duplicate-exporter":  # a second ocp_exporter beside the one its pid file names
                h.start_duplicate("ocp_exporter")
        before = {host_id: agent_processes(box.host(host_id)) for host_id in HOSTS}
        try:
            yield box, before, strangers
        finally:
            for stranger in strangers:
                stranger.kill()
                stranger.wait()


def restart(box, host_ids: list[int], stop_all: int = 20) -> tuple[dict, dict[int, str]]:
    """One task restarting ``host_ids`` through the flow, in this process; (instance, {subtask id: log})."""
    from flows.options import RestartOptions
    from flows.restart import restart_agents
    from flows.store import TaskStore

    instance = restart_agents(
        host_ids=host_ids,
        inventory=str(box.inventory_path),
        options=RestartOptions(timeouts={"stop_all": stop_all, "start_all": 20}),
    )
    with TaskStore(Settings().store_url) as store:
        logs = {s["id"]: store.log(s["id"]) for s in instance["subtasks"]}
    return instance, logs


def by_host(instance: dict, logs: dict[int, str], index: int) -> dict[str, tuple[str, str]]:
    """stage -> (status, log) of the host at ``index``."""
    return {s["name"]: (s["status"], logs[s["id"]]) for s in instance["subtasks"] if s["parallelIdx"] == index}


def all_new(host, before: set[tuple[int, str]]) -> None:
    names = V3 if host.generation == "3" else V4
    after = agent_processes(host)
    assert sorted(name for _, name in after) == sorted(names), after
    assert not {pid for pid, _ in before} & {pid for pid, _ in after}, (before, after)


def test_the_older_agent_from_each_state_gets_all_new_processes(hosts, home):
    """#20: running, stopped, a killed pos_proxy, a stale ocp_agentd.pid naming a live stranger, ocp_agentd killed
    (its processes orphaned), a duplicate ocp_exporter: one task, every subtask SUCCESSFUL, every process of the
    older agent new (one of each), pos_proxy restarted by ocp_agent_ctl.py, the stranger untouched."""
    box, before, strangers = hosts
    chosen = [1001, 1002, 1003, 1004, 1005, 1012]
    instance, logs = restart(box, chosen)
    assert instance["status"] == "SUCCESSFUL", [(s["name"], s["status"]) for s in instance["subtasks"]]
    for index, host_id in enumerate(chosen):
        stages = by_host(instance, logs, index)
        assert "agent generation 3 (Python), version 3.1.2-20210812221645" in stages[STAGES[0]][1]
        all_new(box.host(host_id), before[host_id])
    running = by_host(instance, logs, 0)
    assert "python ocp_agent_ctl.py restart pos_proxy" in running[STAGES[1]][1]
    assert "pos_proxy restarted: pid" in running[STAGES[1]][1]
    assert "python ocp_agent_ctl.py stop ocp_agent" in running[STAGES[2]][1]
    assert "python ocp_agent_ctl.py start ocp_agent" in running[STAGES[3]][1]
    assert "pos_proxy listens on" in running[STAGES[4]][1]
    stale = by_host(instance, logs, 3)
    assert "is a live process that is not ocp_agentd of this agent home" in stale[STAGES[2]][1]
    duplicate = by_host(instance, logs, 5)
    assert "agent processes are still running: ocp_exporter (pid" in duplicate[STAGES[2]][1]
    stat = open(f"/proc/{strangers[0].pid}/stat").read()
    assert stat.rpartition(")")[2].split()[0] != "Z", "the stranger was signalled"


@pytest.mark.parametrize("host_id", sorted(FAILING))
def test_a_state_the_older_agent_cannot_be_restarted_from_fails_where_expected(hosts, home, host_id):
    """#20: a full disk fails Prepare with nothing touched; a pos_proxy that never listens fails Restart pos proxy
    with the control script's reason; a hanging control script fails Stop all at its deadline."""
    box, before, _ = hosts
    stage, phrase = FAILING[host_id]
    instance, logs = restart(box, [host_id], stop_all=8)
    stages = by_host(instance, logs, 0)
    done = STAGES[: STAGES.index(stage)]
    assert [stages[name][0] for name in done] == ["SUCCESSFUL"] * len(done), stages
    assert stages[stage][0] == "FAILED" and phrase in stages[stage][1], stages[stage][1]
    if stage == STAGES[0]:
        assert agent_processes(box.host(host_id)) == before[host_id], "a host that failed Prepare was touched"


def test_a_mixed_batch_restarts_in_one_task_with_the_seeds_dag(hosts, home):
    """#20: the older generation declared, the current one declared, each detected (auto): one task, the seed's DAG
    (5N + 4 nodes, the same names), SUCCESSFUL, every process new on every host."""
    box, _, _ = hosts
    chosen = [1001, 1007, 1008, 1009]
    now = {host_id: agent_processes(box.host(host_id)) for host_id in chosen}
    instance, logs = restart(box, chosen)
    assert instance["status"] == "SUCCESSFUL", [(s["name"], s["status"]) for s in instance["subtasks"]]
    assert len(instance["subtasks"]) == 5 * len(chosen) + 4
    assert {s["name"] for s in instance["subtasks"]} == {*STAGES, "Wait node"}
    for host_id in chosen:
        all_new(box.host(host_id), now[host_id])
    assert "agent generation 3: detected" in by_host(instance, logs, 2)[STAGES[0]][1]
    assert "agent generation 4: detected" in by_host(instance, logs, 3)[STAGES[0]][1]
    assert "ocp_agentctl service stop ocp_mgragent" in by_host(instance, logs, 1)[STAGES[1]][1].replace("'", "")
    assert "python ocp_agent_ctl.py restart pos_proxy" in by_host(instance, logs, 2)[STAGES[1]][1]


def test_the_older_agents_view_shows_its_version_and_processes(hosts, home):
    """#20: `ocp-restart agent` on a host of the older generation shows its version (`ocp_agent_ctl.py version`)
    and its processes by alias, pos_proxy with its port."""
    box, _, _ = hosts
    shown = cli("agent", "1001", "--inventory", str(box.inventory_path), "--json")
    assert shown.returncode == 0, shown.stderr
    agent = json.loads(shown.stdout)
    assert agent["version"] == "3.1.2-20210812221645", agent
    aliases = {p["alias"]: p for p in agent["processes"]}
    assert set(V3) <= set(aliases), aliases


@pytest.mark.parametrize("operation, host_id", [("retry", 1013), ("rollback", 1014)])
def test_a_failed_restart_of_the_older_agent_is_retried_or_rolled_back(hosts, home, operation, host_id):
    """#20 point 2 on the older generation: Start all FAILS (ocp_agentd cannot start); with the cause cleared, a
    retry ends SUCCESSFUL with every process new, a rollback with the agent healthy again (subtasks PENDING)."""
    from flows.actions import ACTIONS
    from flows.options import RestartOptions
    from flows.restart import restart_agents
    from flows.store import TaskStore

    box, before, _ = hosts
    host = box.host(host_id)
    first, logs = restart(box, [host_id])
    assert first["status"] == "FAILED", first
    assert by_host(first, logs, 0)[STAGES[3]][0] == "FAILED"
    host.clear_fault("start_fail")
    with TaskStore(Settings().store_url) as store:
        ACTIONS[operation].apply(store, first["id"])
    final = restart_agents(
        task_id=first["id"],
        host_ids=[host_id],
        inventory=str(box.inventory_path),
        options=RestartOptions(timeouts={"stop_all": 20, "start_all": 20}),
    )
    assert final["status"] == "SUCCESSFUL" and final["operation"] == operation.upper(), final
    statuses = {s["status"] for s in final["subtasks"] if s["parallelIdx"] == 0}
    assert statuses == ({"SUCCESSFUL"} if operation == "retry" else {"PENDING"}), statuses
    wait(lambda: {name for _, name in agent_processes(host)} == set(V3))
    all_new(host, before[host_id])
