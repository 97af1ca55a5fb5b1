"""The OCP-compatible HTTP API, through a real uvicorn server on loopback, against sandbox hosts."""

from __future__ import annotations

import json
import re
import signal
import time

import httpx
import pytest
from conftest import ApiServer, cli, free_port, wait_for, write_users

pytestmark = pytest.mark.usefixtures("prefect_api")

PASSWORDS = {"admin": "admin-pass-1", "hostman": "hostman-pass-1", "viewer": "viewer-pass-1", "tasks": "tasks-pass-1"}
ROLES = {"admin": ["ADMIN"], "hostman": ["HOST_MANAGER"], "viewer": ["HOST_VIEWER"], "tasks": ["TASK_MANAGER"]}
RESTART = "/compute/hosts/batchRestartAgents"


@pytest.fixture(scope="module")
def users_file(tmp_path_factory):
    return write_users(tmp_path_factory.mktemp("users") / "users.toml", PASSWORDS, ROLES)


@pytest.fixture(scope="module")
def server(box, users_file, tmp_path_factory, prefect_api):
    home = tmp_path_factory.mktemp("api-home")
    api = ApiServer(box.inventory_path, users_file, home).start()
    yield api
    api.kill()


def client(server, user: str | None = "admin", password: str | None = None) -> httpx.Client:
    auth = (user, password or PASSWORDS[user]) if user else None
    return httpx.Client(base_url=server.url, auth=auth, timeout=30)


def assert_envelope(body: dict, status: int, successful: bool = True) -> None:
    assert body["successful"] is successful and body["status"] == status
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", body["timestamp"])
    assert isinstance(body["duration"], int) and body["duration"] >= 0
    assert re.fullmatch(r"[0-9a-f]{16}", body["traceId"]) and body["server"]


class TestRunThroughServer:
    """``ocp-restart run --server URL`` hands the restart to a running server (issue #6: the N = 10 start-up)."""

    def test_run_hands_the_restart_to_the_server(self, server, box, monkeypatch):
        """Exit 0, the documented task instance on stdout, created by the API user, every pid new."""
        monkeypatch.setenv("OCP_RESTART_USER", "hostman")
        monkeypatch.setenv("OCP_RESTART_PASSWORD", PASSWORDS["hostman"])
        before = {h.id: h.agent_pids() for h in box.hosts}
        result = cli("run", "--server", server.url, "--host-ids", "1001,1002", "--json", timeout=120)
        assert result.returncode == 0, result.stderr
        instance = json.loads(result.stdout)
        assert instance["status"] == "SUCCESSFUL" and instance["creator"] == "hostman"
        assert len(instance["subtasks"]) == 14 and {s["status"] for s in instance["subtasks"]} == {"SUCCESSFUL"}
        for host in box.hosts[:2]:
            assert all(pid != before[host.id][name] for name, pid in host.agent_pids().items())
        assert box.host(1003).agent_pids() == before[1003]
        assert "PASSWORD" not in result.stderr and PASSWORDS["hostman"] not in result.stderr + result.stdout

    def test_refused_credentials_exit_2_and_create_no_task(self, server, monkeypatch):
        """A wrong password: exit 2 naming the server's 401; the server has no new task."""
        monkeypatch.setenv("OCP_RESTART_USER", "hostman")
        monkeypatch.setenv("OCP_RESTART_PASSWORD", "not-the-password-7")
        with client(server, "admin") as api:
            count = api.get("/api/v2/tasks/instances").json()["data"]["page"]["totalElements"]
            result = cli("run", "--server", server.url, "--host-ids", "1001")
            assert api.get("/api/v2/tasks/instances").json()["data"]["page"]["totalElements"] == count
        assert result.returncode == 2, result.stderr
        assert f"{server.url} answered 401" in result.stderr and "not-the-password-7" not in result.stderr

    def test_unreachable_server_exits_5(self):
        """Nobody listening: exit 5 naming the URL."""
        url = f"http://127.0.0.1:{free_port()}"
        result = cli("run", "--server", url, "--host-ids", "1001")
        assert result.returncode == 5, result.stderr
        assert f"the ocp-restart server {url} cannot be reached" in result.stderr

    def test_local_only_options_are_refused(self, server):
        """--inventory and --timeout make no sense for a server with its own inventory: exit 2 naming them."""
        result = cli("run", "--server", server.url, "--inventory", "/nonexistent.toml", "--timeout", "stop_all=5")
        assert result.returncode == 2
        assert "--inventory, --timeout cannot be used with --server" in result.stderr


class TestRestart:
    def test_post_answers_at_once_and_the_task_reaches_successful(self, server, box):
        """POST < 1 s with the documented shape; polling shows SUCCESSFUL; every agent has new pids."""
        before = {h.id: h.agent_pids() for h in box.hosts}
        with client(server, "hostman") as api:
            api.get("/api/v2/compute/hosts")  # warm the credential cache, as a polling client would
            started = time.monotonic()
            response = api.post(RESTART, json={"hostIds": [1001, 1002, 1003]})
            took = time.monotonic() - started
        assert response.status_code == 200, response.text
        assert took < 1.0, took
        body = response.json()
        assert_envelope(body, 200)
        data = body["data"]
        assert data["status"] == "RUNNING" and data["creator"] == "hostman" and len(data["subtasks"]) == 19
        assert {s["status"] for s in data["subtasks"] if not s["upstreams"]} == {"READY"}
        assert {s["status"] for s in data["subtasks"] if s["upstreams"]} == {"PENDING"}
        with client(server, "admin") as api:
            final = wait_for(api, data["id"])
            assert final["status"] == "SUCCESSFUL"
            hosts = api.get("/api/v2/compute/hosts").json()["data"]["contents"]
        assert {h["hostAgentStatus"] for h in hosts} == {"AVAILABLE"}
        for host in box.hosts:
            after = host.agent_pids()
            assert all(after[n] != before[host.id][n] for n in after), (before[host.id], after)
        print(f"POST answered in {took * 1000:.0f} ms")

    def test_the_seed_spelling_hostids_is_accepted_and_logs_have_separators(self, server):
        """{"hostids": [..]} works; each subtask log starts with OCP's EXECUTE separator."""
        with client(server, "admin") as api:
            response = api.post("/api/v2" + RESTART, json={"hostids": [1002]})
            assert response.status_code == 200, response.text
            task = wait_for(api, response.json()["data"]["id"])
            assert task["status"] == "SUCCESSFUL"
            stop = next(s for s in task["subtasks"] if s["name"] == "Stop all OCP agent processes")
            log = api.get(f"/api/v2/tasks/instances/{task['id']}/subtasks/{stop['id']}/log").json()
        assert_envelope(log, 200)
        assert re.match(
            r"############\{EXECUTE\}\{\d{4}-\d\d-\d\dT[\d:.]+[+-]\d\d:\d\d\}############\n", log["data"]["log"]
        )
        assert "ocp_agentctl stop" in log["data"]["log"]

    def test_a_second_post_for_a_busy_host_gets_409(self, server, box):
        """While a restart holds host 1003, another POST naming it gets 409 / 20021 with that task's id."""
        box.host(1003).set_delays(stop_seconds=3)
        try:
            with client(server, "admin") as api:
                first = api.post(RESTART, json={"hostIds": [1003]}).json()["data"]["id"]
                second = api.post(RESTART, json={"hostIds": [1001, 1003]})
                assert second.status_code == 409
                assert_envelope(second.json(), 409, successful=False)
                assert second.json()["error"]["code"] == 20021
                assert f"TaskId: {first}" in second.json()["error"]["message"]
                host = api.get("/api/v2/compute/hosts/1003").json()["data"]
                assert host["hostAgentStatus"] == "RESTARTING"
                assert wait_for(api, first)["status"] == "SUCCESSFUL"
        finally:
            box.host(1003).set_delays(stop_seconds=0)

    def test_trace_id_is_taken_from_the_header(self, server):
        """x-trace-id: 16 hex digits come back as traceId."""
        with client(server, "admin") as api:
            body = api.get("/api/v2/compute/hosts", headers={"x-trace-id": "0123456789abcdef"}).json()
        assert body["traceId"] == "0123456789abcdef"


class TestAuth:
    @pytest.mark.parametrize(
        "user, password, status, code",
        [
            pytest.param(None, None, 401, 3000, id="no-credentials"),
            pytest.param("hostman", "wrong-password", 401, 3000, id="wrong-password"),
            pytest.param("nobody", "whatever-123", 401, 3000, id="unknown-user"),
            pytest.param("viewer", None, 403, 3100, id="host-viewer"),
            pytest.param("tasks", None, 403, 3100, id="task-manager"),
        ],
    )
    def test_restart_is_refused(self, server, user, password, status, code):
        """Who may not restart gets OCP's 401 / 403 envelope, and no task is created."""
        with client(server, "admin") as admin:
            before = admin.get("/api/v2/tasks/instances").json()["data"]["page"]["totalElements"]
        with client(server, user, password) as api:
            response = api.post(RESTART, json={"hostIds": [1001]})
        assert response.status_code == status
        assert_envelope(response.json(), status, successful=False)
        assert response.json()["error"]["code"] == code
        with client(server, "admin") as admin:
            assert admin.get("/api/v2/tasks/instances").json()["data"]["page"]["totalElements"] == before

    def test_reads_follow_roles(self, server):
        """HOST_VIEWER reads hosts but not others' tasks; TASK_MANAGER reads tasks but not hosts."""
        with client(server, "viewer") as viewer:
            assert viewer.get("/api/v2/compute/hosts").status_code == 200
            assert viewer.get("/api/v2/compute/hosts/1001").json()["data"]["innerIpAddress"].startswith("127.0.")
            # Another's task answers as a missing one: a viewer cannot learn which task ids exist (#22).
            other, missing = viewer.get("/api/v2/tasks/instances/1"), viewer.get("/api/v2/tasks/instances/999999")
            assert other.status_code == missing.status_code == 404
            assert other.json()["error"]["code"] == missing.json()["error"]["code"] == 4001
        with client(server, "tasks") as tasks:
            assert tasks.get("/api/v2/tasks/instances").status_code == 200
            assert tasks.get("/api/v2/compute/hosts").status_code == 403

    def test_users_file_is_private_and_hashed(self, users_file):
        """The users file is mode 0600 and holds no plaintext password."""
        assert users_file.stat().st_mode & 0o777 == 0o600
        text = users_file.read_text()
        assert "$2b$12$" in text and not any(p in text for p in PASSWORDS.values())


class TestBadInput:
    @pytest.mark.parametrize(
        "body, status, code, fragment",
        [
            pytest.param({"hostIds": []}, 400, 1001, "hostIds", id="empty"),
            pytest.param({}, 400, 1001, "hostIds", id="missing"),
            pytest.param({"hostIds": ["a"]}, 400, 1001, "hostIds", id="non-integer"),
            pytest.param({"hostIds": [1.5]}, 400, 1001, "hostIds", id="float"),
            pytest.param({"hostIds": [-1]}, 400, 1001, "hostIds", id="negative"),
            pytest.param({"hostIds": [1001, 1001]}, 400, 1001, "duplicates", id="duplicate"),
            pytest.param({"hostIds": list(range(1, 2002))}, 400, 1001, "at most 2000", id="oversized"),
            pytest.param({"hostIds": 1001}, 400, 1001, "hostIds", id="not-a-list"),
            pytest.param([1001], 400, 1003, "Malformed JSON", id="array-body"),
            pytest.param({"hostIds": [1001, 4242, 4343]}, 404, 7005, "<4242, 4343>", id="unknown-hosts"),
        ],
    )
    def test_invalid_bodies(self, server, body, status, code, fragment):
        """Each bad body gets its documented status and code, the message names the problem; nothing is left."""
        with client(server, "admin") as api:
            before = api.get("/api/v2/tasks/instances").json()["data"]["page"]["totalElements"]
            response = api.post(RESTART, json=body)
            assert response.status_code == status, response.text
            assert_envelope(response.json(), status, successful=False)
            assert response.json()["error"]["code"] == code and fragment in response.json()["error"]["message"]
            assert api.get("/api/v2/tasks/instances").json()["data"]["page"]["totalElements"] == before
            hosts = api.get("/api/v2/compute/hosts").json()["data"]["contents"]
            assert "RESTARTING" not in {h["hostAgentStatus"] for h in hosts}

    def test_malformed_json_and_wrong_content_type(self, server):
        """Broken JSON -> 400 'Malformed JSON request'; text/plain -> 415."""
        with client(server, "admin") as api:
            broken = api.post(RESTART, content=b'{"hostIds": [1001,', headers={"content-type": "application/json"})
            plain = api.post(RESTART, content=b'{"hostIds": [1001]}', headers={"content-type": "text/plain"})
        assert broken.status_code == 400 and broken.json()["error"]["message"] == "Malformed JSON request"
        assert plain.status_code == 415 and plain.json()["successful"] is False

    @pytest.mark.parametrize(
        "path, status, code",
        [
            pytest.param("/api/v2/tasks/instances/999999", 404, 4001, id="unknown-task"),
            pytest.param("/api/v2/tasks/instances/abc", 400, 1001, id="non-integer-task"),
            pytest.param(
                "/api/v2/tasks/instances?size=1.5", 400, 1001, id="size-not-an-integer"
            ),  # #12: 5000 is clamped
            pytest.param("/api/v2/tasks/instances?page=abc", 400, 1001, id="page-not-a-number"),  # #12: 0 is page 1
            pytest.param("/api/v2/tasks/instances?status=DONE", 400, 1001, id="bad-status"),
            pytest.param("/api/v2/compute/hosts/4242", 404, 7005, id="unknown-host"),
            pytest.param("/api/v2/nothing/here", 400, 1003, id="unknown-route"),
        ],
    )
    def test_bad_reads(self, server, path, status, code):
        """Bad ids, pages and routes get OCP's envelope, never a 500."""
        with client(server, "admin") as api:
            response = api.get(path)
        assert response.status_code == status, response.text
        assert_envelope(response.json(), status, successful=False)
        assert response.json()["error"]["code"] == code

    def test_openapi_lists_every_route(self, server):
        """/openapi.json documents what the server serves."""
        spec = httpx.get(server.url + "/openapi.json").json()
        assert {
            "/compute/hosts/batchRestartAgents",
            "/api/v2/compute/hosts/batchRestartAgents",
            "/api/v2/tasks/instances",
            "/api/v2/tasks/instances/{task_id}",
            "/api/v2/tasks/instances/{task_id}/subtasks/{subtask_id}/log",
            "/api/v2/compute/hosts",
            "/api/v2/compute/hosts/{host_id}",
        } <= set(spec["paths"])
        body = spec["paths"]["/compute/hosts/batchRestartAgents"]["post"]["requestBody"]
        assert "hostIds" in body["content"]["application/json"]["schema"]["properties"]


class TestCrash:
    def test_sigkill_mid_task_loses_nothing_that_finished(self, box, users_file, tmp_path):
        """SIGKILL the API mid-restart; a new API process shows every finished subtask with its status and log."""
        home = tmp_path / "home"
        home.mkdir()
        box.host(1001).set_delays(stop_seconds=4)
        api_server = ApiServer(box.inventory_path, users_file, home).start()
        try:
            with client(api_server, "admin") as api:
                task_id = api.post(RESTART, json={"hostIds": [1001, 1002]}).json()["data"]["id"]
                running = wait_for(
                    api,
                    task_id,
                    until=lambda t: any(
                        s["name"] == "Stop all OCP agent processes" and s["status"] == "RUNNING" for s in t["subtasks"]
                    ),
                )
            api_server.kill(signal.SIGKILL)
            finished = {s["id"]: s["status"] for s in running["subtasks"] if s["status"] in ("SUCCESSFUL", "FAILED")}
            assert len(finished) >= 5  # 2 Prepare, Wait, 2 Restart pos proxy at least
            again = ApiServer(box.inventory_path, users_file, home).start()
            try:
                with client(again, "admin") as api:
                    body = api.get(f"/api/v2/tasks/instances/{task_id}").json()
                    assert body["successful"], body
                    task = body["data"]
                    now = {s["id"]: s["status"] for s in task["subtasks"]}
                    assert all(now[sid] == status for sid, status in finished.items())
                    for sid in finished:
                        log = api.get(f"/api/v2/tasks/instances/{task_id}/subtasks/{sid}/log").json()["data"]["log"]
                        assert log.startswith("############{EXECUTE}") and "done in" in log
            finally:
                again.kill()
        finally:
            box.host(1001).set_delays(stop_seconds=0)
            api_server.kill()
