"""An OCP client written from OCP's API reference (oceanbase/ocp-doc, en-US/600.api-reference/) and from how
oceanbase/mcp-oceanbase signs requests, run against a real `ocp-restart serve` and sandbox hosts (issue #12).

Nothing here imports the server's code to build or read a request: the client knows OCP's documented paths,
fields and signature, and nothing else. Reference pages, by short name:

    task list     1000.task-management/100.query-the-task-list.md         BasicTaskInstance, filters, page
    task detail   1000.task-management/200.query-task-instance-details.md WrappedTaskInstance, SubtaskInstance
    retry         1000.task-management/300.retry-a-task.md                WrappedTaskInstance
    host agent    1300.ocpagent-management/100.queries-the-details-of-the-ocp-agent-on-a-host.md
    time, info    1600.other/200.query-ocp-server-time.md, 100.query-the-basic-information-of-an-ocp-application.md
    batch restart 1300.ocpagent-management/500.restarts-the-basic-processes-of-the-ocp-agent-on-multiple.md
    agent ops     1300.ocpagent-management/200-800: stop, batch stop, restart, processes, restart/stop a process
    access keys   OCP's "API authentication" page (OCP-ACCESS-KEY-HMACSHA1, Date, toSignString) and
                  mcp-oceanbase src/ocp_mcp_server/server.py (query_ocp_api)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import quote

import httpx
import pytest
from conftest import ApiServer, cli

pytestmark = pytest.mark.usefixtures("prefect_api")

ADMIN, PASSWORD = "ocp-admin", "ocp-admin-pass-1"
TARGET = "target-user"  # the login throttle's victim in TestThrottle
OCP_TIME = "%Y-%m-%dT%H:%M:%S.%f%z"
RESTART = "/api/v2/compute/hosts/batchRestartAgents"
TASKS = "/api/v2/tasks/instances"
LOGIN_LIMIT = 3


# ---- the client ------------------------------------------------------------------------------------------------


def rfc1123(when: datetime) -> str:
    """`Tue, 17 Jan 2023 03:36:01 GMT`, as the Date header of a signed request."""
    return format_datetime(when.astimezone(UTC), usegmt=True)


class OcpClient:
    """A client of OCP's API: HTTP Basic, or an access key signing as OCP documents it (mcp-oceanbase's way)."""

    def __init__(
        self,
        base_url: str,
        user: str | None = None,
        password: str | None = None,
        access_key: tuple[str, str] | None = None,
        headers: dict | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.address = self.base_url.split("://", 1)[1]  # mcp-oceanbase's ADDRESS: host:port, also the Host header
        self.auth = (user, password) if user else None
        self.access_key = access_key
        self.http = httpx.Client(base_url=self.base_url, timeout=30, headers=headers or {})

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> OcpClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        params: dict | None = None,
        body: dict | None = None,
        date: datetime | None = None,
        tamper: bool = False,
    ) -> httpx.Response:
        """``params`` values may be lists (sent comma-joined, as mcp-oceanbase does)."""
        flat = {k: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v) for k, v in (params or {}).items()}
        query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in sorted(flat.items()))
        target = path + (f"?{query}" if query else "")
        content = json.dumps(body).encode() if body is not None else b""
        headers = {"Content-Type": "application/json"}
        if self.access_key:
            headers |= self.signed_headers(method, target, content, date or datetime.now(UTC), tamper)
        return self.http.request(method, target, content=content or None, headers=headers, auth=self.auth)

    def signed_headers(self, method: str, target: str, content: bytes, date: datetime, tamper: bool) -> dict:
        """toSignString = HttpMethod\\nMd5Payload\\nContentType\\nRequestDate\\nHost\\nOCP-Headers\\nPathAndQueryParams;
        signature = base64(HMAC-SHA1(SK, toSignString)); Authorization: OCP-ACCESS-KEY-HMACSHA1 AK:signature."""
        key_id, secret = self.access_key
        md5 = hashlib.md5(content).hexdigest() if content else ""
        request_time = rfc1123(date)
        to_sign = "\n".join(
            [method, md5, "application/json", request_time, self.address, "x-ocp-origin:from-mcp", target]
        )
        signature = base64.b64encode(hmac.new(secret.encode(), to_sign.encode(), hashlib.sha1).digest()).decode()
        if tamper:
            signature = ("A" if signature[0] != "A" else "B") + signature[1:]
        return {
            "Authorization": f"OCP-ACCESS-KEY-HMACSHA1 {key_id}:{signature}",
            "Date": request_time,
            "x-ocp-origin": "from-mcp",
        }

    def data(self, method: str, path: str, **kwargs) -> dict:
        """The ``data`` of a successful answer; fails the test with the answer otherwise."""
        response = self.request(method, path, **kwargs)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["successful"] is True and body["status"] == 200, body
        return body.get("data")

    def task(self, task_id: int) -> dict:
        return self.data("GET", f"{TASKS}/{task_id}")

    def follow(self, task_id: int, timeout: float = 90) -> dict:
        """Poll the task detail until it is no longer RUNNING, as an OCP client waits for an asynchronous task."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            task = self.task(task_id)
            if task["status"] != "RUNNING":
                return task
            time.sleep(0.2)
        raise AssertionError(f"task {task_id} still RUNNING after {timeout} s")


def parse_time(text: str) -> datetime:
    """OCP's times: 2021-08-25T15:09:31.74+08:00 (the samples also show no fraction)."""
    return datetime.fromisoformat(text)


def assert_wrapped_task_instance(task: dict, creator: str) -> None:
    """The WrappedTaskInstance the task detail page documents; its sample has no context."""
    assert {
        "id",
        "name",
        "taskDefinitionId",
        "status",
        "type",
        "creator",
        "executor",
        "createTime",
        "startTime",
        "finishTime",
        "operation",
        "prohibitRollback",
        "subtasks",
    } <= set(task)
    assert "context" not in task
    assert isinstance(task["creator"]["id"], int) and task["creator"]["name"] == creator
    assert isinstance(task["prohibitRollback"], bool) and isinstance(task["executor"], str)
    assert task["status"] in ("RUNNING", "FAILED", "SUCCESSFUL") and task["type"] == "MANUAL"
    assert parse_time(task["createTime"]) <= parse_time(task["startTime"])
    for sub in task["subtasks"]:
        assert {
            "id",
            "name",
            "seriesId",
            "description",
            "timeout",
            "status",
            "operation",
            "executor",
            "runTime",
            "createTime",
            "startTime",
            "finishTime",
            "nodeType",
            "parallelIdx",
            "upstreams",
            "downstreams",
            "prohibitRollback",
        } <= set(sub)
        assert isinstance(sub["prohibitRollback"], bool) and isinstance(sub["runTime"], int)
        assert parse_time(sub["createTime"]) == parse_time(task["createTime"])


# ---- the server ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def users_file(tmp_path_factory):
    from deployments.auth import add_user

    path = tmp_path_factory.mktemp("ocp-users") / "users.toml"
    add_user(path, ADMIN, PASSWORD, ["ADMIN"])
    add_user(path, TARGET, "target-pass-1", ["HOST_VIEWER"])
    add_user(path, "bystander", "bystander-pass-1", ["HOST_VIEWER"])
    return path


@pytest.fixture(scope="module")
def server(box, users_file, tmp_path_factory, prefect_api):
    """`ocp-restart serve` behind a (simulated) trusted proxy on loopback, a login limit of 3."""
    home = tmp_path_factory.mktemp("ocp-client-home")
    saved = {k: os.environ.get(k) for k in ("OCP_RESTART_TRUSTED_PROXIES", "OCP_RESTART_LOGIN_LIMIT")}
    os.environ.update(OCP_RESTART_TRUSTED_PROXIES="127.0.0.1", OCP_RESTART_LOGIN_LIMIT=str(LOGIN_LIMIT))
    try:
        api = ApiServer(box.inventory_path, users_file, home).start()
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    yield api
    api.kill()


@pytest.fixture
def ocp(server):
    with OcpClient(server.url, ADMIN, PASSWORD) as client:
        yield client


@pytest.fixture(scope="module")
def restarted(server, box):
    """Hosts 1001 and 1002 restarted through the API, as a client does: (task, pids before)."""
    before = {h.id: h.agent_pids() for h in box.hosts}
    with OcpClient(server.url, ADMIN, PASSWORD) as client:
        submitted = client.data("POST", RESTART, body={"hostIds": [1001, 1002]})
        return client.follow(submitted["id"]), before


# ---- the tests -------------------------------------------------------------------------------------------------


class TestProbes:
    def test_time_answers_without_credentials(self, server):
        """GET /api/v2/time: no authentication; the server time as text, close to ours (OBD polls it)."""
        response = httpx.get(server.url + "/api/v2/time", timeout=10)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        assert abs((parse_time(response.text) - datetime.now(UTC)).total_seconds()) < 5

    def test_info_names_the_application(self, ocp, server):
        """GET /api/v2/info: the documented fields, bare (the sample has no envelope); credentials required."""
        response = ocp.request("GET", "/api/v2/info")
        assert response.status_code == 200
        info = response.json()
        assert {
            "name",
            "group",
            "artifact",
            "buildTime",
            "buildVersion",
            "buildJavaVersion",
            "springBootVersion",
        } <= set(info)
        assert info["name"] and info["buildVersion"]
        assert httpx.get(server.url + "/api/v2/info", timeout=10).status_code == 401


class TestRestartAndFollow:
    def test_submit_then_poll_the_detail_until_successful(self, restarted):
        """The detail reaches SUCCESSFUL with every documented field; finishTime once finished."""
        task, _ = restarted
        assert task["status"] == "SUCCESSFUL" and task["operation"] == "EXECUTE"
        assert_wrapped_task_instance(task, ADMIN)
        assert parse_time(task["finishTime"]) >= parse_time(task["startTime"])
        assert len(task["subtasks"]) == 14
        for sub in task["subtasks"]:
            assert sub["status"] == "SUCCESSFUL" and sub["executor"] == task["executor"]
            assert parse_time(sub["startTime"]) <= parse_time(sub["finishTime"])

    def test_the_submit_answer_keeps_the_seed_shape(self, server):
        """The POST answers as the batch-restart page's sample: creator a string, context with host ids as strings;
        host ids given as numeric strings, as that context holds them, are taken."""
        with OcpClient(server.url, ADMIN, PASSWORD) as client:
            data = client.data("POST", "/compute/hosts/batchRestartAgents", body={"hostIds": ["1003"]})
            assert data["creator"] == ADMIN and data["context"]["listMap"] == {"host_ids": ["1003"]}
            assert data["status"] == "RUNNING" and data["taskDefinitionId"] == -1
            assert client.follow(data["id"])["status"] == "SUCCESSFUL"

    def test_the_host_agent_shows_the_pids_of_the_hosts_own_pid_files(self, ocp, restarted, box):
        """GET .../hosts/{id}/agent: AVAILABLE, each process STARTED with the pid in its run/<name>.pid."""
        _, before = restarted
        for host_id in (1001, 1002):
            agent = ocp.data("GET", f"/api/v2/compute/hosts/{host_id}/agent")
            assert agent["status"] == "AVAILABLE" and agent["hostId"] == host_id
            on_host = box.host(host_id).agent_pids()
            shown = {p["alias"]: p["pid"] for p in agent["processes"]}
            assert shown == on_host and all(p["status"] == "STARTED" for p in agent["processes"])
            assert all(shown[name] != before[host_id][name] for name in shown)
            listed = ocp.data("GET", f"/compute/hosts/{host_id}/agent/processes", params={"page": 1, "size": 2})
            assert listed["page"] == {"number": 1, "size": 2, "totalElements": 3, "totalPages": 2}


class TestFailAndRetry:
    def test_a_failed_host_is_retried_with_an_empty_post(self, ocp, box, restarted):
        """Start fails on 1003: the task FAILs, its agent shows OFFLINE and STOPPED; after the fault is cleared,
        POST .../retry with no body answers the WrappedTaskInstance (RETRY) and the task ends SUCCESSFUL."""
        host = box.host(1003)
        host.set_fault("start_fail")
        try:
            task_id = ocp.data("POST", RESTART, body={"hostIds": [1003]})["id"]
            failed = ocp.follow(task_id)
            assert failed["status"] == "FAILED" and failed["finishTime"]
            start = next(s for s in failed["subtasks"] if s["name"] == "Start all OCP agent processes")
            assert start["status"] == "FAILED" and start["finishTime"]
            agent = ocp.data("GET", "/api/v2/compute/hosts/1003/agent")
            assert agent["status"] == "OFFLINE"
            assert [(p["status"], p["pid"]) for p in agent["processes"]] == [("STOPPED", 0)] * 3
            assert set(host.agent_pids().values()) == {None}
        finally:
            host.clear_fault("start_fail")
        response = ocp.http.post(f"{TASKS}/{task_id}/retry", auth=ocp.auth)  # no body, no Content-Type
        assert response.status_code == 200, response.text
        retried = response.json()["data"]
        assert retried["operation"] == "RETRY" and retried["status"] == "RUNNING"
        assert_wrapped_task_instance(retried, ADMIN)
        done = ocp.follow(task_id)
        assert done["status"] == "SUCCESSFUL"
        assert next(s for s in done["subtasks"] if s["id"] == start["id"])["runTime"] == 2
        shown = {p["alias"]: p["pid"] for p in ocp.data("GET", "/api/v2/compute/hosts/1003/agent")["processes"]}
        assert shown == host.agent_pids()

    def test_retrying_a_successful_task_is_refused_as_documented(self, ocp, restarted, server):
        """OCP's 4007; the status it comes with is one the openapi document declares for the route."""
        task, _ = restarted
        response = ocp.request("POST", f"{TASKS}/{task['id']}/retry")
        assert response.json()["error"]["code"] == 4007
        spec = httpx.get(server.url + "/openapi.json", timeout=10).json()
        declared = spec["paths"]["/api/v2/tasks/instances/{task_id}/retry"]["post"]["responses"]
        assert str(response.status_code) in declared


class TestTaskList:
    def test_every_filter(self, ocp, restarted):
        """name (fuzzy, any case), status (comma list and repeated), type, hostId: BasicTaskInstance items."""
        task, _ = restarted
        everything = ocp.data("GET", TASKS, params={"size": 100})
        assert everything["page"]["totalElements"] >= 2
        item = next(t for t in everything["contents"] if t["id"] == task["id"])
        assert {"id", "name", "creator", "status", "startTime", "finishTime", "subtasks"} <= set(item)
        assert item["creator"]["name"] == ADMIN and item["finishTime"] == task["finishTime"]
        assert set(item["subtasks"][0]) >= {"id", "name", "description", "status", "operation"}

        def ids(**params) -> set[int]:
            return {t["id"] for t in ocp.data("GET", TASKS, params={"size": 100, **params})["contents"]}

        assert task["id"] in ids(name="restart ocp") and not ids(name="no such task")
        assert task["id"] in ids(status="SUCCESSFUL") and task["id"] in ids(status=["RUNNING", "SUCCESSFUL"])
        repeated = ocp.http.get(
            TASKS, params=[("status", "FAILED"), ("status", "SUCCESSFUL"), ("size", "100")], auth=ocp.auth
        ).json()["data"]
        assert task["id"] in {t["id"] for t in repeated["contents"]}
        assert task["id"] not in ids(status="FAILED")
        assert task["id"] in ids(type="MANUAL") and not ids(type="SCHEDULED")
        assert task["id"] in ids(hostId=1001) and task["id"] not in ids(hostId=1003)

    def test_sort_and_odd_paging(self, ocp, restarted):
        """sort id,asc / id,desc; page 0 is page 1; size 5000 is answered as 2000; a page past the end is empty."""
        ascending = [t["id"] for t in ocp.data("GET", TASKS, params={"sort": "id,asc", "size": 100})["contents"]]
        descending = [t["id"] for t in ocp.data("GET", TASKS, params={"sort": "id,desc", "size": 100})["contents"]]
        assert ascending == sorted(ascending) and descending == ascending[::-1]
        by_start = [t["startTime"] for t in ocp.data("GET", TASKS, params={"sort": "startTime,asc"})["contents"]]
        assert by_start == sorted(by_start, key=parse_time)
        first = ocp.data("GET", TASKS, params={"page": 0, "size": 1})
        assert first["page"]["number"] == 1 and first["contents"][0]["id"] == descending[0]
        assert ocp.data("GET", TASKS, params={"page": -5})["page"]["number"] == 1
        big = ocp.data("GET", TASKS, params={"size": 5000})["page"]
        assert big["size"] == 2000 and big["totalElements"] == len(ascending)
        second = ocp.data("GET", TASKS, params={"page": 2, "size": 1})
        assert second["contents"][0]["id"] == descending[1] and second["page"]["totalPages"] == len(ascending)
        assert ocp.data("GET", TASKS, params={"page": 999, "size": 10})["contents"] == []

    def test_host_list_filters(self, ocp):
        """keyword (name or address), status, includedServiceType / excludedServiceType, sort."""
        hosts = ocp.data("GET", "/api/v2/compute/hosts", params={"sort": "id,desc"})["contents"]
        assert [h["id"] for h in hosts] == [1003, 1002, 1001]
        one = ocp.data("GET", "/api/v2/compute/hosts", params={"keyword": hosts[0]["innerIpAddress"]})
        assert [h["id"] for h in one["contents"]] == [1003]
        hosts_page = ocp.data("GET", "/api/v2/compute/hosts", params={"status": "ONLINE,OFFLINE"})["page"]
        assert hosts_page["totalElements"] == 3
        assert ocp.data("GET", "/api/v2/compute/hosts", params={"status": "NEW"})["contents"] == []
        assert ocp.data("GET", "/api/v2/compute/hosts", params={"excludedServiceType": "OCP_AGENT"})["contents"] == []
        agents = ocp.data("GET", "/api/v2/compute/hosts", params={"includedServiceType": "OCP_AGENT"})["contents"]
        assert len(agents) == 3


@pytest.fixture(scope="module")
def key(server, users_file):
    """A key pair made with the CLI while the server runs (it reads the users file again by itself)."""
    made = cli("user", "access-key", ADMIN, "--users", str(users_file), "--json")
    assert made.returncode == 0, made.stderr
    pair = json.loads(made.stdout)
    assert set(pair) == {"accessKeyId", "accessKeySecret"} and pair["accessKeySecret"] not in made.stderr
    assert users_file.stat().st_mode & 0o777 == 0o600
    return pair["accessKeyId"], pair["accessKeySecret"]


class TestAccessKeys:
    def test_a_signed_request_with_the_right_key_is_answered(self, server, key, restarted):
        """GET with query parameters (sorted and encoded in the signature), and a signed POST with a body."""
        task, _ = restarted
        with OcpClient(server.url, access_key=key) as client:
            params = {"status": ["SUCCESSFUL", "FAILED"], "size": 5, "name": "OCP agent"}
            listed = client.data("GET", TASKS, params=params)
            assert listed["page"]["size"] == 5 and listed["contents"]
            assert client.task(task["id"])["creator"]["name"] == ADMIN
            response = client.request("POST", RESTART, body={"hostIds": [4242]})
            assert response.status_code == 404 and response.json()["error"]["code"] == 7005  # signed, then refused

    def test_a_wrong_signature_is_401(self, server, key):
        """One changed character of the signature: 401 in OCP's envelope; the secret appears nowhere."""
        with OcpClient(server.url, access_key=key) as client:
            response = client.request("GET", TASKS, tamper=True)
        assert response.status_code == 401 and response.json()["error"]["code"] == 3000
        assert key[1] not in response.text

    def test_a_date_20_minutes_old_is_401(self, server, key):
        """OCP's window is under 15 minutes: 20 minutes old is refused naming the Date, 14 minutes old is taken."""
        stale = datetime.now(UTC) - timedelta(minutes=20)
        with OcpClient(server.url, access_key=key) as client:
            response = client.request("GET", TASKS, date=stale)
            fresh = client.request("GET", TASKS, date=datetime.now(UTC) - timedelta(minutes=14))
        assert response.status_code == 401 and "Date" in response.json()["error"]["message"]
        assert fresh.status_code == 200

    def test_a_signed_body_must_be_bounded(self, server, key):
        """The body is read to check its MD5 before the sender is known: chunked (401) or over 1 MiB (413) is
        refused."""
        with OcpClient(server.url, access_key=key) as client:
            headers = client.signed_headers("POST", RESTART, b"", datetime.now(UTC), False)
            chunked = client.http.post(
                RESTART, content=iter([b'{"hostIds": [1001]}']), headers={**headers, "Content-Type": "application/json"}
            )
            big = client.http.post(
                RESTART, content=b" " * (1 << 20 | 1), headers={**headers, "Content-Type": "application/json"}
            )
        assert chunked.status_code == 401 and "Content-Length" in chunked.json()["error"]["message"]
        # Over 1 MiB, any body is refused before anything reads it, signed or not (#22).
        assert big.status_code == 413 and "at most 1048576 bytes" in big.json()["error"]["message"]

    def test_basic_auth_still_works_and_unknown_keys_are_401(self, server):
        """A key no user holds: 401; Basic auth goes on working beside access keys."""
        with OcpClient(server.url, access_key=("0" * 24, "not-the-secret-0123456789")) as client:
            assert client.request("GET", TASKS).status_code == 401
        with OcpClient(server.url, ADMIN, PASSWORD) as client:
            assert client.request("GET", TASKS).status_code == 200


class TestThrottle:
    def test_keyed_by_user_and_client_behind_a_trusted_proxy(self, server):
        """Behind the proxy (X-Forwarded-For from 127.0.0.1, a trusted proxy), bad logins for one user from one
        client throttle that pair only; a success clears the counter."""

        def status(user: str, password: str, client_ip: str) -> int:
            with OcpClient(server.url, user, password, headers={"X-Forwarded-For": f"{client_ip}"}) as client:
                return client.request("GET", "/api/v2/compute/hosts").status_code

        assert [status(TARGET, "wrong-1", "198.51.100.7") for _ in range(LOGIN_LIMIT)] == [401] * LOGIN_LIMIT
        assert status(TARGET, "target-pass-1", "198.51.100.7") == 429  # that user, from that client
        assert status(TARGET, "target-pass-1", "198.51.100.8") == 200  # that user, from another client
        assert status("bystander", "bystander-pass-1", "198.51.100.7") == 200  # another user, from that client
        for _ in range(2):  # limit - 1 failures, then a success: the counter starts again
            failures = [status("bystander", "wrong", "203.0.113.9") for _ in range(LOGIN_LIMIT - 1)]
            assert failures == [401] * (LOGIN_LIMIT - 1)
            assert status("bystander", "bystander-pass-1", "203.0.113.9") == 200


class TestStrictInputs:
    def test_a_boolean_is_no_number(self, ocp):
        """maxFailedPercent: false is refused (400 naming the field), not read as 0."""
        response = ocp.request("POST", RESTART, body={"hostIds": [1001], "maxFailedPercent": False})
        assert response.status_code == 400 and "maxFailedPercent" in response.json()["error"]["message"]


class TestAllEightOperations:
    """The eight operations of the reference's OCP Agent management pages (1300.ocpagent-management/100-800), called
    as that reference writes them, on one host (#21)."""

    def test_each_answers_as_documented_and_does_what_it_says(self, ocp, box):
        """100/600 read the agent; 800/700 stop and restart one worker process; 200/400 stop and restart the
        agent; 300/500 the same in batch: each task named and shaped as its sample, and the agent as expected."""
        host = 1003
        agent = ocp.data("GET", f"/compute/hosts/{host}/agent")  # 100
        assert agent["status"] == "AVAILABLE" and {p["alias"] for p in agent["processes"]} == {
            "ocp_agentd",
            "ocp_mgragent",
            "ocp_monagent",
        }
        page = ocp.data("GET", f"/compute/hosts/{host}/agent/processes", params={"page": 1, "size": 10})  # 600
        worker = next(p for p in page["contents"] if p["operable"])
        assert all(not p["operable"] for p in page["contents"] if p["alias"] != worker["alias"])

        stopped = ocp.data("POST", f"/compute/hosts/{host}/agent/processes/{worker['id']}/stop")  # 800
        assert stopped["id"] == worker["id"] and stopped["pid"] == 0 and stopped["status"] == "STOPPED"
        started = ocp.data("POST", f"/compute/hosts/{host}/agent/processes/{worker['id']}/restart")  # 700
        assert started["status"] == "STARTED" and started["pid"] not in (0, worker["pid"])

        def task(method_path: str, body: dict | None, name: str, nodes: int, single: bool) -> dict:
            submitted = ocp.data("POST", method_path, **({"body": body} if body is not None else {}))
            assert submitted["name"] == name and len(submitted["subtasks"]) == nodes
            if single:  # the single-host samples: task-level hostId, context.stringMap.host_id, listMap {}
                assert submitted["hostId"] == host and submitted["context"]["stringMap"]["host_id"] == str(host)
                assert submitted["context"]["listMap"] == {}
            else:
                assert submitted["context"]["listMap"] == {"host_ids": [str(host)]}
            done = ocp.follow(submitted["id"])
            assert done["status"] == "SUCCESSFUL", done
            return done

        task(f"/compute/hosts/{host}/agent/stop", None, "Stop OCP agent", 3, True)  # 200
        assert not any(box.host(host).agent_pids().values())
        assert ocp.data("GET", f"/compute/hosts/{host}/agent")["status"] == "OFFLINE"
        task(f"/compute/hosts/{host}/agent/restart", None, "Restart OCP agent", 5, True)  # 400
        assert all(box.host(host).agent_pids().values())
        task("/compute/hosts/batchStopAgents", {"hostIds": [host]}, "Batch stop OCP agent", 5, False)  # 300
        assert not any(box.host(host).agent_pids().values())
        task(RESTART, {"hostIds": [host]}, "Batch restart OCP agent", 9, False)  # 500
        assert all(box.host(host).agent_pids().values())
        assert ocp.data("GET", f"/api/v2/compute/hosts/{host}/agent")["status"] == "AVAILABLE"
