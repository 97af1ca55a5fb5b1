"""The host's agent read live, one process restarted or stopped, and ``/api/status``: a real ``ocp-restart serve``
on loopback against sandbox hosts (real sshd, the simulated agent), as an OCP client calls them."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import datetime

import httpx
import pytest
from conftest import ApiServer, wait_for, write_users

pytestmark = pytest.mark.usefixtures("prefect_api")

PASSWORDS = {"admin": "admin-pass-1", "hostman": "hostman-pass-1", "viewer": "viewer-pass-1"}
ROLES = {"admin": ["ADMIN"], "hostman": ["HOST_MANAGER"], "viewer": ["HOST_VIEWER"]}
AGENT = "/compute/hosts/{host}/agent"
PROCESSES = ("ocp_agentd", "ocp_mgragent", "ocp_monagent")
OPERATION_SECONDS = "5"  # the server's deadline for one process operation (OCP_RESTART_PROCESS_TIMEOUT_SECONDS)


@pytest.fixture(scope="module")
def users_file(tmp_path_factory):
    return write_users(tmp_path_factory.mktemp("users") / "users.toml", PASSWORDS, ROLES)


def serve(inventory, users, home, **env: str) -> ApiServer:
    """``ocp-restart serve`` with ``env`` added to its environment."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        return ApiServer(inventory, users, home).start()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
def server(box, users_file, tmp_path_factory, prefect_api):
    api = serve(
        box.inventory_path,
        users_file,
        tmp_path_factory.mktemp("api-home"),
        OCP_RESTART_PROCESS_TIMEOUT_SECONDS=OPERATION_SECONDS,
    )
    yield api
    api.kill()


def client(server, user: str = "admin") -> httpx.Client:
    return httpx.Client(base_url=server.url, auth=(user, PASSWORDS[user]), timeout=60)


def agent_of(server, host_id: int, prefix: str = "/api/v2") -> dict:
    with client(server, "viewer") as api:
        body = api.get(prefix + AGENT.format(host=host_id)).json()
    assert body["successful"], body
    return body["data"]


def process(agent: dict, alias: str) -> dict:
    return next(p for p in agent["processes"] if p["alias"] == alias)


def operations(server, host_id: int) -> list[dict]:
    with client(server, "viewer") as api:
        body = api.get(AGENT.format(host=host_id) + "/processes/operations").json()
    assert body["successful"], body
    return body["data"]


def post(server, host_id: int, ref: str | int, action: str, user: str = "hostman", prefix: str = "") -> httpx.Response:
    with client(server, user) as api:
        return api.post(f"{prefix}{AGENT.format(host=host_id)}/processes/{ref}/{action}")


class TestLiveView:
    def test_processes_are_read_live_before_any_task(self, server, box):
        """No task has run: every process STARTED with the pid its host's pid file holds, its stable id, ports,
        operable as OCP's sample has it, its log files and running time; both paths; paged."""
        agent = agent_of(server, 1001)
        assert agent["status"] == "AVAILABLE" and agent["hostId"] == 1001
        assert {p["alias"]: p["pid"] for p in agent["processes"]} == box.host(1001).agent_pids()
        assert [(p["alias"], p["operable"], p["status"]) for p in agent["processes"]] == [
            ("ocp_agentd", False, "STARTED"),
            ("ocp_mgragent", False, "STARTED"),
            ("ocp_monagent", True, "STARTED"),
        ]
        assert process(agent, "ocp_mgragent")["ports"] == "62888"
        assert process(agent, "ocp_monagent")["logFilePattern"].endswith("/log/monagent.log*")
        assert all(p["elapsedTime"] is not None and p["elapsedTime"] >= 0 for p in agent["processes"])
        assert abs(datetime.fromisoformat(agent["updateTime"]).timestamp() - time.time()) < 10
        with client(server, "viewer") as api:
            listed = api.get(AGENT.format(host=1001) + "/processes", params={"page": 2, "size": 2}).json()["data"]
        assert listed["page"] == {"number": 2, "size": 2, "totalElements": 3, "totalPages": 2}
        assert [p["id"] for p in listed["contents"]] == [process(agent, "ocp_monagent")["id"]]
        time.sleep(3.2)  # past the cache: read again, the same ids
        again = agent_of(server, 1001, prefix="")
        assert [p["id"] for p in again["processes"]] == [p["id"] for p in agent["processes"]]

    def test_a_host_that_does_not_answer_shows_its_last_known_state_marked_offline(self, server, box):
        """sshd down: OFFLINE, the last read's time and pids; back up: AVAILABLE and fresh again."""
        host = box.host(1003)
        seen = agent_of(server, 1003)
        host.down()
        try:
            time.sleep(3.2)  # past the cache
            started = time.monotonic()
            stale = agent_of(server, 1003)
            assert time.monotonic() - started < 8
            assert stale["status"] == "OFFLINE" and stale["updateTime"] == seen["updateTime"]
            assert [p["pid"] for p in stale["processes"]] == [p["pid"] for p in seen["processes"]]
        finally:
            host.up()
        time.sleep(3.2)
        fresh = agent_of(server, 1003)
        assert fresh["status"] == "AVAILABLE" and fresh["updateTime"] > seen["updateTime"]


class TestOneProcess:
    def test_a_restart_gives_monagent_a_new_pid_leaves_the_others_and_is_recorded(self, server, box):
        host = box.host(1001)
        before = host.agent_pids()
        ref = process(agent_of(server, 1001), "ocp_monagent")["id"]
        response = post(server, 1001, ref, "restart")
        assert response.status_code == 200, response.text
        shown = response.json()["data"]
        after = host.agent_pids()
        assert shown["pid"] == after["ocp_monagent"] != before["ocp_monagent"] and shown["status"] == "STARTED"
        assert {a: after[a] for a in PROCESSES[:2]} == {a: before[a] for a in PROCESSES[:2]}
        assert shown["id"] == ref
        latest = operations(server, 1001)[0]
        assert (latest["action"], latest["alias"], latest["status"], latest["creator"]) == (
            "RESTART",
            "ocp_monagent",
            "SUCCESSFUL",
            "hostman",
        )
        assert (latest["pidBefore"], latest["pidAfter"]) == (before["ocp_monagent"], after["ocp_monagent"])
        assert "service stop ocp_monagent" in latest["output"] and latest["finishTime"]

    def test_a_stop_gives_pid_0_and_stopped_and_a_restart_brings_it_back(self, server, box):
        host = box.host(1001)
        response = post(server, 1001, "ocp_monagent", "stop", prefix="/api/v2")
        assert response.status_code == 200, response.text
        assert (response.json()["data"]["pid"], response.json()["data"]["status"]) == (0, "STOPPED")
        assert host.agent_pids()["ocp_monagent"] is None
        assert process(agent_of(server, 1001), "ocp_monagent")["status"] == "STOPPED"
        back = post(server, 1001, "ocp_monagent", "restart").json()["data"]
        assert back["status"] == "STARTED" and back["pid"] == host.agent_pids()["ocp_monagent"]

    @pytest.mark.parametrize("alias", ["ocp_agentd", "ocp_mgragent"])
    def test_a_basic_process_is_refused_and_nothing_changes(self, server, box, alias):
        host = box.host(1002)
        before, recorded = host.agent_pids(), operations(server, 1002)
        ref = process(agent_of(server, 1002), alias)["id"]
        response = post(server, 1002, ref, "restart")
        assert response.status_code == 400
        assert response.json()["error"]["code"] == 1003 and "operable: false" in response.json()["error"]["message"]
        assert host.agent_pids() == before and operations(server, 1002) == recorded

    def test_a_viewer_may_read_but_not_operate(self, server):
        response = post(server, 1002, "ocp_monagent", "restart", user="viewer")
        assert response.status_code == 403 and response.json()["error"]["code"] == 3100


class TestHostLock:
    def test_a_process_operation_while_a_task_holds_the_host_is_409(self, server, box):
        host = box.host(1002)
        host.set_delays(stop_seconds=3)
        try:
            with client(server) as api:
                task = api.post("/compute/hosts/batchRestartAgents", json={"hostIds": [1002]}).json()["data"]
                response = post(server, 1002, "ocp_monagent", "stop")
                assert response.status_code == 409, response.text
                assert response.json()["error"]["code"] == 20021
                assert f"TaskId: {task['id']}" in response.json()["error"]["message"]
                assert wait_for(api, task["id"])["status"] == "SUCCESSFUL"
        finally:
            host.set_delays(stop_seconds=0)
        assert host.agent_pids()["ocp_monagent"] is not None

    def test_a_task_while_a_process_operation_holds_the_host_is_409_and_the_failure_is_recorded(self, server, box):
        """The host frozen: the operation waits for it until its deadline, holding the host; a task on it meanwhile
        is refused naming the operation; the operation then fails (500), recorded FAILED, and the host is free."""
        host = box.host(1003)
        answers: list[httpx.Response] = []
        host.down(freeze=True)
        try:
            worker = threading.Thread(target=lambda: answers.append(post(server, 1003, "ocp_monagent", "stop")))
            worker.start()
            time.sleep(1.0)
            with client(server) as api:
                refused = api.post("/api/v2/compute/hosts/batchRestartAgents", json={"hostIds": [1003]})
            worker.join(30)
        finally:
            host.up()
        assert refused.status_code == 409 and refused.json()["error"]["code"] == 20021
        assert "process operation" in refused.json()["error"]["message"]
        assert answers and answers[0].status_code == 500, answers
        latest = operations(server, 1003)[0]
        assert latest["status"] == "FAILED" and latest["alias"] == "ocp_monagent" and latest["output"]
        with client(server) as api:
            task = api.post("/compute/hosts/batchRestartAgents", json={"hostIds": [1003]}).json()["data"]
            assert wait_for(api, task["id"])["status"] == "SUCCESSFUL"


class TestApplicationStatus:
    def test_okay_without_credentials(self, server):
        for query in ("", "?includeUnavailableComponent=true"):
            response = httpx.get(server.url + "/api/status" + query, timeout=10)
            assert (response.status_code, response.text) == (200, "okay")

    def test_bad_naming_the_store_when_its_database_is_down(self, box, users_file, tmp_path):
        """A server on PostgreSQL: okay; the database stopped: `bad` fast, `bad store` on request."""
        from services import PostgresServer

        pg = PostgresServer()
        if not pg.available:
            pytest.skip("PostgreSQL is not installed")
        pg.start()
        api = None
        try:
            store_url = pg.url("ocp_restart", "psycopg")
            api = serve(box.inventory_path, users_file, tmp_path, OCP_RESTART_STORE_URL=store_url)
            assert httpx.get(api.url + "/api/status", timeout=10).text == "okay"
            pg.stop()
            started = time.monotonic()
            response = httpx.get(api.url + "/api/status", params={"includeUnavailableComponent": "true"}, timeout=10)
            assert (response.status_code, response.text) == (503, "bad store")
            assert time.monotonic() - started < 5
            assert httpx.get(api.url + "/api/status", timeout=10).text == "bad"
        finally:
            if api is not None:
                api.kill()
            pg.stop()


class TestCli:
    def test_agent_and_process_from_the_command_line(self, box, home):
        """`agent --json` is the API's HostAgent; `process restart` gives monagent a new pid (exit 0); a basic
        process is refused (exit 2); `process list --json` shows the record."""
        from conftest import cli

        inventory = str(box.inventory_path)
        host = box.host(1002)
        shown = cli("agent", "1002", "--inventory", inventory, "--json")
        assert shown.returncode == 0, shown.stderr
        agent = json.loads(shown.stdout)
        assert {p["alias"]: p["pid"] for p in agent["processes"]} == host.agent_pids()
        before = host.agent_pids()["ocp_monagent"]
        done = cli("process", "restart", "1002", "ocp_monagent", "--inventory", inventory)
        assert done.returncode == 0, done.stderr
        assert host.agent_pids()["ocp_monagent"] not in (None, before)
        refused = cli("process", "stop", "1002", "ocp_agentd", "--inventory", inventory)
        assert refused.returncode == 2 and "operable: false" in refused.stderr
        listed = json.loads(cli("process", "list", "1002", "--inventory", inventory, "--json").stdout)
        assert [(o["action"], o["alias"], o["status"]) for o in listed] == [("RESTART", "ocp_monagent", "SUCCESSFUL")]
        assert "ocp_monagent" in cli("agent", "1002", "--inventory", inventory).stdout
