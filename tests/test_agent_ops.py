"""OCP's other agent operations (issue #21): Restart OCP agent, Stop OCP agent, Batch stop OCP agent, against
sandbox hosts over real sshd, through the HTTP API, Python and the CLI."""

from __future__ import annotations

import json

import httpx
import pytest
from conftest import ApiServer, cli, wait_for

from deployments.auth import add_user

pytestmark = pytest.mark.usefixtures("prefect_api")

AUTH = ("ops", "ops-pass-123")
STOP_ALL = "Stop all OCP agent processes"


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Sandbox hosts, a task store, and an API server sharing that store."""
    from deployments.sandbox import Sandbox

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("OCP_RESTART_HOME", str(home))
    users = tmp_path / "users.toml"
    add_user(users, AUTH[0], AUTH[1], ["HOST_MANAGER", "TASK_MANAGER"])
    with Sandbox(3) as box:
        server = ApiServer(box.inventory_path, users, home).start()
        try:
            with httpx.Client(base_url=server.url, auth=AUTH, timeout=30) as api:
                yield box, api
        finally:
            server.kill()


def stopped(host) -> bool:
    return not any(host.agent_pids().values())


def running(host) -> bool:
    return all(host.agent_pids().values())


def agent_status(api, host_id: int) -> str | None:
    return api.get(f"/api/v2/compute/hosts/{host_id}").json()["data"]["hostAgentStatus"]


def posted(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()["data"]


class TestThroughTheApi:
    def test_stop_then_restart_one_host(self, env):
        """agent/stop: OCP's "Stop OCP agent" (3 subtasks, task-level hostId), the agent stopped, OFFLINE; then
        agent/restart under /api/v2: "Restart OCP agent" (5 subtasks) starts the stopped agent, AVAILABLE."""
        box, api = env
        before = box.host(1001).agent_pids()
        task = posted(api.post("/compute/hosts/1001/agent/stop"))
        assert task["name"] == "Stop OCP agent" and task["hostId"] == 1001
        assert task["context"]["stringMap"]["host_id"] == "1001" and task["context"]["listMap"] == {}
        assert [s["name"] for s in task["subtasks"]] == [
            "Prepare stop OCP agent",
            STOP_ALL,
            "Finish OCP agent operation",
        ]
        assert wait_for(api, task["id"])["status"] == "SUCCESSFUL"
        assert stopped(box.host(1001)) and running(box.host(1002))
        assert agent_status(api, 1001) == "OFFLINE"

        task = posted(api.post("/api/v2/compute/hosts/1001/agent/restart"))
        assert task["name"] == "Restart OCP agent" and task["hostId"] == 1001 and len(task["subtasks"]) == 5
        assert wait_for(api, task["id"])["status"] == "SUCCESSFUL"
        after = box.host(1001).agent_pids()
        assert running(box.host(1001)) and all(after[n] != before[n] for n in before)
        assert agent_status(api, 1001) == "AVAILABLE"

    def test_batch_stop(self, env):
        """batchStopAgents: "Batch stop OCP agent", 3N + 2 subtasks, listMap.host_ids; both hosts stopped."""
        box, api = env
        task = posted(api.post("/compute/hosts/batchStopAgents", json={"hostIds": [1002, 1003]}))
        assert task["name"] == "Batch stop OCP agent" and "hostId" not in task
        assert task["context"]["listMap"] == {"host_ids": ["1002", "1003"]} and len(task["subtasks"]) == 8
        assert wait_for(api, task["id"])["status"] == "SUCCESSFUL"
        assert stopped(box.host(1002)) and stopped(box.host(1003)) and running(box.host(1001))

    def test_unknown_hosts_and_bad_bodies_get_ocps_errors(self, env):
        """An unknown host: 404 for every operation; a batch stop without hostIds: 400 naming the field."""
        _, api = env
        for path in ("/compute/hosts/99/agent/stop", "/api/v2/compute/hosts/99/agent/restart"):
            assert api.post(path).status_code == 404, path
        assert api.post("/compute/hosts/batchStopAgents", json={"hostIds": [99]}).status_code == 404
        bad = api.post("/compute/hosts/batchStopAgents", json={"hostIds": []})
        assert bad.status_code == 400 and "hostIds" in bad.json()["error"]["message"]

    def test_a_stop_while_a_restart_holds_the_host_gets_409(self, env):
        """While "Restart OCP agent" holds 1001, a stop of it (single or batch) gets 409 / 20021 naming the task."""
        box, api = env
        box.host(1001).set_delays(stop_seconds=3)
        try:
            first = posted(api.post("/compute/hosts/1001/agent/restart"))
            for response in (
                api.post("/compute/hosts/1001/agent/stop"),
                api.post("/compute/hosts/batchStopAgents", json={"hostIds": [1002, 1001]}),
            ):
                assert response.status_code == 409, response.text
                assert response.json()["error"]["code"] == 20021
                assert f"TaskId: {first['id']}" in response.json()["error"]["message"]
            assert wait_for(api, first["id"])["status"] == "SUCCESSFUL"
            assert running(box.host(1002))  # the refused batch stop touched nothing
        finally:
            box.host(1001).set_delays(stop_seconds=0)

    def test_cli_stop_and_restart_through_the_server(self, env, monkeypatch):
        """`stop --host-ids ... --server` and `restart --host-id ... --server`: the server's tasks, followed to the
        end; --json prints each final instance (with its hostId for the single-host one); exit 0."""
        box, api = env
        monkeypatch.setenv("OCP_RESTART_USER", AUTH[0])
        monkeypatch.setenv("OCP_RESTART_PASSWORD", AUTH[1])
        url = str(api.base_url)
        result = cli("stop", "--host-ids", "1001,1002", "--server", url, "--json", timeout=120)
        assert result.returncode == 0, result.stderr
        instance = json.loads(result.stdout)
        assert instance["name"] == "Batch stop OCP agent" and instance["status"] == "SUCCESSFUL"
        assert stopped(box.host(1001)) and stopped(box.host(1002))
        result = cli("restart", "--host-id", "1001", "--server", url, "--json", timeout=120)
        assert result.returncode == 0, result.stderr
        instance = json.loads(result.stdout)
        assert instance["name"] == "Restart OCP agent" and instance["hostId"] == 1001
        assert instance["status"] == "SUCCESSFUL" and running(box.host(1001)) and stopped(box.host(1002))

    def test_a_failed_batch_stop_rolled_back_runs_the_agent_again(self, env):
        """Stop hangs on 1002 after 1001 stopped: the task FAILS; rollback (run by the batch stop's flow) starts
        1001's agent again; every subtask PENDING, the task SUCCESSFUL, the host AVAILABLE."""
        from flows.agent_ops import run_operation
        from flows.options import RestartOptions

        box, api = env
        box.host(1002).set_fault("stop_hang")
        first = run_operation(
            "batch_stop",
            host_ids=[1001, 1002],
            inventory=str(box.inventory_path),
            options=RestartOptions(timeouts={"stop_all": 4}),
        )
        assert first["status"] == "FAILED" and first["name"] == "Batch stop OCP agent"
        assert stopped(box.host(1001))
        box.host(1002).clear_fault("stop_hang")
        response = api.post(f"/api/v2/tasks/instances/{first['id']}/rollback")
        assert response.status_code == 200, response.text
        final = wait_for(api, first["id"])
        assert final["status"] == "SUCCESSFUL" and final["operation"] == "ROLLBACK", final
        assert {s["status"] for s in final["subtasks"]} == {"PENDING"}
        assert running(box.host(1001)) and running(box.host(1002))
        assert agent_status(api, 1001) == "AVAILABLE"


class TestPythonAndCli:
    def test_the_flows_are_importable_and_return_the_task_instance(self, sandbox, home):
        """stop_agent(...) and restart_agent(...) from Python: OCP's task instances, the agent stopped then back."""
        from flows.agent_ops import restart_agent, stop_agent

        host = sandbox.host(1001)
        instance = stop_agent(host_id=1001, inventory=str(sandbox.inventory_path))
        assert instance["status"] == "SUCCESSFUL" and instance["hostId"] == 1001 and stopped(host)
        instance = restart_agent(host_id=1001, inventory=str(sandbox.inventory_path))
        assert instance["status"] == "SUCCESSFUL" and instance["name"] == "Restart OCP agent" and running(host)

    def test_cli_stop_and_restart(self, sandbox, home):
        """`stop --host-id` is "Stop OCP agent", `stop --host-ids` "Batch stop OCP agent", `restart --host-id`
        "Restart OCP agent"; exit 0 and the final instance with --json; --dry-run touches nothing."""
        inv = str(sandbox.inventory_path)
        dry = cli("stop", "--host-ids", "1001,1002", "--dry-run", "--json", "--inventory", inv)
        assert dry.returncode == 0, dry.stderr
        assert json.loads(dry.stdout)["name"] == "Batch stop OCP agent" and running(sandbox.host(1001))

        result = cli("stop", "--host-id", "1001", "--json", "--inventory", inv, timeout=120)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["name"] == "Stop OCP agent" and stopped(sandbox.host(1001))

        result = cli("stop", "--host-ids", "1002,1003", "--json", "--inventory", inv, timeout=120)
        instance = json.loads(result.stdout)
        assert result.returncode == 0 and instance["name"] == "Batch stop OCP agent"
        assert len(instance["subtasks"]) == 8 and stopped(sandbox.host(1002)) and stopped(sandbox.host(1003))

        result = cli("restart", "--host-id", "1001", "--json", "--inventory", inv, timeout=120)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["name"] == "Restart OCP agent" and running(sandbox.host(1001))

    def test_cli_retry_of_a_failed_stop_runs_the_stops_flow(self, sandbox, home):
        """A stop whose Stop all hangs FAILS (exit 1 would be the CLI's); `ocp-restart retry` runs the stop's own
        flow again for the same task: SUCCESSFUL, Stop all at runTime 2, the agent stopped."""
        from flows.agent_ops import run_operation
        from flows.options import RestartOptions

        host = sandbox.host(1001)
        host.set_fault("stop_hang")
        first = run_operation(
            "stop",
            host_ids=[1001],
            inventory=str(sandbox.inventory_path),
            options=RestartOptions(timeouts={"stop_all": 4}),
        )
        assert first["status"] == "FAILED" and running(host)
        host.clear_fault("stop_hang")
        result = cli("retry", str(first["id"]), "--json", timeout=120)
        assert result.returncode == 0, result.stderr
        final = json.loads(result.stdout)
        assert final["id"] == first["id"] and final["name"] == "Stop OCP agent" and final["status"] == "SUCCESSFUL"
        assert next(s for s in final["subtasks"] if s["name"] == STOP_ALL)["runTime"] == 2
        assert stopped(host)

    def test_cli_stop_of_a_busy_host_exits_4(self, sandbox, home):
        """A host held by another task: exit 4, as `run`."""
        from flows.options import RestartOptions
        from flows.plan import RESTART
        from flows.settings import Settings
        from flows.store import TaskStore
        from flows.submit import create_task
        from steps.inventory import load_inventory

        with TaskStore(Settings().store_url) as store:
            create_task(
                store,
                load_inventory(sandbox.inventory_path),
                [1001],
                RestartOptions(),
                creator="t",
                executor="e",
                template=RESTART,
            )
        result = cli("stop", "--host-id", "1001", "--inventory", str(sandbox.inventory_path))
        assert result.returncode == 4, result.stderr


def test_deploy_registers_a_deployment_per_operation(prefect_api, home):
    """`ocp-restart deploy`'s registration: each operation's flow under the batch restart's name (what the
    deployment launcher looks up); the batch stop with the default hosts and its own schedule (before the window)."""
    from prefect.client.orchestration import get_client

    from deployments.launch import deployment_for
    from deployments.prefect_deploy import deploy

    deploy(name="window", pool="ocp-ops-test", host_ids=[1001, 1002], cron="0 3 * * 6", stop_cron="50 2 * * 6")
    with get_client(sync_client=True) as client:
        for template in ("batch_restart", "restart", "stop", "batch_stop"):
            found = client.read_deployment_by_name(deployment_for("batch-restart-agents/window", template))
            assert found.work_pool_name == "ocp-ops-test"
        stop = client.read_deployment_by_name("batch-stop-agents/window")
        assert stop.parameters["host_ids"] == [1001, 1002]
        assert [s.schedule.cron for s in stop.schedules] == ["50 2 * * 6"]
        assert "host_id" not in client.read_deployment_by_name("stop-agent/window").parameters
