"""Prefect goes away in the middle of a restart (#22): the CLI's local server, a server of the user's own, and the
server a worker runs the flow for, each SIGKILLed while Stop all runs. The task store is the truth: the task ends,
no subtask stays RUNNING, no host is left with its agent stopped without a FAILED subtask saying so; once Prefect is
back, its flow run is read and compared with the task; retry brings a FAILED task to SUCCESSFUL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from conftest import ROOT
from services import PrefectServer, Worker, prefect_exe

from deployments.sandbox import Sandbox
from deployments.sandbox.procs import descendants, reap, signal_pids
from flows.store import TaskStore

pytestmark = pytest.mark.timeout(600)
STOP = "Stop all OCP agent processes"
# Prefect's client retries a call to a dead API ~70 s with its defaults (PREFECT_CLIENT_MAX_RETRIES=5, exponential
# backoff): the run's end waits for the engine's last state proposal that long. The tests take 2 retries to stay cheap;
# OCP_RESTART_OUTAGE_CLIENT_RETRIES=5 measures the default.
FEW_RETRIES = {"PREFECT_CLIENT_MAX_RETRIES": os.environ.get("OCP_RESTART_OUTAGE_CLIENT_RETRIES", "2")}


def stop_all_running(url: str, task_id: int = 1) -> bool:
    try:
        with TaskStore(url) as store:
            record = store.load(task_id)
    except Exception:
        return False
    return any(s.name == STOP and s.status.value == "RUNNING" for s in record.subtasks)


def poll(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


def kill_tree(pid: int) -> None:
    """SIGKILL a server we started (through the CLI or ourselves) and every process under it."""
    signal_pids([pid, *descendants([pid])], signal.SIGKILL)


def check_task(url: str, box) -> dict:
    """The task ended; no subtask RUNNING; every host whose agent is down has a FAILED subtask. The task record."""
    with TaskStore(url) as store:
        record = store.load(1)
    assert record.task.status.value != "RUNNING", record.task
    assert not [s for s in record.subtasks if s.status.value in ("RUNNING", "CANCELING")]
    failed = {s.host_id for s in record.subtasks if s.status.value == "FAILED"}
    down = {h.id for h in box.hosts if not all(h.agent_pids().values())}
    assert down <= failed, (down, failed)
    return {"status": record.task.status.value, "failed": sorted(failed), "down": sorted(down)}


def flow_run_of(api_url: str, task_id: int = 1, settle: float = 10) -> dict:
    """The flow run ``ocp-task-N`` as Prefect's API shows it (waiting up to ``settle`` s for a final state)."""
    deadline = time.monotonic() + settle
    with httpx.Client(base_url=api_url, timeout=30) as prefect:
        while True:
            runs = prefect.post("/flow_runs/filter", json={"flow_runs": {"name": {"any_": [f"ocp-task-{task_id}"]}}})
            found = runs.json()
            if (found and found[0]["state"]["type"] not in ("RUNNING", "PENDING")) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert found, f"no flow run ocp-task-{task_id}"
    return found[0]


def cli_env(home, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(OCP_RESTART_HOME=str(home), **extra)
    return env


def cli_run(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deployments.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_local_prefect_server_killed_during_stop_all(tmp_path):
    """#22: the CLI's local Prefect server SIGKILLed while Stop all runs: the run still ends SUCCESSFUL (exit 0),
    nothing RUNNING, every agent up; the next run starts the server again and the flow run is read from it."""
    home = tmp_path / "home"
    env = cli_env(home, OCP_RESTART_PREFECT_IDLE_SECONDS="30", **FEW_RETRIES)
    url = f"sqlite:///{home / 'tasks.db'}"
    state = home / "prefect" / "server.json"
    with Sandbox(3, stop_seconds=3) as box:
        run = subprocess.Popen(
            [sys.executable, "-m", "deployments.cli", "run", "--inventory", str(box.inventory_path), "--json"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        poll(lambda: stop_all_running(url), 120, "Stop all running")
        server = json.loads(state.read_text())
        kill_tree(server["server_pid"])
        killed = time.monotonic()
        out, err = run.communicate(timeout=180)
        ended = time.monotonic() - killed
        task = check_task(url, box)
        assert run.returncode == 0 and json.loads(out)["status"] == "SUCCESSFUL", (ended, err[-12000:])
        assert task["status"] == "SUCCESSFUL" and not task["down"]
        again = cli_run(env, "run", "--inventory", str(box.inventory_path), "--host-ids", "1001", "--json")
        assert again.returncode == 0, again.stderr[-2000:]
        back = json.loads(state.read_text())
        try:
            shown = flow_run_of(back["url"])
        finally:
            os.kill(back["pid"], signal.SIGTERM)  # the supervisor we (through the CLI) started; it stops its server
        assert shown["state"]["type"] == "COMPLETED", shown["state"]  # set by the next run from the store
    print(
        f"\nlocal Prefect server SIGKILLed mid-Stop all: run exit 0 SUCCESSFUL {ended:.1f} s after the kill "
        f"(client retries {FEW_RETRIES['PREFECT_CLIENT_MAX_RETRIES']}); "
        f"the next run (which starts the server again) set flow run ocp-task-1 to {shown['state']['type']}"
    )


class OwnServer:
    """A ``prefect server start`` of the user's own (SQLite), killed with SIGKILL and started again on its port."""

    def __init__(self, base) -> None:
        self.base, self.db = base, f"sqlite+aiosqlite:///{base / 'prefect.db'}"
        self.server = PrefectServer(base, self.db).start()

    @property
    def api_url(self) -> str:
        return self.server.api_url

    def kill(self) -> None:
        kill_tree(self.server.process.pid)
        reap(self.server.process, timeout=10)

    def restart(self) -> None:
        port = self.server.port
        self.server = PrefectServer(self.base, self.db)
        self.server.port, self.server.api_url = port, f"http://127.0.0.1:{port}/api"
        self.server.env["PREFECT_API_URL"] = self.server.api_url
        self.server.start()

    def stop(self) -> None:
        self.server.stop()


def test_a_prefect_server_of_ones_own_killed_during_stop_all(tmp_path):
    """#22: PREFECT_API_URL at a `prefect server start` of the user's own, SIGKILLed while Stop all runs: the run
    ends SUCCESSFUL (exit 0) and says Prefect went away; nothing RUNNING; once the server is started again, its flow
    run is read and compared with the task."""
    home = tmp_path / "home"
    url = f"sqlite:///{home / 'tasks.db'}"
    own = OwnServer(tmp_path)
    try:
        env = cli_env(home, PREFECT_API_URL=own.api_url, **FEW_RETRIES)
        with Sandbox(3, stop_seconds=3) as box:
            run = subprocess.Popen(
                [sys.executable, "-m", "deployments.cli", "run", "--inventory", str(box.inventory_path), "--json"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            poll(lambda: stop_all_running(url), 120, "Stop all running")
            own.kill()
            killed = time.monotonic()
            out, err = run.communicate(timeout=300)
            ended = time.monotonic() - killed
            task = check_task(url, box)
            assert run.returncode == 0 and json.loads(out)["status"] == "SUCCESSFUL", err[-3000:]
            assert "Prefect's API became unreachable" in err, err[-3000:]
            assert task["status"] == "SUCCESSFUL" and not task["down"]
            own.restart()
            before = flow_run_of(own.api_url, settle=0)["state"]["type"]
            again = cli_run(env, "run", "--inventory", str(box.inventory_path), "--host-ids", "1001", "--json")
            assert again.returncode == 0, again.stderr[-2000:]
            shown = flow_run_of(own.api_url)
            assert shown["state"]["type"] == "COMPLETED", shown["state"]
    finally:
        own.stop()
    print(
        f"\nown Prefect server SIGKILLed mid-Stop all: run exit 0 SUCCESSFUL {ended:.1f} s after the kill "
        f"(client retries {FEW_RETRIES['PREFECT_CLIENT_MAX_RETRIES']}); once restarted, flow run ocp-task-1 "
        f"shows {before}, after the next run "
        f"{shown['state']['type']}"
    )


def test_the_server_a_worker_runs_the_flow_for_killed_during_stop_all(tmp_path):
    """#22: a deployment run a process worker executes, its Prefect server SIGKILLed while Stop all runs: the flow
    run's process ends the task in the store (nothing RUNNING, no agent left down without a FAILED subtask); once the
    server is back the worker goes on and the flow run is read; a FAILED task is retried to SUCCESSFUL."""
    home = tmp_path / "home"
    home.mkdir()
    url = f"sqlite:///{home / 'tasks.db'}"
    own = OwnServer(tmp_path)
    worker = None
    try:
        env = cli_env(home, PREFECT_API_URL=own.api_url, **FEW_RETRIES)
        with Sandbox(3, stop_seconds=3) as box:
            ids = ",".join(str(h.id) for h in box.hosts)
            deploy = cli_run(env, "deploy", "--host-ids", ids, "--inventory", str(box.inventory_path))
            assert deploy.returncode == 0, deploy.stderr
            worker = Worker(tmp_path, "worker", env)
            started = subprocess.run(
                [prefect_exe(), "deployment", "run", "batch-restart-agents/batch-restart"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert started.returncode == 0, started.stdout + started.stderr
            poll(lambda: stop_all_running(url), 180, "Stop all running")
            own.kill()
            killed = time.monotonic()
            poll(lambda: task_ended(url), 300, "the task ended")
            ended = time.monotonic() - killed
            task = check_task(url, box)
            own.restart()
            before = flow_run_of(own.api_url, settle=30)["state"]
            outcome = task["status"]
            if outcome != "SUCCESSFUL":
                retried = cli_run(env, "retry", "1", "--json")
                assert json.loads(retried.stdout)["status"] == "SUCCESSFUL", retried.stderr[-3000:]
            assert all(all(h.agent_pids().values()) for h in box.hosts)
            again = subprocess.run(
                [prefect_exe(), "deployment", "run", "batch-restart-agents/batch-restart"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert again.returncode == 0, again.stdout + again.stderr
            poll(lambda: task_ended(url, 2), 180, "the next deployment run's task ended")
            shown = flow_run_of(own.api_url)
            assert shown["state"]["type"] == "COMPLETED", shown["state"]  # set by the next run from the store
    finally:
        if worker is not None:
            worker.stop()
        own.stop()
    print(
        f"\nworker's Prefect server SIGKILLed mid-Stop all: task {outcome} {ended:.1f} s after the kill, "
        f"failed hosts {task['failed']}; once restarted, flow run ocp-task-1 shows {before['type']} "
        f"({before['name']}: {before.get('message')}), after the next deployment run {shown['state']['type']}"
    )


def task_ended(url: str, task_id: int = 1) -> bool:
    try:
        with TaskStore(url) as store:
            return store.load(task_id).task.status.value != "RUNNING"
    except Exception:
        return False
