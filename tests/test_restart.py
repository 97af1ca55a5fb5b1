"""End to end: the flow restarts real (sandbox) agents over real SSH, recorded in a real store, run by Prefect."""

from __future__ import annotations

import json
import time

import pytest

from conftest import cli

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


class TestFailures:
    def test_an_agent_that_never_stops_fails_its_stop_within_the_deadline(self, sandbox, home):
        """stop hangs on one host: its Stop FAILED in ~its timeout, output logged, later nodes PENDING, exit 1."""
        stuck = sandbox.host(1002)
        stuck.set_fault("stop_hang")
        result = cli("run", "--inventory", str(sandbox.inventory_path), "--host-ids", "1001,1002,1003",
                     "--timeout", "stop_all=6", "--json")
        assert result.returncode == 1, result.stderr
        instance = json.loads(result.stdout)
        assert instance["status"] == "FAILED"
        stop = by_name(instance, 1)["Stop all OCP agent processes"]
        assert stop["status"] == "FAILED" and stop["timeout"] == 6
        later = [s for s in instance["subtasks"] if s["name"] in ("Start all OCP agent processes", "Finish OCP agent operation")]
        assert {s["status"] for s in later} == {"PENDING"}
        from flows.store import TaskStore

        with TaskStore() as store:
            record = store.load(instance["id"])
            log = store.log(stop["id"])
            row = record.subtask(stop["id"])
        from datetime import datetime

        seconds = (datetime.fromisoformat(row["finish_time"]) - datetime.fromisoformat(row["start_time"])).total_seconds()
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

        with TaskStore() as store:
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

        with TaskStore() as store:
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
