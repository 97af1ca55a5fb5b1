"""Both agent generations (#20): the inventory key, detection in Prepare's one round trip, and what each node sends on
each generation — on the FakeAgent (current), FakeRunner answers, and the sandbox's older agent run locally."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from deployments.sandbox import sshd
from deployments.sandbox.agent_home_v3 import AgentHomeV3
from deployments.sandbox.fake_agent import FakeAgent
from deployments.sandbox.local import LocalRunner
from steps import agent as agent_module
from steps import agent_v3, nodes, work
from steps.agent import MARK, PREPARE_PROBE
from steps.errors import AgentError, InventoryError
from steps.inventory import Host, parse_inventory
from steps.testing import FakeRunner, FakeStep, result


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    """Status polls every 10 ms here (0.1 s on real hosts)."""
    monkeypatch.setattr(agent_module, "POLL_SECONDS", 0.01)
    monkeypatch.setattr(agent_v3, "POLL_SECONDS", 0.01)


def inventory(**host) -> dict:
    return {"hosts": [{"id": 7, "name": "h7", "address": "127.0.0.1", **host}]}


class TestInventoryKey:
    def test_defaults_to_auto_and_takes_each_generation(self):
        """#20: agent_generation is "auto" unless set; "4", "3" (and TOML integers 4, 3) are taken."""
        assert parse_inventory(inventory(), "x").hosts[7].agent_generation == "auto"
        for value, expected in (("4", "4"), ("3", "3"), (3, "3"), (4, "4"), ("auto", "auto")):
            assert parse_inventory(inventory(agent_generation=value), "x").hosts[7].agent_generation == expected

    def test_defaults_may_set_it(self):
        """#20: [defaults] may set the generation of every host."""
        raw = {"defaults": {"agent_generation": "3"}, **inventory()}
        assert parse_inventory(raw, "x").hosts[7].agent_generation == "3"

    @pytest.mark.parametrize("value", ["5", "v3", "", True, 3.0])
    def test_a_bad_value_names_the_host_the_value_and_the_allowed_ones(self, value):
        """#20: the error names the file, the host, the field, what it got and what it takes."""
        with pytest.raises(InventoryError) as caught:
            parse_inventory(inventory(agent_generation=value), "hosts.toml")
        message = str(caught.value)
        assert "hosts.toml: host #1 (id=7): field 'agent_generation'" in message
        assert "'auto', '4', '3'" in message and f"got {value!r}" in message


def host(generation: str = "auto", home: str = "/home/admin/ocp_agent") -> Host:
    return Host(id=1, name="h1", address="127.0.0.1", agent_home=home, agent_generation=generation)


V3_PREPARE_ANSWER = (
    "disk 80000000\nmemory 16000000\nwritable yes\nowner admin\n"
    f"{MARK}\nocp_agentd 101 5\npos_proxy 102 6\nocp_exporter 103 6\nnode_exporter 104 6\n"
    'listen LISTEN 0 16 127.0.0.1:62888 0.0.0.0:* users:(("pos_proxy",pid=102,fd=3))\n'
    f"{MARK}\n3.1.2-20210812221645\n"
)


class TestDetection:
    def test_auto_on_the_current_generation_costs_no_extra_round_trip(self):
        """#20: Prepare with auto sends one command on a current-generation host (detection inside it), records no
        generation, and the later nodes speak ocp_agentctl."""
        agent = FakeAgent()
        step = FakeStep.on(agent)
        nodes.prepare(step)
        assert len(agent.commands) == 1 and nodes.DETECT_THEN_PREPARE.parse(agent.commands[0]) is not None
        assert "agent generation 4: detected (bin/ocp_agentctl" in step.log.text
        assert step.pids["before"] == agent.pids() and "generation" not in step.pids
        for run in (nodes.restart_pos_proxy, nodes.stop_all, nodes.start_all, nodes.finish):
            run(FakeStep(step.host, step.connection, pids=step.pids))
        assert ["service", "stop", "ocp_mgragent"] in agent.ctl_calls
        assert not [c for c in agent.commands for script in agent_v3.SCRIPTS if script.parse(c) is not None]

    def test_auto_on_the_older_generation_records_it_for_the_later_nodes(self):
        """#20: the detecting script's `generation 3` answer is read as the older agent's Prepare (version logged,
        pids recorded) and recorded; Restart pos proxy then runs ocp_agent_ctl.py restart pos_proxy."""
        sent: list[str] = []

        def answer(command: str):
            sent.append(command)
            if nodes.DETECT_THEN_PREPARE.parse(command) is not None:
                return result(command, "generation 3\n" + V3_PREPARE_ANSWER)
            if agent_v3.STATUS.parse(command) is not None:
                return result(command, "ocp_agentd 101 5\npos_proxy 102 6\n")
            args = agent_v3.CTL_THEN_STATUS.parse(command)
            assert args is not None and args[1:3] == ["restart", "pos_proxy"], command
            listen = 'listen LISTEN 0 16 127.0.0.1:62888 0.0.0.0:* users:(("pos_proxy",pid=202,fd=3))'
            return result(command, f"pos_proxy started\n\n{MARK}\nocp_agentd 101 5\npos_proxy 202 9\n{listen}\n")

        step = FakeStep(host(), FakeRunner(answer))
        nodes.prepare(step)
        assert len(sent) == 1
        assert step.pids["generation"] == {"generation": 3}
        assert step.pids["before"] == {"ocp_agentd": 101, "pos_proxy": 102, "ocp_exporter": 103, "node_exporter": 104}
        assert "version 3.1.2-20210812221645 (ocp_agent_ctl.py version)" in step.log.text
        later = FakeStep(step.host, step.connection, pids=step.pids)
        nodes.restart_pos_proxy(later)
        assert "pos_proxy restarted: pid 102 -> 202" in later.log.text

    def test_no_agent_of_either_generation_fails_prepare_naming_both(self):
        """#20: an agent home with neither bin/ocp_agentctl nor ocp_agentd.py fails Prepare, saying what it looked
        for."""
        runner = FakeRunner(lambda command: result(command, "generation -\n", exit_status=127))
        with pytest.raises(AgentError, match="neither bin/ocp_agentctl .* nor ocp_agentd.py"):
            nodes.prepare(FakeStep(host(), runner))

    @pytest.mark.parametrize("generation, script", [("4", PREPARE_PROBE), ("3", agent_v3.PREPARE)])
    def test_a_declared_generation_is_not_detected(self, generation, script):
        """#20: agent_generation "4" or "3" sends that generation's Prepare directly."""
        runner = FakeRunner(lambda command: result(command, exit_status=127))
        with pytest.raises(AgentError):
            nodes.prepare(FakeStep(host(generation), runner))
        assert script.parse(runner.commands[0]) is not None

    def test_a_stops_prepare_detects_too(self):
        """#20: a stop's Prepare with auto detects the generation in its one status round trip."""
        agent = FakeAgent()
        step = FakeStep.on(agent)
        nodes.prepare_stop(step)
        assert len(agent.commands) == 1 and step.pids["before"] == agent.pids()


@pytest.fixture
def older(tmp_path):
    """The sandbox's older-generation agent in a temp home, started, driven by a LocalRunner (real processes)."""
    home = AgentHomeV3(tmp_path / "ocp_agent", port=sshd.free_port("127.0.0.1")).install()
    home.set_delays(wait_seconds=3)
    started = home.run_ctl("start", "ocp_agent")
    assert started.returncode == 0, started.stderr
    try:
        yield home
    finally:
        home.terminate()


def on(home: AgentHomeV3, pids: dict, generation: str = "3") -> FakeStep:
    """A step on the local older agent (its commands recorded), sharing ``pids`` with the task's other steps."""
    local = LocalRunner(label="local-v3")
    runner = FakeRunner(lambda command: local.run(command, deadline=time.monotonic() + 20))
    return FakeStep(host(generation, str(home.path)), runner, pids=pids, timeout=20)


def scripts_of(step: FakeStep) -> list[str]:
    """The names of the scripts a step sent (and the control script's arguments, if it ran it)."""
    names = []
    for command in step.connection.commands:  # type: ignore[attr-defined]
        for script in (*agent_v3.SCRIPTS, *nodes.SCRIPTS, agent_module.LIVE, agent_module.SIGNAL):
            args = script.parse(command)
            if args is not None:
                extra = args[1:3] if script is agent_v3.CTL_THEN_STATUS else []
                names.append(" ".join([script.name, *extra]))
    return names


class TestTheOlderGenerationsNodes:
    def test_each_node_uses_the_older_agents_own_tools(self, older):
        """#20: Prepare reads the probe, pids and version; Restart pos proxy runs `ocp_agent_ctl.py restart
        pos_proxy`; Stop all reads identities and runs `stop ocp_agent`, then scans /proc; Start all runs `start
        ocp_agent`; Finish checks health. Every process is new and pos_proxy listens."""
        before, pids = older.pids(), {}
        sent = {}
        for run in (nodes.prepare, nodes.restart_pos_proxy, nodes.stop_all, nodes.start_all, nodes.finish):
            step = on(older, pids)
            run(step)
            sent[run.__name__] = scripts_of(step)
        assert sent == {
            "prepare": ["v3_prepare"],
            "restart_pos_proxy": ["v3_status", "v3_ctl_then_status restart pos_proxy"],
            "stop_all": ["v3_stop", "v3_scan_then_status"],
            "start_all": ["v3_ctl_then_status start ocp_agent"],
            "finish": ["v3_status"],
        }
        after = older.pids()
        assert set(after) == set(agent_v3.PROCESSES) and all(after[n] and after[n] != before[n] for n in after)
        assert pids["before"] == before and pids["after"] == after

    def test_auto_detects_the_older_agent_locally(self, older):
        """#20: auto on a real older agent home: one round trip, generation 3 recorded, the version read."""
        pids: dict = {}
        step = on(older, pids, generation="auto")
        nodes.prepare(step)
        assert scripts_of(step) == ["detect_then_prepare"] and pids["generation"] == {"generation": 3}
        assert "version 3.1.2-20210812221645" in step.log.text

    def test_a_stale_pid_file_is_removed_and_its_process_left_alone(self, older):
        """#20: ocp_agentd.pid naming a live stranger (the control script would think the agent runs): Stop all
        removes it and never signals the stranger; Start all starts a new agent."""
        assert older.run_ctl("stop", "ocp_agent").returncode == 0
        stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            (older.run_dir / "ocp_agentd.pid").write_text(f"{stranger.pid}\n")
            pids: dict = {}
            for run in (nodes.prepare, nodes.restart_pos_proxy, nodes.stop_all, nodes.start_all, nodes.finish):
                step = on(older, pids)
                run(step)
            assert stranger.poll() is None
            assert all(older.pids().values())
        finally:
            stranger.kill()
            stranger.wait()

    def test_a_killed_pos_proxy_is_started_by_restart_pos_proxy(self, older):
        """#20: pos_proxy killed, ocp_agentd alive: Restart pos proxy starts a new one that listens."""
        import os
        import signal

        old = older.pids()["pos_proxy"]
        os.kill(old, signal.SIGKILL)
        pids: dict = {}
        nodes.prepare(on(older, pids))
        step = on(older, pids)
        nodes.restart_pos_proxy(step)
        assert older.pids()["pos_proxy"] not in (None, old)

    def test_rollback_of_stop_all_starts_the_older_agent_again(self, older):
        """#20: rolling back Stop all on the older generation starts it (ocp_agent_ctl.py start ocp_agent)."""
        pids: dict = {}
        nodes.prepare(on(older, pids))
        nodes.stop_all(on(older, pids))
        assert not any(older.pids().values())
        step = on(older, pids)
        nodes.ensure_running(step)
        assert all(older.pids().values()) and "agent runs again" in step.log.text

    def test_a_stop_of_the_older_agent_detects_it_and_leaves_it_stopped(self, older):
        """#20: the stop operation's nodes (Prepare stop with auto, Stop all, Finish stop) on the older agent."""
        pids: dict = {}
        for run in (nodes.prepare_stop, nodes.stop_all, nodes.finish_stop):
            step = on(older, pids, generation="auto")
            run(step)
        assert not any(older.pids().values()) and "stopped: ocp_agentd" in step.log.text

    def test_the_current_generations_step_is_not_sent_to_an_older_home(self, older):
        """#20: declared "4" on an older agent home fails Prepare with the current CLI missing (nothing run)."""
        with pytest.raises(AgentError, match="ocp_agentctl is missing"):
            work.prepare(on(older, {}, generation="4"))


def test_parse_status_reads_pids_stale_files_and_listeners():
    """#20: the older agent's status lines: running processes, stale pid files, pos_proxy's ports, ss missing."""
    status = agent_v3.parse_status(
        "ocp_agentd 1 10\npos_proxy 2 -\nstale ocp_exporter 9\n"
        'listen LISTEN 0 16 0.0.0.0:62888 0.0.0.0:* users:(("pos_proxy",pid=2,fd=3))\n'
    )
    assert status.pids == {"ocp_agentd": 1} and status.stale == (("ocp_exporter", 9),) and status.ports == [62888]
    assert "not running: pos_proxy" in status.problem()
    unknown = agent_v3.parse_status("listen ?\n")
    assert unknown.listeners is None


@pytest.mark.parametrize("generation", ["3", "auto"])
def test_the_agent_view_lists_the_older_agents_processes_by_alias(older, tmp_path, generation):
    """#20: GET .../agent on an older agent's host (declared, or auto: the current CLI missing, the older home
    there) lists ocp_agentd, pos_proxy (its listening port), the exporters and the workers with their pids."""
    from contextlib import contextmanager

    from flows.agent_view import AgentViews
    from flows.store import TaskStore

    @contextmanager
    def connect(host, deadline):
        yield LocalRunner(label="local-v3")

    with TaskStore(f"sqlite:///{tmp_path / 'tasks.db'}") as store:
        agent = AgentViews(connect=connect).agent(host(generation, str(older.path)), store).to_wire()
    shown = {p["alias"]: p for p in agent["processes"]}
    assert list(shown) == list(agent_v3.PROCESSES) and agent["status"] == "AVAILABLE"
    assert {a: p["pid"] for a, p in shown.items()} == older.pids()
    assert shown["pos_proxy"]["ports"] == str(older.port) and shown["node_exporter"]["ports"] == "63000"
    assert shown["pos_proxy"]["logFilePattern"].endswith("/log/pos_proxy.log*")
    assert all(p["status"] == "STARTED" and not p["operable"] for p in shown.values())
