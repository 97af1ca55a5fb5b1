"""The Prefect UI as an operator's console (issue #13), driven through Prefect's own REST API the way the UI drives
it: a real `prefect server` (PostgreSQL, API auth on), a process worker, sandbox hosts, the deployments registered
by `ocp-restart deploy`, a webhook automation received by a loopback listener."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest
from conftest import ROOT, free_port, strays
from services import PostgresServer, PrefectServer, Worker, prefect_exe, terminate

pytestmark = pytest.mark.timeout(900)
AUTH = "ops-admin:prefect-s3cret"
CANARY = "pg-canary-7f3a9c"  # the store URL's password: it must appear in no Prefect record
STOP, START = "Stop all OCP agent processes", "Start all OCP agent processes"


class Hooks(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        Hooks.received.append(json.loads(body or b"{}"))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """PostgreSQL, a Prefect server with API auth, one worker, 3 sandbox hosts, both deployments, a webhook."""
    from deployments.sandbox import Sandbox

    base = tmp_path_factory.mktemp("ui")
    pg = PostgresServer()
    if not pg.available:
        pytest.fail("PostgreSQL is not installed: run ./bootstrap.sh --test")
    pg.start()
    server = worker = hooks = None
    try:  # whatever set-up step fails, what was started is stopped
        server = PrefectServer(base, pg.url("prefect", "asyncpg"), auth=AUTH).start()
        store_url = pg.url("ocp_restart", "psycopg").replace("postgres@", f"postgres:{CANARY}@")
        env = {**server.env, "OCP_RESTART_STORE_URL": store_url, "OCP_RESTART_HOME": str(base / "home")}
        env.pop("PREFECT_SERVER_DATABASE_CONNECTION_URL")
        env.pop("PREFECT_SERVER_API_AUTH_STRING")
        hook_port = free_port()
        hooks = HTTPServer(("127.0.0.1", hook_port), Hooks)
        threading.Thread(target=hooks.serve_forever, daemon=True).start()
        with Sandbox(3, first_host_id=4001) as box:
            deploy = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "deployments.cli",
                    "deploy",
                    "--host-ids",
                    "4001",
                    "--inventory",
                    str(box.inventory_path),
                    "--notify-webhook",
                    f"http://127.0.0.1:{hook_port}/hook",
                ],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert deploy.returncode == 0, deploy.stderr
            worker = Worker(base, "worker", env)
            with httpx.Client(base_url=server.api_url, auth=tuple(AUTH.split(":")), timeout=30) as prefect:
                yield {
                    "box": box,
                    "env": env,
                    "server": server,
                    "prefect": prefect,
                    "store_url": store_url,
                    "base": base,
                }
    finally:
        if worker is not None:
            worker.stop()
        if hooks is not None:
            hooks.shutdown()
        if server is not None:
            server.stop()
        pg.stop()


# -- driving Prefect as its UI does ---------------------------------------------------------------------------


def start_run(prefect, deployment: str, parameters: dict) -> str:
    dep = prefect.get(f"/deployments/name/{deployment}")
    assert dep.status_code == 200, dep.text
    run = prefect.post(f"/deployments/{dep.json()['id']}/create_flow_run", json={"parameters": parameters})
    assert run.status_code in (200, 201), run.text
    return run.json()["id"]


def wait_state(
    prefect,
    run_id: str,
    done=lambda s: s["type"] in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED"),
    timeout: float = 180,
) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        run = prefect.get(f"/flow_runs/{run_id}").json()
        if run.get("state") and done(run["state"]):
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"flow run {run_id} is {run.get('state')} after {timeout} s")
        time.sleep(0.5)


def set_state(prefect, run_id: str, type_: str, name: str, message: str = "") -> None:
    answer = prefect.post(
        f"/flow_runs/{run_id}/set_state",
        json={"state": {"type": type_, "name": name, "message": message}, "force": True},
    )
    assert answer.status_code in (200, 201) and answer.json()["status"] == "ACCEPT", answer.text


def task_of(prefect, run: dict) -> int:
    """The OCP task a flow run is linked to, by its tag."""
    tags = prefect.get(f"/flow_runs/{run['id']}").json()["tags"]
    return next(int(t.split(":")[1]) for t in tags if t.startswith("ocp-task:"))


def load(ui, task_id: int):
    from flows.store import TaskStore

    with TaskStore(ui["store_url"]) as store:
        return store.load(task_id)


def stops_on(host) -> int:
    return sum(1 for _, edge, what in host.audit() if edge == "begin" and what == "stop")


# -- tests -------------------------------------------------------------------------------------------------------


def test_the_prefect_api_refuses_clients_without_the_auth_string(ui):
    """The scale-out Prefect server runs with API auth: no credentials 401, the right ones 200."""
    url = ui["server"].api_url + "/flows/filter"
    assert httpx.post(url, json={}, timeout=10).status_code == 401
    assert ui["prefect"].post("/flows/filter", json={}).status_code == 200


def test_a_failed_task_fails_the_flow_run_naming_the_host_and_prefect_retry_continues_it(ui):
    """One host fails its start: the run is FAILED with the host and next step in its message, the webhook fires;
    Prefect's Retry (AwaitingRetry, forced, as the UI sends it) continues the same task: no host is stopped again,
    the task ends SUCCESSFUL with runTime 2 on the retried start."""
    box, prefect = ui["box"], ui["prefect"]
    bad, good = box.host(4002), box.host(4003)
    bad.set_fault("start_fail")
    Hooks.received.clear()
    run_id = start_run(
        prefect,
        "batch-restart-agents/batch-restart",
        {"host_ids": [4002, 4003], "options": {"timeouts": {"start_all": 6}}},
    )
    run = wait_state(prefect, run_id)
    assert run["state"]["type"] == "FAILED", run["state"]
    message = run["state"]["message"]
    assert "host 4002" in message and "FAILED" in message and "retry" in message, message
    task_id = task_of(prefect, run)
    assert run["name"] == f"ocp-task-{task_id}"
    deadline = time.monotonic() + 30
    while not Hooks.received and time.monotonic() < deadline:
        time.sleep(0.2)
    assert Hooks.received and Hooks.received[0]["flow_run"] == f"ocp-task-{task_id}", Hooks.received
    assert Hooks.received[0]["state"] == "Failed" and "host 4002" in Hooks.received[0]["message"]

    stops = {h.id: stops_on(h) for h in (bad, good)}
    bad.clear_fault("start_fail")
    set_state(prefect, run_id, "SCHEDULED", "AwaitingRetry", "Retry from the UI")
    run = wait_state(
        prefect, run_id, done=lambda s: s["type"] in ("COMPLETED", "FAILED", "CRASHED") and s["name"] != "AwaitingRetry"
    )
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert task_of(prefect, run) == task_id
    record = load(ui, task_id)
    assert record.task.status == "SUCCESSFUL"
    assert {h.id: stops_on(h) for h in (bad, good)} == stops  # nobody was stopped again
    start = next(s for s in record.subtasks if s.name == START and s.host_id == 4002)
    assert start.run_time == 2 and start.operation == "RETRY"


def test_clean_and_threshold_isolated_runs_are_told_apart(ui):
    """A clean run is Completed; one that succeeded without an isolated host is 'Completed with isolated hosts'."""
    box, prefect = ui["box"], ui["prefect"]
    clean = wait_state(prefect, start_run(prefect, "batch-restart-agents/batch-restart", {"host_ids": [4001]}))
    assert (clean["state"]["type"], clean["state"]["name"]) == ("COMPLETED", "Completed")
    box.host(4003).set_fault("start_fail")
    try:
        run = wait_state(
            prefect,
            start_run(
                prefect,
                "batch-restart-agents/batch-restart",
                {"host_ids": [4001, 4003], "options": {"max_failed_hosts": 1, "timeouts": {"start_all": 6}}},
            ),
        )
    finally:
        box.host(4003).clear_fault("start_fail")
        box.host(4003).agentctl("start")
    assert (run["state"]["type"], run["state"]["name"]) == ("COMPLETED", "Completed with isolated hosts")
    assert "host 4003" in run["state"]["message"]


def test_task_operations_run_as_deployment_runs_like_the_cli(ui):
    """retry and skip_subtask started as runs of the operations deployment do what the CLI does; their runs are
    named after the task and tagged with it."""
    box, prefect = ui["box"], ui["prefect"]
    host = box.host(4002)
    host.set_fault("start_fail")
    failed = wait_state(
        prefect,
        start_run(
            prefect,
            "batch-restart-agents/batch-restart",
            {"host_ids": [4002], "options": {"timeouts": {"start_all": 6}}},
        ),
    )
    task_id = task_of(prefect, failed)
    start = next(s for s in load(ui, task_id).subtasks if s.name == START)
    host.clear_fault("start_fail")
    assert host.agentctl("start").returncode == 0  # fixed by hand
    skip = wait_state(
        prefect,
        start_run(
            prefect,
            "ocp-task-operation/batch-restart-operations",
            {"task_id": task_id, "action": "skip_subtask", "subtask_id": start.id},
        ),
    )
    assert skip["state"]["type"] == "COMPLETED", skip["state"]
    assert skip["name"] == f"ocp-task-{task_id}-skip-subtask" and f"ocp-task:{task_id}" in skip["tags"]
    record = load(ui, task_id)
    skipped = record.subtask(start.id)
    assert record.task.status == "SUCCESSFUL" and skipped.operation == "SKIP" and skipped.status == "SUCCESSFUL"

    host.set_fault("start_fail")
    failed = wait_state(
        prefect,
        start_run(
            prefect,
            "batch-restart-agents/batch-restart",
            {"host_ids": [4002], "options": {"timeouts": {"start_all": 6}}},
        ),
    )
    task_id = task_of(prefect, failed)
    host.clear_fault("start_fail")
    retry = wait_state(
        prefect,
        start_run(prefect, "ocp-task-operation/batch-restart-operations", {"task_id": task_id, "action": "retry"}),
    )
    assert retry["state"]["type"] == "COMPLETED", retry["state"]
    assert load(ui, task_id).task.status == "SUCCESSFUL"


def test_cancel_from_prefect_kills_the_hung_stop_and_says_what_is_left(ui):
    """Cancel (CANCELLING, forced, as the UI sends it) while a stop hangs: the command is gone from the host within
    5 s, the task FAILED with the reason in the stop's log, the artifacts published naming the stopped agent."""
    box, prefect = ui["box"], ui["prefect"]
    host = box.host(4003)
    host.set_fault("stop_hang")
    try:
        run_id = start_run(prefect, "batch-restart-agents/batch-restart", {"host_ids": [4003]})
        deadline = time.monotonic() + 120

        def hanging() -> int | None:
            """The task id once its Stop is RUNNING and `ocp_agentctl stop` hangs on the host (a `sleep` alone
            could be left over from an earlier test)."""
            tags = prefect.get(f"/flow_runs/{run_id}").json()["tags"]
            task = next((int(t.split(":")[1]) for t in tags if t.startswith("ocp-task:")), None)
            if task is None or next(s for s in load(ui, task).subtasks if s.name == STOP).status != "RUNNING":
                return None
            return task if any(comm == "sleep" for _, comm in strays(host)) else None

        while (task_id := hanging()) is None:
            assert time.monotonic() < deadline, "the stop never hung on the host"
            time.sleep(0.2)
        cancelled_at = time.monotonic()
        set_state(prefect, run_id, "CANCELLING", "Cancelling")
        while strays(host):
            assert time.monotonic() - cancelled_at < 5, f"still on the host: {strays(host)}"
            time.sleep(0.1)
        wait_state(prefect, run_id, done=lambda s: s["type"] in ("CANCELLED", "FAILED", "CRASHED"))
    finally:
        host.clear_fault("stop_hang")
    record = load(ui, task_id)
    assert record.task.status == "FAILED"
    stop = next(s for s in record.subtasks if s.name == STOP)
    from flows.store import TaskStore

    with TaskStore(ui["store_url"]) as store:
        assert stop.status == "FAILED" and "SIGTERM" in store.log(stop.id)
    summary = prefect.post("/artifacts/filter", json={"artifacts": {"key": {"any_": [f"ocp-task-{task_id}-summary"]}}})
    assert summary.json() and "4003" in summary.json()[0]["data"] and "STOPPED" in summary.json()[0]["data"]
    host.agentctl("start")


def test_a_ui_run_cannot_widen_what_the_deployment_allows(ui, tmp_path):
    """Another inventory, or trusting new host keys, in a UI run: the run FAILS saying so; nothing is recorded."""
    prefect = ui["prefect"]
    other = tmp_path / "other.toml"
    other.write_text(ui["box"].inventory_path.read_text())
    for parameters, refused in (
        ({"host_ids": [4001], "inventory": str(other)}, "inventory"),
        ({"host_ids": [4001], "options": {"accept_new_host_keys": True}}, "accept_new_host_keys"),
    ):
        run = wait_state(prefect, start_run(prefect, "batch-restart-agents/batch-restart", parameters))
        assert run["state"]["type"] == "FAILED" and f"{refused}" in run["state"]["message"], run["state"]
        assert not [t for t in run["tags"] if t.startswith("ocp-task:")]


def test_no_prefect_record_holds_the_store_password(ui):
    """The store URL (with a password) is no flow parameter, and its password is in no flow run, log, artifact or
    event Prefect keeps."""
    prefect = ui["prefect"]
    runs = prefect.post("/flow_runs/filter", json={"limit": 200}).json()
    assert runs and all("store_url" not in r["parameters"] for r in runs)
    for path, body in (
        ("/flow_runs/filter", {"limit": 200}),
        ("/logs/filter", {"limit": 200}),
        ("/artifacts/filter", {"limit": 200}),
        ("/events/filter", {"limit": 50}),
        ("/deployments/filter", {"limit": 50}),
    ):
        answer = prefect.post(path, json=body)
        assert answer.status_code == 200, (path, answer.text)
        assert CANARY not in answer.text, path


def test_logs_tab_holds_the_agent_output_and_no_noise(ui):
    """Each subtask's log lines (the agent's commands and output) are in its task run's Prefect log; no
    'NoneType: None' lines."""
    prefect = ui["prefect"]
    run = wait_state(prefect, start_run(prefect, "batch-restart-agents/batch-restart", {"host_ids": [4001]}))
    deadline = time.monotonic() + 60
    while True:  # Prefect ships log lines in batches, after the run's state
        logs = prefect.post("/logs/filter", json={"logs": {"flow_run_id": {"any_": [run["id"]]}}, "limit": 200}).json()
        text = "\n".join(entry["message"] for entry in logs)
        if "restarted: ocp_agentd" in text or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert "ocp_agentctl stop" in text and "restarted: ocp_agentd" in text, text[-2000:]
    assert "NoneType: None" not in text


def test_deploy_serve_runs_a_flow_run_to_successful(ui):
    """`ocp-restart deploy --serve`: a deployment run is executed by the serving process and ends SUCCESSFUL."""
    env = ui["env"]
    log = open(ui["base"] / "serve.log", "ab")
    served = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "deployments.cli",
            "deploy",
            "--serve",
            "--name",
            "served",
            "--host-ids",
            "4001",
            "--inventory",
            str(ui["box"].inventory_path),
        ],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        prefect = ui["prefect"]
        deadline = time.monotonic() + 90
        while prefect.get("/deployments/name/batch-restart-agents/served").status_code != 200:
            assert served.poll() is None and time.monotonic() < deadline, (ui["base"] / "serve.log").read_text()
            time.sleep(0.5)
        run = subprocess.run(
            [prefect_exe(), "deployment", "run", "batch-restart-agents/served"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        runs = prefect.post("/flow_runs/filter", json={"deployments": {"name": {"any_": ["served"]}}}).json()
        done = wait_state(prefect, runs[0]["id"])
        assert done["state"]["type"] == "COMPLETED", (done["state"], (ui["base"] / "serve.log").read_text()[-3000:])
        assert load(ui, task_of(prefect, done)).task.status == "SUCCESSFUL"
    finally:
        terminate(served)
        log.close()


def test_a_failed_run_can_pause_and_ask_the_operator(ui):
    """ask_on_failure_seconds: the failed run pauses with a typed form; resuming it with action=retry (as the UI's
    Resume form does) retries the task, which ends SUCCESSFUL; the run Completed."""
    box, prefect = ui["box"], ui["prefect"]
    host = box.host(4002)
    host.set_fault("start_fail")
    try:
        run_id = start_run(
            prefect,
            "batch-restart-agents/batch-restart",
            {"host_ids": [4002], "options": {"timeouts": {"start_all": 6}, "ask_on_failure_seconds": 120}},
        )
        paused = wait_state(prefect, run_id, done=lambda s: s["type"] in ("PAUSED", "COMPLETED", "FAILED"))
        assert paused["state"]["type"] == "PAUSED", paused["state"]
        task_id = task_of(prefect, paused)
        assert load(ui, task_id).task.status == "FAILED"
    finally:
        host.clear_fault("start_fail")
    answer = prefect.post(f"/flow_runs/{run_id}/resume", json={"run_input": {"action": "retry"}})
    assert answer.status_code in (200, 201) and answer.json()["status"] == "ACCEPT", answer.text
    done = wait_state(prefect, run_id)
    assert done["state"]["type"] == "COMPLETED", done["state"]
    record = load(ui, task_id)
    assert record.task.status == "SUCCESSFUL"
    assert next(s for s in record.subtasks if s.name == START).run_time == 2
