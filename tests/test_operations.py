"""Task operations against sandbox hosts: retry, skip, cancel, rollback, host locks, crash recovery."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from conftest import ROOT, ApiServer, strays, wait_for

from deployments.api.state import REAP_SECONDS
from deployments.auth import add_user
from flows.settings import Settings

pytestmark = pytest.mark.usefixtures("prefect_api")

AUTH = ("ops", "ops-pass-123")
STOP, START, PREPARE = "Stop all OCP agent processes", "Start all OCP agent processes", "Prepare restart OCP agent"


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Sandbox hosts, a task store, and an API server sharing that store."""
    from deployments.sandbox import Sandbox

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("OCP_RESTART_HOME", str(home))
    users = tmp_path / "users.toml"
    add_user(users, AUTH[0], AUTH[1], ["ADMIN"])
    with Sandbox(3) as box:
        server = ApiServer(box.inventory_path, users, home).start()
        try:
            with httpx.Client(base_url=server.url, auth=AUTH, timeout=30) as api:
                yield box, home, api
        finally:
            server.kill()


def run_flow(box, host_ids, **timeouts) -> dict:
    from flows.options import RestartOptions
    from flows.restart import restart_agents

    return restart_agents(
        host_ids=host_ids, inventory=str(box.inventory_path), options=RestartOptions(timeouts=timeouts)
    )


def task(api, task_id) -> dict:
    body = api.get(f"/api/v2/tasks/instances/{task_id}").json()
    assert body["successful"], body
    return body["data"]


def sub(instance, name, idx) -> dict:
    return next(s for s in instance["subtasks"] if s["name"] == name and s["parallelIdx"] == idx)


def log_of(api, task_id, subtask_id) -> str:
    return api.get(f"/api/v2/tasks/instances/{task_id}/subtasks/{subtask_id}/log").json()["data"]["log"]


def stops_on(host) -> int:
    """How many times `ocp_agentctl stop` began on the host, by the host's own record."""
    return sum(1 for _, edge, what in host.audit() if edge == "begin" and what == "stop")


class TestRetry:
    def test_retry_after_a_refused_stop_runs_only_what_failed_or_never_ran(self, env):
        """Stop hangs on 1002; after the fault is cleared, retry ends SUCCESSFUL; other hosts' done steps ran once."""
        box, home, api = env
        box.host(1002).set_fault("stop_hang")
        first = run_flow(box, [1001, 1002, 1003], stop_all=4)
        assert first["status"] == "FAILED" and sub(first, STOP, 1)["status"] == "FAILED"
        box.host(1002).clear_fault("stop_hang")
        response = api.post(f"/api/v2/tasks/instances/{first['id']}/retry")
        assert response.status_code == 200, response.text
        assert response.json()["data"]["status"] == "RUNNING" and response.json()["data"]["operation"] == "RETRY"
        final = wait_for(api, first["id"])
        assert final["status"] == "SUCCESSFUL", final
        retried = sub(final, STOP, 1)
        assert retried["runTime"] == 2 and retried["operation"] == "RETRY"
        assert "############{RETRY}{" in log_of(api, final["id"], retried["id"])
        for idx in (0, 2):
            for name in (PREPARE, "Restart pos proxy", STOP):
                done = sub(final, name, idx)
                assert done["runTime"] == 1 and done["operation"] == "EXECUTE"
                assert log_of(api, final["id"], done["id"]).count("############{") == 1
        assert stops_on(box.host(1001)) == 1 and stops_on(box.host(1003)) == 1  # the hosts' own record
        assert stops_on(box.host(1002)) == 2

    def test_retry_of_a_task_that_did_not_fail_is_refused(self, env):
        """A SUCCESSFUL task cannot be retried: 400 with OCP's 4007."""
        box, home, api = env
        done = run_flow(box, [1003])
        response = api.post(f"/api/v2/tasks/instances/{done['id']}/retry")
        assert response.status_code == 400 and response.json()["error"]["code"] == 4007
        assert "SUCCESSFUL" in response.json()["error"]["message"]


class TestCancel:
    def test_cancel_of_a_hung_stop_kills_it_on_the_host_within_5s(self, env):
        """cancel: the hung `stop` is killed on the host and the subtask is FAILED within 5 s; retry then completes."""
        box, home, api = env
        host = box.host(1001)
        host.set_fault("stop_hang")
        result: dict = {}
        runner = threading.Thread(target=lambda: result.update(run_flow(box, [1001, 1002])), daemon=True)
        runner.start()
        from flows.store import TaskStore

        with TaskStore(Settings().store_url) as store:
            deadline = time.monotonic() + 30
            while not store.task_ids()[0] and time.monotonic() < deadline:
                time.sleep(0.1)
            task_id = store.task_ids()[0][0]
        hung = sub(wait_for(api, task_id, until=lambda t: sub(t, STOP, 0)["status"] == "RUNNING"), STOP, 0)
        deadline = time.monotonic() + 10  # let `ocp_agentctl stop` reach its hang
        while not any(comm == "sleep" for _, comm in strays(host)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any(comm == "sleep" for _, comm in strays(host)), strays(host)
        # Log lines are written in batches every 0.25 s: the hung command is visible while it hangs.
        deadline = time.monotonic() + 2
        while "ocp_agentctl stop" not in log_of(api, task_id, hung["id"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "ocp_agentctl stop" in log_of(api, task_id, hung["id"])
        cancelled_at = time.monotonic()
        response = api.post(f"/api/v2/tasks/instances/{task_id}/subtasks/{hung['id']}/cancel")
        assert response.status_code == 200 and "data" not in response.json()
        failed = wait_for(api, task_id, until=lambda t: sub(t, STOP, 0)["status"] == "FAILED", timeout=10)
        took = time.monotonic() - cancelled_at
        assert took < 5, took
        assert sub(failed, STOP, 0)["operation"] == "CANCEL"
        assert "cancelled by an operator" in log_of(api, task_id, hung["id"])
        runner.join(timeout=30)
        assert result["status"] == "FAILED"
        assert strays(host) == []  # nothing of the cancelled command is left on the host
        host.clear_fault("stop_hang")
        assert api.post(f"/api/v2/tasks/instances/{task_id}/retry").status_code == 200
        assert wait_for(api, task_id)["status"] == "SUCCESSFUL"
        print(f"cancel to FAILED: {took:.2f} s")

    def test_cancel_of_a_subtask_that_is_not_running_is_refused(self, env):
        """Only a RUNNING subtask can be cancelled: 4007."""
        box, home, api = env
        done = run_flow(box, [1003])
        response = api.post(f"/api/v2/tasks/instances/{done['id']}/subtasks/{sub(done, STOP, 0)['id']}/cancel")
        assert response.status_code == 400 and response.json()["error"]["code"] == 4007


class TestSkipAndRollback:
    def test_skip_a_failed_start_after_fixing_it_by_hand(self, env):
        """Start fails on 1002; the operator starts it by hand and skips the step; the task completes."""
        box, home, api = env
        box.host(1002).set_fault("start_fail")
        first = run_flow(box, [1001, 1002])
        failed = sub(first, START, 1)
        assert failed["status"] == "FAILED" and sub(first, "Finish OCP agent operation", 1)["status"] == "PENDING"
        box.host(1002).clear_fault("start_fail")
        assert box.host(1002).agentctl("start").returncode == 0
        response = api.post(f"/api/v2/tasks/instances/{first['id']}/subtasks/{failed['id']}/skip")
        assert response.status_code == 200, response.text
        final = wait_for(api, first["id"])
        assert final["status"] == "SUCCESSFUL"
        skipped = sub(final, START, 1)
        assert skipped["status"] == "SUCCESSFUL" and skipped["operation"] == "SKIP"
        assert "skipped by an operator" in log_of(api, final["id"], skipped["id"])

    def test_skip_of_a_successful_subtask_is_refused(self, env):
        """Only FAILED subtasks can be skipped: 4010 (the task must have failed first: else 4007)."""
        box, home, api = env
        box.host(1002).set_fault("start_fail")
        first = run_flow(box, [1002])
        response = api.post(f"/api/v2/tasks/instances/{first['id']}/subtasks/{sub(first, PREPARE, 0)['id']}/skip")
        assert response.status_code == 400 and response.json()["error"]["code"] == 4010

    def test_rollback_brings_the_agent_back_where_it_was_stopped(self, env):
        """Stop hangs on 1002 after 1001 stopped; rollback starts 1001's agent again; all PENDING, SUCCESSFUL."""
        box, home, api = env
        box.host(1002).set_fault("stop_hang")
        first = run_flow(box, [1001, 1002], stop_all=4)
        assert first["status"] == "FAILED"
        assert box.host(1001).agent_pids()["ocp_agentd"] is None  # stopped, and the barrier keeps it so
        response = api.post(f"/api/v2/tasks/instances/{first['id']}/rollback")
        assert response.status_code == 200, response.text
        final = wait_for(api, first["id"])
        assert final["status"] == "SUCCESSFUL" and final["operation"] == "ROLLBACK", final
        assert {s["status"] for s in final["subtasks"]} == {"PENDING"}
        assert all(box.host(1001).agent_pids().values())
        assert all(box.host(1002).agent_pids().values())
        rolled = sub(final, STOP, 0)
        assert "############{ROLLBACK}{" in log_of(api, final["id"], rolled["id"])
        again = api.post(f"/api/v2/tasks/instances/{first['id']}/retry")
        assert again.status_code == 400 and again.json()["error"]["code"] == 4007


class TestLocksAndCrashes:
    def test_two_posts_racing_for_one_host(self, env):
        """Two concurrent POSTs for the same host: exactly one is accepted, the other gets 409 / 20021."""
        box, home, api = env
        box.host(1001).set_delays(stop_seconds=2)
        barrier = threading.Barrier(2)
        answers = []

        def post():
            with httpx.Client(base_url=str(api.base_url), auth=AUTH, timeout=30) as client:
                barrier.wait()
                answers.append(client.post("/compute/hosts/batchRestartAgents", json={"hostIds": [1001]}))

        threads = [threading.Thread(target=post) for _ in range(2)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        codes = sorted(a.status_code for a in answers)
        assert codes == [200, 409], [a.text for a in answers]
        refused = next(a for a in answers if a.status_code == 409).json()
        accepted = next(a for a in answers if a.status_code == 200).json()["data"]["id"]
        assert refused["error"]["code"] == 20021 and f"TaskId: {accepted}" in refused["error"]["message"]
        assert wait_for(api, accepted)["status"] == "SUCCESSFUL"

    def test_two_processes_racing_for_one_host(self, env):
        """Two `ocp-restart run` processes for the same host: one runs, the other exits 4 naming the holder."""
        box, home, api = env
        box.host(1002).set_delays(stop_seconds=2)
        command = [
            sys.executable,
            "-m",
            "deployments.cli",
            "run",
            "--inventory",
            str(box.inventory_path),
            "--host-ids",
            "1002",
            "--json",
        ]
        procs = [
            subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        outs = [p.communicate(timeout=120) for p in procs]
        codes = sorted(p.returncode for p in procs)
        assert codes == [0, 4], outs
        assert any("already in progress on the host 1002" in err for _, err in outs)

    def test_sigkill_of_the_flow_process_fails_the_task_within_the_lease_and_retry_completes(self, env):
        """The process running the flow dies mid-run: FAILED within the lease, a log line says why; retry finishes."""
        box, home, api = env
        box.host(1001).set_delays(stop_seconds=4)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "deployments.cli",
                "run",
                "--inventory",
                str(box.inventory_path),
                "--host-ids",
                "1001,1002",
                "--json",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "OCP_RESTART_LEASE_SECONDS": "3"},
        )
        from flows.store import TaskStore

        with TaskStore(Settings().store_url) as store:
            deadline = time.monotonic() + 60
            while not store.task_ids()[0] and time.monotonic() < deadline:
                time.sleep(0.1)
            task_id = store.task_ids()[0][0]
        wait_for(api, task_id, until=lambda t: sub(t, STOP, 0)["status"] == "RUNNING")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = time.monotonic()
        failed = wait_for(api, task_id, timeout=15)
        # The lease (3 s), then the server's next reap (every REAP_SECONDS, whether or not anyone reads), then slack.
        assert time.monotonic() - killed_at < 3 + REAP_SECONDS + 2
        assert failed["status"] == "FAILED"
        interrupted = sub(failed, STOP, 0)
        assert interrupted["status"] == "FAILED"
        assert "stopped renewing its lease" in log_of(api, task_id, interrupted["id"])
        box.host(1001).set_delays(stop_seconds=0)
        assert api.post(f"/api/v2/tasks/instances/{task_id}/retry").status_code == 200
        final = wait_for(api, task_id)
        assert final["status"] == "SUCCESSFUL", final
        assert all(box.host(1001).agent_pids().values()) and all(box.host(1002).agent_pids().values())


class TestRollingBatchesAndThreshold:
    def test_rolling_batches_never_overlap_their_stop_windows(self, env):
        """batchSize 2 over 5 hosts: by the hosts' own clocks, no stop of batch i+1 begins before batch i ended."""
        box, home, api = env
        from deployments.sandbox import Sandbox

        with Sandbox(5, first_host_id=2001, stop_seconds=0.5) as five:
            from flows.options import RestartOptions
            from flows.restart import batch_restart_agents

            instance = batch_restart_agents(
                host_ids=[h.id for h in five.hosts],
                inventory=str(five.inventory_path),
                options=RestartOptions(batch_size=2),
            )
            assert instance["status"] == "SUCCESSFUL"
            assert len(instance["subtasks"]) == 5 * 5 + 4 * 3 + 2
            windows = []
            for host in five.hosts:
                marks = [(t, edge) for t, edge, what in host.audit() if what == "stop"]
                begin = min(t for t, edge in marks if edge == "begin")
                end = max(t for t, edge in marks if edge == "end")
                windows.append((begin, end))
            batches = [windows[0:2], windows[2:4], windows[4:5]]
            for earlier, later in zip(batches, batches[1:]):
                assert max(end for _, end in earlier) < min(begin for begin, _ in later), batches

    def test_a_failure_threshold_isolates_a_failed_host(self, env):
        """maxFailedHosts 1: one host whose start fails is isolated, the others finish, the task is SUCCESSFUL."""
        box, home, api = env
        box.host(1002).set_fault("start_fail")
        response = api.post(
            "/compute/hosts/batchRestartAgents", json={"hostIds": [1001, 1002, 1003], "maxFailedHosts": 1}
        )
        assert response.status_code == 200, response.text
        final = wait_for(api, response.json()["data"]["id"])
        assert final["status"] == "SUCCESSFUL", final
        assert sub(final, START, 1)["status"] == "FAILED"
        assert sub(final, "Finish OCP agent operation", 1)["status"] == "PENDING"
        assert sub(final, "Finish OCP agent operation", 0)["status"] == "SUCCESSFUL"
        assert sub(final, "Finish OCP agent operation", 2)["status"] == "SUCCESSFUL"

    def test_past_the_threshold_the_task_fails(self, env):
        """maxFailedHosts 0 with a failing host: the Wait after the failure fails naming the hosts; task FAILED."""
        box, home, api = env
        box.host(1003).set_fault("start_fail")
        response = api.post("/compute/hosts/batchRestartAgents", json={"hostIds": [1001, 1003], "maxFailedHosts": 0})
        final = wait_for(api, response.json()["data"]["id"])
        assert final["status"] == "FAILED"
        waits = [s for s in final["subtasks"] if s["name"] == "Wait node" and s["status"] == "FAILED"]
        assert len(waits) == 1
        assert "more than the threshold of 0" in log_of(api, final["id"], waits[0]["id"])
        assert sub(final, "Finish OCP agent operation", 0)["status"] == "PENDING"

    def test_bad_extension_values_are_named(self, env):
        """batchSize 0 is a 400 naming batchSize."""
        box, home, api = env
        response = api.post("/compute/hosts/batchRestartAgents", json={"hostIds": [1001], "batchSize": 0})
        assert response.status_code == 400 and "batchSize" in response.json()["error"]["message"]


class TestPrefectCancelInProcess:
    def test_prefect_cancel_of_an_api_run_kills_the_hung_stop(self, env):
        """Prefect's Cancel (CANCELLING, forced, as the UI sends it) of a run the API executes in its own process:
        the hung stop is gone from the host within 5 s, the task FAILED saying why, the flow run Cancelled (#13)."""
        box, home, api = env
        host = box.host(1001)
        host.set_fault("stop_hang")
        task_id = api.post("/compute/hosts/batchRestartAgents", json={"hostIds": [1001]}).json()["data"]["id"]
        deadline = time.monotonic() + 60
        while not any(comm == "sleep" for _, comm in strays(host)):
            assert time.monotonic() < deadline, "the stop never hung on the host"
            time.sleep(0.1)
        with httpx.Client(base_url=os.environ["PREFECT_API_URL"], timeout=30) as prefect:
            # The session's Prefect server is shared: other tests' stores also had a task with this id (and runs
            # killed by other tests stay RUNNING there): ours is the newest.
            runs = prefect.post(
                "/flow_runs/filter",
                json={
                    "flow_runs": {"name": {"any_": [f"ocp-task-{task_id}"]}, "state": {"type": {"any_": ["RUNNING"]}}}
                },
            ).json()
            runs = sorted(runs, key=lambda r: r["created"], reverse=True)[:1]
            assert runs, "no RUNNING flow run for the task"
            cancelled_at = time.monotonic()
            answer = prefect.post(
                f"/flow_runs/{runs[0]['id']}/set_state",
                json={"state": {"type": "CANCELLING", "name": "Cancelling"}, "force": True},
            )
            assert answer.json()["status"] == "ACCEPT", answer.text
            while strays(host):
                assert time.monotonic() - cancelled_at < 5, f"still on the host: {strays(host)}"
                time.sleep(0.1)
            final = wait_for(api, task_id)
            assert final["status"] == "FAILED"
            assert "cancelled in Prefect" in log_of(api, task_id, sub(final, STOP, 0)["id"])
            deadline = time.monotonic() + 30
            while prefect.get(f"/flow_runs/{runs[0]['id']}").json()["state"]["type"] != "CANCELLED":
                assert time.monotonic() < deadline, prefect.get(f"/flow_runs/{runs[0]['id']}").json()["state"]
                time.sleep(0.2)
        host.clear_fault("stop_hang")
