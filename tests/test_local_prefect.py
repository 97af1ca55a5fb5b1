"""The CLI's local Prefect server (issue #14): started on first use, reused by later runs, stopped when idle."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

from conftest import ROOT, cli


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def test_runs_reuse_one_local_prefect_server_and_it_stops_when_idle(tmp_path):
    """Two `ocp-restart run`s without PREFECT_API_URL share one local Prefect server (the second does not pay its
    start-up); once unused for OCP_RESTART_PREFECT_IDLE_SECONDS it stops, supervisor and server both."""
    from deployments import local_prefect
    from deployments.sandbox import Sandbox

    templated = local_prefect.template_path().is_file()  # bootstrap's `prefect prepare` left one
    home = tmp_path / "home"
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "PREFECT_API_URL" and not k.startswith("PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_")
    }
    env.update(OCP_RESTART_HOME=str(home), OCP_RESTART_PREFECT_IDLE_SECONDS="4")
    state = home / "prefect" / "server.json"
    supervisor = None
    with Sandbox(1) as box:
        try:
            seen, took = [], []
            for _ in range(2):
                started = time.monotonic()
                run = subprocess.run(
                    [*cli_command(), "run", "--inventory", str(box.inventory_path), "--json"],
                    env=env,
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    timeout=180,
                )
                took.append(time.monotonic() - started)
                assert run.returncode == 0, run.stderr
                assert json.loads(run.stdout)["status"] == "SUCCESSFUL"
                seen.append(json.loads(state.read_text()))
            supervisor, server = seen[0]["pid"], seen[0]["server_pid"]
            assert seen[1]["pid"] == supervisor and seen[1]["server_pid"] == server  # reused, not restarted
            server_env = set(Path(f"/proc/{server}/environ").read_bytes().split(b"\0"))
            # task runs recorded in batches (#14: 20 -> 4.6 ms of server CPU per task run, none dropped)
            assert {
                b"PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE=100",
                b"PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL=1",
            } <= server_env
            print(f"first run {took[0]:.1f} s (starts the server), second {took[1]:.1f} s")
            # #23: the first start migrated the new database (or copied the installation's migrated template) and
            # says so; the steps took the connections the CLI opened while the server came up.
            assert (home / "prefect" / "migrated").read_text().strip()
            assert (b"PREFECT_API_DATABASE_MIGRATE_ON_START=false" in server_env) == templated
            task = json.loads(run.stdout)
            prepare = str(task["subtasks"][0]["id"])
            log = subprocess.run(
                [*cli_command(), "log", str(task["id"]), prepare], env=env, cwd=ROOT, capture_output=True, text=True
            )
            assert "host key verified" in log.stdout and "before the flow started" in log.stdout, log.stdout
            deadline = time.monotonic() + 60
            while (state.exists() or alive(server) or alive(supervisor)) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert not state.exists() and not alive(server) and not alive(supervisor)
        finally:
            if supervisor is not None and alive(supervisor):
                os.kill(supervisor, 15)


def test_a_configured_prefect_api_is_used_as_it_is(prefect_api, sandbox, home):
    """With PREFECT_API_URL set, the CLI starts no local server."""
    run = cli("run", "--inventory", str(sandbox.inventory_path), "--json")
    assert run.returncode == 0, run.stderr
    assert not (home / "prefect").exists()


def cli_command() -> list[str]:
    import shutil
    import sys
    from pathlib import Path

    exe = shutil.which("ocp-restart", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "deployments.cli"]


def test_run_leaves_without_teardown_but_after_prefect_has_its_last_log(prefect_api, sandbox, home):
    """#14: `ocp-restart run` skips the interpreter's teardown (0.1-0.3 s a run) only after its exit handlers ran:
    its JSON through a pipe is whole, its status is main()'s, and Prefect has the run's last log line and every
    task run Completed."""
    import httpx

    run = cli("run", "--inventory", str(sandbox.inventory_path), "--json")
    assert run.returncode == 0, run.stderr
    task = json.loads(run.stdout)
    assert task["status"] == "SUCCESSFUL"
    with httpx.Client(base_url=prefect_api, timeout=30) as prefect:
        logs = prefect.post("/logs/filter", json={"sort": "TIMESTAMP_DESC", "limit": 200}).json()
        last = [log for log in logs if log["message"].startswith(f"OCP task {task['id']} SUCCESSFUL")]
        assert last, [log["message"][:80] for log in logs[:10]]
        # One truth with the store, whatever the quick exit skips: every node of the DAG is Completed in Prefect
        # too (its server records the last events within a second or two).
        query = {"flow_runs": {"id": {"any_": [last[0]["flow_run_id"]]}}, "limit": 200}
        deadline = time.monotonic() + 20
        while True:
            states = sorted(run["state_type"] for run in prefect.post("/task_runs/filter", json=query).json())
            if states == ["COMPLETED"] * len(task["subtasks"]) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert states == ["COMPLETED"] * len(task["subtasks"]), states
    bad = cli("run", "--inventory", str(sandbox.inventory_path), "--host-ids", "424242", "--json")
    assert bad.returncode == 2 and "424242" in bad.stderr, (bad.returncode, bad.stderr)


def test_the_local_server_shows_in_status_stops_on_request_and_restarts_without_migrating(tmp_path):
    """#23: `ocp-restart prefect prepare` migrates the local server's database before any run; `ocp-restart status`
    (no task) shows the local Prefect server a run started, `ocp-restart prefect stop` stops it (supervisor and
    server); its starts skip Prefect's migrations (prepared), then the block registration too (the first start did
    it)."""
    from deployments.sandbox import Sandbox

    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(OCP_RESTART_HOME=str(home), OCP_RESTART_PREFECT_IDLE_SECONDS="600")
    state = home / "prefect" / "server.json"

    def ocp(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*cli_command(), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)

    with Sandbox(1) as box:
        try:
            assert ocp("status").returncode == 3  # nothing runs before the first run
            assert ocp("prefect", "prepare").returncode == 0 and (home / "prefect" / "migrated").exists()
            assert ocp("status").returncode == 3  # preparing runs no server
            envs = []
            for _ in range(2):
                run = ocp("run", "--inventory", str(box.inventory_path), "--json")
                assert run.returncode == 0, run.stderr
                info = json.loads(state.read_text())
                shown = ocp("status")
                assert shown.returncode == 0, shown.stderr
                assert info["url"].removesuffix("/api") in shown.stdout and str(info["pid"]) in shown.stdout
                assert "stops by itself in" in shown.stdout, shown.stdout
                assert json.loads(ocp("prefect", "status", "--json").stdout)["server_pid"] == info["server_pid"]
                envs.append(set(Path(f"/proc/{info['server_pid']}/environ").read_bytes().split(b"\0")))
                stopped = ocp("prefect", "stop")
                assert stopped.returncode == 0, stopped.stderr
                deadline = time.monotonic() + 10  # init reaps the supervisor (its CLI has exited)
                while (alive(info["pid"]) or alive(info["server_pid"])) and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert not state.exists() and not alive(info["pid"]) and not alive(info["server_pid"])
            no_migrations, no_blocks = (
                b"PREFECT_API_DATABASE_MIGRATE_ON_START=false",
                b"PREFECT_API_BLOCKS_REGISTER_ON_START=false",
            )
            # #23: prepared from the installation's template, migrated and its block types registered: the first
            # start does neither (block registration was ~1 s of a first run's wait)
            assert {no_migrations, no_blocks} <= envs[0]
            assert {no_migrations, no_blocks} <= envs[1]
            assert ocp("status").returncode == 3
        finally:
            if state.exists():
                ocp("prefect", "stop")


def test_prefect_start_keeps_the_server_visibly_until_asked_otherwise(tmp_path):
    """#23: `ocp-restart prefect start --idle-seconds never` starts the local server ahead of a run and keeps it (status
    says so, no idle stop although the setting says 2 s); `prefect start --idle-seconds 1` on that running server
    gives it an idle stop again, and it stops by itself, its request file with it."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(OCP_RESTART_HOME=str(home), OCP_RESTART_PREFECT_IDLE_SECONDS="2")
    folder = home / "prefect"

    def ocp(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*cli_command(), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)

    try:
        started = ocp("prefect", "start", "--idle-seconds", "never")
        assert started.returncode == 0, started.stderr
        assert "kept: no idle stop" in started.stdout and "started" in started.stderr, started
        info = json.loads((folder / "server.json").read_text())
        assert info["state"] == "serving" and info["idle_seconds"] is None, info
        time.sleep(5)  # past the configured idle time, two supervisor polls
        assert alive(info["server_pid"]), "expected the kept server alive past OCP_RESTART_PREFECT_IDLE_SECONDS"
        status = json.loads(ocp("prefect", "status", "--json").stdout)
        assert (status["stops_in_seconds"], status["clients"]) == (None, []), status
        again = ocp("prefect", "start", "--idle-seconds", "1")
        assert again.returncode == 0 and "already running; idle stop after 1 s" in again.stderr, again
        deadline = time.monotonic() + 20
        while (alive(info["pid"]) or alive(info["server_pid"])) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(info["pid"]) and not alive(info["server_pid"]), "expected the idle stop to stop it"
        assert not (folder / "server.json").exists() and not (folder / "idle-seconds").exists()
        assert "idle stop after 1 s (asked by `prefect start`)" in (folder / "supervisor.log").read_text()
    finally:
        if (folder / "server.json").exists():
            ocp("prefect", "stop")


def test_prune_deletes_the_pruned_tasks_flow_runs_from_prefect(prefect_api, sandbox, home):
    """#22: `prune` bounds Prefect's database too — the flow runs of the tasks it deleted go (they grew it ~69 KB a
    task in bench.soak); the runs of tasks it keeps stay."""
    import httpx

    ran = [cli("run", "--inventory", str(sandbox.inventory_path), "--json") for _ in range(2)]
    assert all(run.returncode == 0 for run in ran), [run.stderr for run in ran]
    ids = [json.loads(run.stdout)["id"] for run in ran]

    def runs_of(task_id: int) -> list[str]:
        query = {"flow_runs": {"tags": {"all_": [f"ocp-task:{task_id}", "ocp-agent"]}}, "limit": 50}
        with httpx.Client(base_url=prefect_api, timeout=30) as prefect:
            return [run["id"] for run in prefect.post("/flow_runs/filter", json=query).json()]

    before = {task_id: runs_of(task_id) for task_id in ids}
    assert all(before.values()), before
    kept = cli("prune", "--older-than", "1")
    assert kept.returncode == 0 and "deleted 0 finished task(s)" in kept.stderr, kept.stderr
    assert {task_id: runs_of(task_id) for task_id in ids} == before
    pruned = cli("prune", "--older-than", "0")
    assert pruned.returncode == 0, pruned.stderr
    assert "deleted 2 finished task(s)" in pruned.stderr and "flow run(s) of pruned tasks" in pruned.stderr
    assert all(not set(runs_of(task_id)) & set(before[task_id]) for task_id in ids), pruned.stderr


def test_serves_daily_prune_deletes_flow_runs_too(prefect_api, sandbox, home):
    """#22: `serve --prune-after-days` prunes as `prune` does — the store's finished tasks and their flow runs."""
    import threading

    import httpx

    from deployments.cli import _prune_daily
    from flows.store import TaskStore

    run = cli("run", "--inventory", str(sandbox.inventory_path), "--json")
    assert run.returncode == 0, run.stderr
    task_id = json.loads(run.stdout)["id"]
    query = {"flow_runs": {"tags": {"all_": [f"ocp-task:{task_id}", "ocp-agent"]}}, "limit": 50}
    with httpx.Client(base_url=prefect_api, timeout=30) as prefect:
        before = {r["id"] for r in prefect.post("/flow_runs/filter", json=query).json()}
        assert before
        stop = threading.Event()
        stop.set()  # one round, no day's wait
        with TaskStore(f"sqlite:///{home / 'tasks.db'}") as store:
            _prune_daily(store, 0, stop)
            assert store.task_ids()[1] == 0
        after = {r["id"] for r in prefect.post("/flow_runs/filter", json=query).json()}
    assert not before & after


def test_a_fresh_homes_first_server_starts_from_the_migrated_template(tmp_path):
    """#23: `prefect prepare` keeps the migrated database as this installation's template; a fresh home's first
    run copies it and its server starts without Prefect's migrations (it migrated a new database for ~10 s) and
    without registering block types (~1 s)."""
    from deployments import local_prefect
    from deployments.sandbox import Sandbox

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}

    def ocp(home: Path, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*cli_command(), *args],
            env={**env, "OCP_RESTART_HOME": str(home)},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )

    assert ocp(tmp_path / "prepared", "prefect", "prepare").returncode == 0
    template = local_prefect.template_path()
    assert template.is_file(), template
    # A new database of its own: one copied from a used home's gave every fresh home that home's flow runs (CI at
    # d98df6c: bootstrap prepared the machine's default home). Read-only: the template is shared.
    with closing(sqlite3.connect(f"{template.as_uri()}?mode=ro", uri=True)) as db:
        assert db.execute("SELECT count(*) FROM flow_run").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM block_type").fetchone()[0] > 0  # registered once, here
    fresh = tmp_path / "fresh"
    state = fresh / "prefect" / "server.json"
    with Sandbox(1) as box:
        try:
            run = ocp(fresh, "run", "--inventory", str(box.inventory_path), "--json")
            assert run.returncode == 0, run.stderr
            info = json.loads(state.read_text())
            environ = Path(f"/proc/{info['server_pid']}/environ").read_bytes().split(b"\0")
            assert b"PREFECT_API_DATABASE_MIGRATE_ON_START=false" in environ
            assert b"PREFECT_API_BLOCKS_REGISTER_ON_START=false" in environ
            version = template.name.removeprefix("prefect-")[: -len(".db")]
            assert (fresh / "prefect" / "migrated").read_text() == version
            assert (fresh / "prefect" / "registered").read_text() == version
        finally:
            if state.exists():
                ocp(fresh, "prefect", "stop")
