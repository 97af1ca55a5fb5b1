"""Scale-out, for real: PostgreSQL (Debian's), a Prefect server on it, two process workers, the task store on the
same PostgreSQL; deployment runs from the CLI, the API and a schedule, all against sandbox hosts."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest
from conftest import ROOT, ApiServer
from services import PostgresServer, PrefectServer, Worker, prefect_exe

from deployments.auth import add_user

pytestmark = pytest.mark.timeout(900)
AUTH = ("ops", "ops-pass-123")


@pytest.fixture(scope="module")
def scale(tmp_path_factory):
    """PostgreSQL + Prefect server + 2 workers + 3 sandbox hosts + the API in deployment mode."""
    from deployments.sandbox import Sandbox

    base = tmp_path_factory.mktemp("scale")
    pg = PostgresServer()
    if not pg.available:
        pytest.fail("PostgreSQL is not installed: run ./bootstrap.sh --test (it installs Debian's postgresql)")
    started = time.monotonic()
    pg.start()
    server = workers = api = None
    try:  # whatever set-up step fails, what was started is stopped
        server = PrefectServer(base, pg.url("prefect", "asyncpg")).start()
        store_url = pg.url("ocp_restart", "psycopg")
        env = {**server.env, "OCP_RESTART_STORE_URL": store_url, "OCP_RESTART_HOME": str(base / "home")}
        env.pop("PREFECT_SERVER_DATABASE_CONNECTION_URL")
        users = base / "users.toml"
        add_user(users, AUTH[0], AUTH[1], ["ADMIN"])
        with Sandbox(3, first_host_id=3001) as box:
            deploy = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "deployments.cli",
                    "deploy",
                    "--host-ids",
                    "3001",
                    "--inventory",
                    str(box.inventory_path),
                ],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert deploy.returncode == 0, deploy.stderr
            workers = [Worker(base, name, env) for name in ("worker-a", "worker-b")]
            saved = dict(os.environ)
            os.environ.update(
                {
                    "OCP_RESTART_STORE_URL": store_url,
                    "PREFECT_API_URL": server.api_url,
                    "OCP_RESTART_LAUNCHER": "deployment",
                }
            )
            (base / "home").mkdir(exist_ok=True)
            api = ApiServer(box.inventory_path, users, base / "home")
            try:
                api.start()
            finally:
                os.environ.clear()
                os.environ.update(saved)
            print(f"scale-out set-up: {time.monotonic() - started:.1f} s")
            yield {"box": box, "env": env, "store_url": store_url, "server": server, "api": api, "base": base}
    finally:
        if api is not None:
            api.kill()
        for worker in workers or []:
            worker.stop()
        if server is not None:
            server.stop()
        pg.stop()


def wait_task(store_url: str, predicate, timeout: float = 120) -> dict:
    from flows.store import TaskStore

    deadline = time.monotonic() + timeout
    with TaskStore(store_url) as store:
        while time.monotonic() < deadline:
            store.reap_expired()
            for task_id in store.task_ids(limit=100)[0]:
                record = store.load(task_id).task
                task = {**vars(record), "host_ids": list(record.host_ids)}  # str enums equal their values
                if predicate(task):
                    return task
            time.sleep(0.5)
    raise AssertionError("no such task in time")


def test_a_deployment_run_is_picked_up_by_a_worker_and_recorded_in_postgres(scale):
    """`prefect deployment run`: a worker runs it; the task (MANUAL) is SUCCESSFUL in the PostgreSQL store."""
    started = time.monotonic()
    run = subprocess.run(
        [prefect_exe(), "deployment", "run", "batch-restart-agents/batch-restart"],
        env=scale["env"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    task = wait_task(scale["store_url"], lambda t: t["host_ids"] == [3001] and t["status"] != "RUNNING")
    assert task["status"] == "SUCCESSFUL" and task["type"] == "MANUAL"
    print(f"deployment run to SUCCESSFUL: {time.monotonic() - started:.1f} s")
    with httpx.Client(base_url=scale["server"].api_url, timeout=30) as prefect:
        # Our store records the end before the flow run returns (artifacts, Prefect's own teardown): wait for it.
        deadline = time.monotonic() + 30
        while True:
            runs = prefect.post(
                "/flow_runs/filter", json={"flow_runs": {"name": {"any_": [f"ocp-task-{task['id']}"]}}}
            ).json()
            if (runs and runs[0]["state"]["type"] == "COMPLETED") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert runs and runs[0]["state"]["type"] == "COMPLETED", runs
        artifacts = prefect.post(
            "/artifacts/filter", json={"artifacts": {"key": {"any_": [f"ocp-task-{task['id']}"]}}}
        ).json()
    assert artifacts and artifacts[0]["type"] == "table"
    assert "agentd pid" in str(artifacts[0]["data"])  # each pid column names its process (#13)
    logs = "".join((scale["base"] / w / "worker.log").read_text() for w in ("worker-a", "worker-b"))
    assert runs[0]["id"] in logs  # a worker, not anything else, ran it


def test_the_api_in_deployment_mode_hands_the_run_to_a_worker(scale):
    """POST with --launcher deployment: the task is created, a worker runs it, GET shows SUCCESSFUL."""
    box, api = scale["box"], scale["api"]
    before = box.host(3002).agent_pids()
    with httpx.Client(base_url=api.url, auth=AUTH, timeout=30) as client:
        response = client.post("/compute/hosts/batchRestartAgents", json={"hostIds": [3002]})
        assert response.status_code == 200, response.text
        task_id = response.json()["data"]["id"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            task = client.get(f"/api/v2/tasks/instances/{task_id}").json()["data"]
            if task["status"] != "RUNNING":
                break
            time.sleep(0.5)
    assert task["status"] == "SUCCESSFUL", task
    after = box.host(3002).agent_pids()
    assert all(after[n] != before[n] for n in after)


def test_the_deployment_launcher_runs_each_operations_own_deployment(scale):
    """POST agent/stop, then agent/restart, with --launcher deployment: each task goes to its template's deployment
    (stop-agent/batch-restart, restart-agent/batch-restart, registered by `deploy`); a worker runs it."""
    box, api = scale["box"], scale["api"]
    with httpx.Client(base_url=api.url, auth=AUTH, timeout=30) as client:
        for action, name in (("stop", "Stop OCP agent"), ("restart", "Restart OCP agent")):
            response = client.post(f"/api/v2/compute/hosts/3003/agent/{action}")
            assert response.status_code == 200, response.text
            assert response.json()["data"]["name"] == name
            task_id = response.json()["data"]["id"]
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                task = client.get(f"/api/v2/tasks/instances/{task_id}").json()["data"]
                if task["status"] != "RUNNING":
                    break
                time.sleep(0.5)
            assert task["status"] == "SUCCESSFUL", task
            pids = box.host(3003).agent_pids().values()
            assert (not any(pids)) if action == "stop" else all(pids)


def test_a_scheduled_run_fires_and_is_listed_as_scheduled(scale):
    """An interval schedule fires; the run completes and the API lists its task with type SCHEDULED."""
    box, env = scale["box"], scale["env"]
    deploy = subprocess.run(
        [
            sys.executable,
            "-m",
            "deployments.cli",
            "deploy",
            "--name",
            "every-10s",
            "--interval",
            "10",
            "--timezone",
            "Asia/Shanghai",
            "--host-ids",
            "3003",
            "--inventory",
            str(box.inventory_path),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert deploy.returncode == 0, deploy.stderr
    try:
        task = wait_task(
            scale["store_url"], lambda t: t["type"] == "SCHEDULED" and t["status"] == "SUCCESSFUL", timeout=180
        )
    finally:
        subprocess.run(
            [prefect_exe(), "deployment", "delete", "batch-restart-agents/every-10s"],
            env=env,
            capture_output=True,
            timeout=60,
        )
    assert task["host_ids"] == [3003] and task["creator"] == "prefect-scheduler"
    with httpx.Client(base_url=scale["api"].url, auth=AUTH, timeout=30) as client:
        listed = client.get("/api/v2/tasks/instances", params={"size": 100}).json()["data"]["contents"]
    assert any(t["id"] == task["id"] and t["type"] == "SCHEDULED" for t in listed)
