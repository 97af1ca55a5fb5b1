"""End to end: the flow restarts real (sandbox) agents over real SSH, recorded in a real store, run by Prefect."""

from __future__ import annotations

import json
import time

import pytest
from conftest import cli

from flows.settings import Settings

pytestmark = pytest.mark.usefixtures("prefect_api")


def pgid(pid: int) -> int | None:
    """The process group of a local process (the sandbox hosts share our kernel)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


def by_name(instance: dict, host_index: int | None = None) -> dict[str, dict]:
    """The subtasks of one host (parallelIdx) keyed by step name."""
    return {s["name"]: s for s in instance["subtasks"] if host_index is None or s["parallelIdx"] == host_index}


class TestRunThroughTheCLI:
    def test_three_hosts_restart_and_status_agrees(self, sandbox, home):
        """run: every subtask SUCCESSFUL, every agent process has a new pid; status in a new process agrees."""
        before = {h.id: h.agent_pids() for h in sandbox.hosts}
        assert all(all(before[h].values()) for h in before), before
        started = time.monotonic()
        result = cli("run", "--inventory", str(sandbox.inventory_path), "--host-ids", "1001,1002,1003", "--json")
        took = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        instance = json.loads(result.stdout)
        assert instance["status"] == "SUCCESSFUL"
        assert len(instance["subtasks"]) == 19
        assert {s["status"] for s in instance["subtasks"]} == {"SUCCESSFUL"}
        for host in sandbox.hosts:
            after = host.agent_pids()
            assert all(after.values()), (host.id, after)
            assert all(after[name] != before[host.id][name] for name in after), (host.id, before[host.id], after)
        status = cli("status", str(instance["id"]), "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout) == instance
        print(f"3-host run through the CLI: {took:.1f} s")

    def test_human_output_is_a_table_and_a_verdict(self, sandbox, home):
        """Without --json: a table of subtasks and a final line naming the task and its status."""
        result = cli("run", "--inventory", str(sandbox.inventory_path), "--host-ids", "1002")
        assert result.returncode == 0, result.stderr
        assert "Stop all OCP agent" in result.stdout
        assert result.stdout.strip().splitlines()[-1].startswith("task ") and "SUCCESSFUL" in result.stdout


class TestAFailedRunSaysWhy:
    def test_the_report_shows_each_failed_subtasks_last_lines_and_stderr_only_ours(self, sandbox, home, monkeypatch):
        """A FAILED `run` (no --verbose): stdout ends with the failed subtask's last log lines and what to run next;
        stderr has our progress only, none of Prefect's lines; `log` prints the subtask's whole log (#20)."""
        monkeypatch.delenv("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", raising=False)  # as a user's shell has it
        sandbox.hosts[1].set_fault("start_fail")
        result = cli("run", "--inventory", str(sandbox.inventory_path), "--host-ids", "1001,1002")
        assert result.returncode == 1, result.stderr
        out = result.stdout
        assert "FAILED subtask 11 Start all OCP agent processes @ host 1002, its last log lines:" in out
        assert "agentd_exited_quickly" in out.split("its last log lines:")[1]
        assert "Next: retry" in out and "`ocp-restart rollback 1`" in out
        for prefects_own in ("| ERROR", "NotReady", "NoneType", "Finished in state", "Flow run '"):
            assert prefects_own not in result.stderr, result.stderr
        whole = cli("log", "1", "11")
        assert whole.returncode == 0 and "agentd_exited_quickly" in whole.stdout, whole.stderr
        failed = cli("log", "1", "--failed")
        assert failed.stdout.count("== subtask ") == 1 and "[FAILED]" in failed.stdout
        assert cli("log", "1", "99").returncode == 2


class TestFailures:
    def test_an_agent_that_never_stops_fails_its_stop_within_the_deadline(self, sandbox, home):
        """stop hangs on one host: its Stop FAILED in ~its timeout, output logged, later nodes PENDING, exit 1."""
        stuck = sandbox.host(1002)
        stuck.set_fault("stop_hang")
        result = cli(
            "run",
            "--inventory",
            str(sandbox.inventory_path),
            "--host-ids",
            "1001,1002,1003",
            "--timeout",
            "stop_all=6",
            "--json",
        )
        assert result.returncode == 1, result.stderr
        instance = json.loads(result.stdout)
        assert instance["status"] == "FAILED"
        stop = by_name(instance, 1)["Stop all OCP agent processes"]
        assert stop["status"] == "FAILED" and stop["timeout"] == 6
        later = [
            s
            for s in instance["subtasks"]
            if s["name"] in ("Start all OCP agent processes", "Finish OCP agent operation")
        ]
        assert {s["status"] for s in later} == {"PENDING"}
        from flows.store import TaskStore

        with TaskStore(Settings().store_url) as store:
            record = store.load(instance["id"])
            log = store.log(stop["id"])
            row = record.subtask(stop["id"])
        from datetime import datetime

        seconds = (datetime.fromisoformat(row.finish_time) - datetime.fromisoformat(row.start_time)).total_seconds()
        assert seconds < 6 + 3, seconds  # its deadline, plus the kill of the remote process group
        assert log.startswith("############{EXECUTE}{")
        assert "stopping ocp_agentd" in log  # the agent's own output
        assert "did not finish within" in log and "killed its process group" in log
        # The hung `ocp_agentctl stop` was killed on the host: what is left is the agent's own process group.
        time.sleep(0.5)
        agentd = stuck.agent_pids()["ocp_agentd"]
        assert agentd, "the agent never stopped, so it must still run"
        strays = [(pid, comm) for pid, comm in stuck.processes() if pgid(pid) != agentd]
        assert strays == [], strays

    def test_a_changed_host_key_fails_prepare_and_runs_nothing(self, sandbox, home):
        """A host key that does not match known_hosts: Prepare FAILED naming the host; its agent untouched."""
        host = sandbox.host(1003)
        host.replace_host_key()
        before = host.agent_pids()
        result = cli("run", "--inventory", str(sandbox.inventory_path), "--host-ids", "1001,1003", "--json")
        assert result.returncode == 1
        instance = json.loads(result.stdout)
        prepare = by_name(instance, 1)["Prepare restart OCP agent"]
        assert prepare["status"] == "FAILED"
        from flows.store import TaskStore

        with TaskStore(Settings().store_url) as store:
            log = store.log(prepare["id"])
        assert "HOST KEY CHANGED" in log and host.name in log and "nothing was executed" in log
        assert "$ " not in log  # no command was sent
        assert host.agent_pids() == before


class TestBadInput:
    def test_unknown_host_id_runs_nothing(self, sandbox, home):
        """An id not in the inventory: exit 2, the id named, no task recorded."""
        before = {h.id: h.agent_pids() for h in sandbox.hosts}
        result = cli("run", "--inventory", str(sandbox.inventory_path), "--host-ids", "1001,4242")
        assert result.returncode == 2
        assert "<4242>" in result.stderr and str(sandbox.inventory_path) in result.stderr
        from flows.store import TaskStore

        with TaskStore(Settings().store_url) as store:
            assert store.task_ids() == ([], 0)
        assert {h.id: h.agent_pids() for h in sandbox.hosts} == before

    def test_malformed_inventory_is_named(self, tmp_path, home):
        """A bad inventory: exit 2 with the file, the host and the field."""
        bad = tmp_path / "hosts.toml"
        bad.write_text('[[hosts]]\nid = 1\nname = "a"\naddress = "127.0.0.2"\nssh_port = 0\n')
        result = cli("run", "--inventory", str(bad), "--host-ids", "1")
        assert result.returncode == 2
        assert str(bad) in result.stderr and "host #1 (id=1)" in result.stderr and "ssh_port" in result.stderr

    def test_status_of_an_unknown_task(self, home):
        """status for a task that does not exist: exit 2 and OCP's message."""
        result = cli("status", "987654")
        assert result.returncode == 2 and "The task 987654 does not exist" in result.stderr


class TestPythonEntryPoint:
    def test_the_flow_function_returns_the_task_instance(self, sandbox, home):
        """batch_restart_agents(...) called from Python returns OCP's task instance."""
        from flows.restart import batch_restart_agents

        instance = batch_restart_agents(host_ids=[1001], inventory=str(sandbox.inventory_path))
        assert instance["status"] == "SUCCESSFUL" and instance["type"] == "MANUAL"
        assert instance["context"]["listMap"] == {"host_ids": ["1001"]}
        assert len(instance["subtasks"]) == 9

    def test_a_failed_task_raises_task_failed_holding_the_instance(self, sandbox, home):
        """Called from Python, a FAILED task raises TaskFailed (so Prefect marks the run Failed); .task is the
        instance, and restart_agents returns it instead."""
        from flows.options import RestartOptions
        from flows.prefect_run import TaskFailed
        from flows.restart import batch_restart_agents

        sandbox.host(1002).set_fault("start_fail")
        with pytest.raises(TaskFailed, match="host 1002") as failed:
            batch_restart_agents(
                host_ids=[1002],
                inventory=str(sandbox.inventory_path),
                options=RestartOptions(timeouts={"start_all": 5}),
            )
        assert failed.value.task["status"] == "FAILED"


def run_in_process(sandbox, host_ids, inventory=None, **timeouts):
    """The flow called from Python, with stage timeouts overridden; returns (instance, {subtask id: log})."""
    from flows.options import RestartOptions
    from flows.restart import restart_agents
    from flows.store import TaskStore

    instance = restart_agents(
        host_ids=host_ids, inventory=str(inventory or sandbox.inventory_path), options=RestartOptions(timeouts=timeouts)
    )
    with TaskStore(Settings().store_url) as store:
        logs = {s["id"]: store.log(s["id"]) for s in instance["subtasks"]}
    return instance, logs


def assert_stopped_after(instance, host_index: int, failed_step: str) -> None:
    """``failed_step`` FAILED on that host; everything after it, on every host, is still PENDING."""
    names = [
        "Prepare restart OCP agent",
        "Restart pos proxy",
        "Stop all OCP agent processes",
        "Start all OCP agent processes",
        "Finish OCP agent operation",
    ]
    assert instance["status"] == "FAILED"
    assert by_name(instance, host_index)[failed_step]["status"] == "FAILED"
    later = names[names.index(failed_step) + 1 :]
    assert {s["status"] for s in instance["subtasks"] if s["name"] in later} <= {"PENDING"}


class TestUnreachableAndMisconfiguredHosts:
    def test_a_host_that_is_down_fails_prepare_fast(self, sandbox, home):
        """sshd gone: Prepare FAILED with 'cannot connect' naming the host; the other hosts' agents untouched."""
        sandbox.host(1002).down()
        others = {h: sandbox.host(h).agent_pids() for h in (1001, 1003)}
        started = time.monotonic()
        instance, logs = run_in_process(sandbox, [1001, 1002, 1003])
        assert time.monotonic() - started < 20
        assert_stopped_after(instance, 1, "Prepare restart OCP agent")
        log = logs[by_name(instance, 1)["Prepare restart OCP agent"]["id"]]
        assert "cannot connect" in log and "sandbox-1002" in log
        assert {h: sandbox.host(h).agent_pids() for h in (1001, 1003)} == others

    def test_a_frozen_host_fails_prepare_at_its_deadline(self, sandbox, home):
        """A host that accepts TCP but never answers: Prepare FAILED when its (3 s) timeout passes."""
        sandbox.host(1001).down(freeze=True)
        started = time.monotonic()
        instance, logs = run_in_process(sandbox, [1001], prepare=3)
        assert time.monotonic() - started < 15
        assert_stopped_after(instance, 0, "Prepare restart OCP agent")
        assert "sandbox-1001" in logs[by_name(instance, 0)["Prepare restart OCP agent"]["id"]]

    def test_a_missing_key_file_fails_prepare_with_its_path(self, sandbox, home, tmp_path):
        """key_file that does not exist: Prepare FAILED naming the file; nothing ran."""
        inventory = tmp_path / "hosts.toml"
        inventory.write_text(
            sandbox.inventory_path.read_text().replace(str(sandbox.key_file), "/nonexistent/id_ed25519")
        )
        before = sandbox.host(1001).agent_pids()
        instance, logs = run_in_process(sandbox, [1001], inventory=inventory)
        assert_stopped_after(instance, 0, "Prepare restart OCP agent")
        assert "/nonexistent/id_ed25519 not found" in logs[by_name(instance, 0)["Prepare restart OCP agent"]["id"]]
        assert sandbox.host(1001).agent_pids() == before


class TestAgentFaults:
    def test_a_start_that_fails_is_reported_with_the_agents_error(self, sandbox, home):
        """start_fail: Start FAILED with the agent's own error; Finish PENDING; the log says the agent is down."""
        sandbox.host(1003).set_fault("start_fail")
        instance, logs = run_in_process(sandbox, [1001, 1003])
        assert_stopped_after(instance, 1, "Start all OCP agent processes")
        log = logs[by_name(instance, 1)["Start all OCP agent processes"]["id"]]
        assert "agentd_exited_quickly" in log
        assert sandbox.host(1003).agent_pids()["ocp_agentd"] is None

    def test_services_that_ignore_term_are_killed(self, sandbox, home):
        """Leftovers after a failed `stop` get SIGTERM then SIGKILL; the restart then succeeds with new pids."""
        host = sandbox.host(1001)
        host.set_fault("service_ignore_term")
        before = host.agent_pids()
        instance, logs = run_in_process(sandbox, [1001], stop_all=40)
        assert instance["status"] == "SUCCESSFUL", logs
        log = logs[by_name(instance, 0)["Stop all OCP agent processes"]["id"]]
        assert "wait_for_exit_timeout" in log and "sending SIGKILL" in log
        after = host.agent_pids()
        assert all(after.values()) and all(after[n] != before[n] for n in after)
