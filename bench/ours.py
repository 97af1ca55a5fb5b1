"""Our restart, measured three ways on the sandbox: the whole ``ocp-restart run`` process (Prefect ephemeral, or
a running Prefect server), and a POST to an already-started ``ocp-restart serve``.

Stage spans come from the task store: a stage is the first start .. the last finish of its subtasks.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from .common import (
    BIN,
    ROOT,
    MachineCpu,
    Proc,
    Result,
    agent_pids,
    base_env,
    idle_after,
    process_cpu_seconds,
    restarted_hosts,
    run_measured,
    spans_to_result,
    status_kb,
    stop_process,
)

KIND_TO_STAGE = {
    "prepare": "prepare",
    "restart_pos_proxy": "pos_proxy",
    "stop_all": "stop",
    "start_all": "start",
    "finish": "finish",
}


# -- a Prefect server for the whole bench --------------------------------------------------------------------


class PrefectServer:
    """``prefect server start`` on loopback with its own PREFECT_HOME; stopped by its pid (and own group)."""

    def __init__(self, home: Path, port: int, settings: dict[str, str] | None = None) -> None:
        self.home, self.port, self.settings = home, port, settings or {}
        self.api_url = f"http://127.0.0.1:{port}/api"
        self.proc: subprocess.Popen | None = None
        self.ready_seconds = 0.0

    def start(self, timeout: float = 180.0) -> PrefectServer:
        import httpx

        self.home.mkdir(parents=True, exist_ok=True)
        env = {**base_env(PREFECT_HOME=str(self.home), PREFECT_UI_ENABLED="false"), **self.settings}
        self.log = open(self.home / "server.log", "ab")
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prefect server exited {self.proc.returncode}; see {self.log.name}")
            try:
                if httpx.get(self.api_url + "/health", timeout=2).status_code == 200:
                    self.ready_seconds = time.monotonic() - started
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prefect server did not answer within {timeout} s")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.log.close()


def prime_ephemeral(prefect_home: Path) -> float:
    """Run one no-op flow in ephemeral mode so PREFECT_HOME has a migrated database, as a user's would after the
    first run. Returns the seconds it took (the first-ever cost)."""
    prefect_home.mkdir(parents=True, exist_ok=True)
    code = "from prefect import flow\n@flow\ndef noop():\n    return 1\nnoop()\n"
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-c", code],
        env=base_env(PREFECT_HOME=str(prefect_home)),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        timeout=300,
    )
    return time.monotonic() - started


# -- the task store ------------------------------------------------------------------------------------------


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def store_spans(store_url: str, task_id: int) -> tuple[dict[str, tuple[float, float]], dict]:
    """Per stage (first start, last finish) in epoch seconds, and details: task status, mean per-host step
    seconds, Wait-node seconds, log lines per subtask."""
    import sqlalchemy as sa

    from flows.store import TaskStore
    from flows.store.schema import subtask_logs

    with TaskStore(store_url) as store:
        record = store.load(task_id)
        ids = [row.id for row in record.subtasks]
        with store.engine.connect() as conn:
            log_rows = conn.execute(
                sa.select(sa.func.count()).select_from(subtask_logs).where(subtask_logs.c.subtask_id.in_(ids))
            ).scalar()
    grouped: dict[str, list[tuple[float, float]]] = {}
    waits = []
    for row in record.subtasks:
        if not (row.start_time and row.finish_time):
            continue
        span = (_epoch(row.start_time), _epoch(row.finish_time))
        kind = row.kind.value
        if kind == "wait":
            waits.append(round(span[1] - span[0], 3))
        elif kind in KIND_TO_STAGE:
            grouped.setdefault(KIND_TO_STAGE[kind], []).append(span)
    spans = {stage: (min(s for s, _ in v), max(f for _, f in v)) for stage, v in grouped.items()}
    detail = {
        "task_status": record.task.status.value,
        "subtasks": len(record.subtasks),
        "successful_subtasks": sum(r.status == "SUCCESSFUL" for r in record.subtasks),
        "mean_host_seconds": {stage: round(sum(f - s for s, f in v) / len(v), 3) for stage, v in grouped.items()},
        "wait_node_seconds": waits,
        "log_lines": log_rows,
    }
    return spans, detail


# -- ocp-restart run -----------------------------------------------------------------------------------------


def cli_argv(sandbox, workers: int) -> list[str]:
    ids = ",".join(str(h.id) for h in sandbox.hosts)
    return [
        sys.executable,
        "-m",
        "deployments.cli",
        "run",
        "--inventory",
        str(sandbox.inventory_path),
        "--host-ids",
        ids,
        "--max-workers",
        str(workers),
    ]


def cli_env(home: Path, prefect_home: Path, api_url: str | None) -> dict[str, str]:
    env = base_env(OCP_RESTART_HOME=str(home), PREFECT_HOME=str(prefect_home))
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def run_cli(
    sandbox,
    *,
    name: str,
    work_dir: Path,
    prefect_home: Path,
    api_url: str | None,
    workers: int = 32,
    wrap: list[str] | None = None,
    server_pid: int | None = None,
    env: dict[str, str] | None = None,
    home: Path | None = None,
) -> Result:
    """The whole ``ocp-restart run`` process as a user types it (its progress lines on stderr, the final table on
    stdout; no ``--json``, which also turns the progress off) with a fresh OCP_RESTART_HOME (or ``home``, kept across
    runs: the CLI's default path keeps its local Prefect server there); ``wrap`` prefixes the command (e.g. a
    profiler). ``server_pid``: the Prefect server, whose CPU during the run is recorded too. ``env``: extra
    environment settings (to try a knob without changing code)."""
    if home is None:
        home = Path(tempfile.mkdtemp(prefix="home-", dir=work_dir))
    home.mkdir(parents=True, exist_ok=True)
    before = agent_pids(sandbox)
    server_cpu = process_cpu_seconds(server_pid) if server_pid else 0.0
    proc = run_measured(
        [*(wrap or []), *cli_argv(sandbox, workers)],
        {**cli_env(home, prefect_home, api_url), **(env or {})},
        log_dir=home,
        label="cli",
    )
    result = _cli_result(name, proc, home, before, sandbox)
    if server_pid:
        result.extra["prefect_server_cpu_s"] = round(process_cpu_seconds(server_pid) - server_cpu, 2)
        _backlog(result, server_pid)
    return result


def _backlog(result: Result, server_pid: int) -> None:
    """How long, and how much CPU, the Prefect server keeps working on the run's events after it ended."""
    seconds, cpu = idle_after(server_pid)
    result.extra.update(prefect_backlog_s=seconds, prefect_backlog_cpu_s=cpu)


def _cli_result(name: str, proc: Proc, home: Path, before: dict, sandbox) -> Result:
    result = Result(
        name=name,
        wall=round(proc.wall, 3),
        ok=proc.returncode == 0,
        rss_mb=round(proc.rss_mb, 1),
        tree_rss_mb=round(proc.tree_rss_mb, 1),
        cpu_s=round(proc.cpu_s, 2),
        extra={"exit_code": proc.returncode, "home": str(home)},
    )
    proc.machine.record(result)
    result.restarted = restarted_hosts(before, agent_pids(sandbox))
    recorded = re.search(r"^task (\d+): ", proc.stderr, re.MULTILINE)  # the CLI's first line: "task N: restarting ..."
    if recorded is None:
        result.ok, result.note = False, f"no 'task N:' line on stderr: {proc.stderr[-500:]}"
        return result
    task_id = int(recorded.group(1))
    spans, detail = store_spans(f"sqlite:///{home / 'tasks.db'}", task_id)
    result.extra.update(detail, task_id=task_id)
    spans_to_result(result, spans, proc.launched, proc.ended)
    if detail["task_status"] != "SUCCESSFUL":
        result.ok, result.note = False, f"task {detail['task_status']}"
    return result


# -- ocp-restart run's default path: its own local Prefect server (deployments/local_prefect.py) --------------


def local_server(home: Path) -> dict | None:
    """server.json of the local Prefect server kept under ``home`` (supervisor pid, server pid, url), if any."""
    try:
        return json.loads((home / "prefect" / "server.json").read_text())
    except (OSError, ValueError):
        return None


def run_cli_default(sandbox, *, name: str, home: Path, prefect_home: Path, workers: int = 32) -> Result:
    """``ocp-restart run`` without PREFECT_API_URL, OCP_RESTART_HOME = ``home`` kept across runs: the first run
    starts the local Prefect server (a supervisor we then own), later ones reuse it. Records whether a server
    was running before, and the server's CPU during the run (all of it, start-up included, when it started)."""
    info = local_server(home)
    pid = int(info["server_pid"]) if info and info.get("server_pid") else None
    try:
        cpu0 = process_cpu_seconds(pid) if pid else 0.0
    except OSError:
        pid, cpu0 = None, 0.0
    result = run_cli(
        sandbox, name=name, work_dir=home.parent, prefect_home=prefect_home, api_url=None, workers=workers, home=home
    )
    after = local_server(home)
    result.extra["local_server_reused"] = bool(info and after and info.get("server_pid") == after.get("server_pid"))
    if after and after.get("server_pid"):
        spid = int(after["server_pid"])
        try:
            result.extra["prefect_server_cpu_s"] = round(process_cpu_seconds(spid) - (cpu0 if spid == pid else 0.0), 2)
            result.extra["local_server_pids"] = {"supervisor": after["pid"], "server": spid}
            _backlog(result, spid)
        except OSError:
            pass
    return result


def stop_local_server(home: Path, timeout: float = 30.0) -> None:
    """Stop the local Prefect server a default-path run started under ``home``: SIGTERM its supervisor (by the
    pid in server.json), which stops the server; wait for both."""
    import os
    import signal

    info = local_server(home)
    if not info:
        return
    pids = [int(info["pid"]), *([int(info["server_pid"])] if info.get("server_pid") else [])]
    try:
        os.kill(pids[0], signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    if fh.read().rsplit(")", 1)[1].split()[0] != "Z":
                        alive.append(pid)
            except OSError:
                pass
        if not alive:
            return
        time.sleep(0.2)
    raise RuntimeError(f"local Prefect server under {home} did not stop (pids {pids})")


# -- ocp-restart serve ---------------------------------------------------------------------------------------

USER, PASSWORD = "bench", "bench-password-1"


class ApiServer:
    """``ocp-restart serve`` (embedded launcher) on loopback with a fresh home; stopped by its pid."""

    def __init__(self, sandbox, work_dir: Path, prefect_home: Path, api_url: str, port: int) -> None:
        self.sandbox, self.port = sandbox, port
        self.url = f"http://127.0.0.1:{port}"
        self.home = Path(tempfile.mkdtemp(prefix="serve-", dir=work_dir))
        self.env = cli_env(self.home, prefect_home, api_url)
        self.proc: subprocess.Popen | None = None
        self.idle_rss_mb = 0.0

    def start(self, timeout: float = 120.0) -> ApiServer:
        import httpx

        from deployments.auth import add_user

        users = self.home / "users.toml"
        add_user(users, USER, PASSWORD, ["ADMIN"])
        self.log = open(self.home / "serve.log", "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "deployments.cli",
                "serve",
                "--inventory",
                str(self.sandbox.inventory_path),
                "--users",
                str(users),
                "--port",
                str(self.port),
            ],
            env=self.env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.client = httpx.Client(base_url=self.url, auth=(USER, PASSWORD), timeout=60)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ocp-restart serve exited {self.proc.returncode}; see {self.log.name}")
            try:
                self.client.get("/openapi.json", timeout=1)
                self.idle_rss_mb = (status_kb(self.proc.pid, "VmRSS") or 0) / 1024
                return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("ocp-restart serve did not answer in time")

    def restart(self, host_ids: list[int], poll: float = 0.1) -> tuple[float, dict, list[float]]:
        """POST a restart, poll the task until it is not RUNNING. Returns (seconds, final task, GET latencies)."""
        started = time.monotonic()
        answer = self.client.post("/api/v2/compute/hosts/batchRestartAgents", json={"hostIds": host_ids})
        answer.raise_for_status()
        task_id = answer.json()["data"]["id"]
        latencies = []
        while True:
            time.sleep(poll)
            t = time.monotonic()
            task = self.client.get(f"/api/v2/tasks/instances/{task_id}").json()["data"]
            latencies.append(time.monotonic() - t)
            if task["status"] != "RUNNING":
                return time.monotonic() - started, task, latencies

    def stop(self) -> None:
        if self.proc is not None:
            self.client.close()
            stop_process(self.proc)
            self.log.close()


def run_cli_remote(server: ApiServer, sandbox, *, name: str = "ours: CLI -> serve", work_dir: Path) -> Result:
    """The whole ``ocp-restart run --server URL --json`` process, handing the restart to the running server."""
    home = Path(tempfile.mkdtemp(prefix="home-", dir=work_dir))
    before = agent_pids(sandbox)
    argv = [
        sys.executable,
        "-m",
        "deployments.cli",
        "run",
        "--server",
        server.url,
        "--json",
        "--host-ids",
        ",".join(str(h.id) for h in sandbox.hosts),
    ]
    env = base_env(OCP_RESTART_HOME=str(home), OCP_RESTART_USER=USER, OCP_RESTART_PASSWORD=PASSWORD)
    proc = run_measured(argv, env, log_dir=home, label="cli-remote")
    return _cli_result(name, proc, server.home, before, sandbox)  # the task is in the server's store


def run_api(server: ApiServer, sandbox, *, name: str = "ours: API (serve)", prefect_pid: int | None = None) -> Result:
    """One measured restart of every host through the already-started API server."""
    before = agent_pids(sandbox)
    cpu0 = process_cpu_seconds(server.proc.pid)
    prefect_cpu0 = process_cpu_seconds(prefect_pid) if prefect_pid else 0.0
    with MachineCpu() as machine:
        launched = time.time()
        # An OCP client polls a task every few seconds; at 0.1 s, 1,000 hosts' polls (each GET reads 5,004
        # subtasks) took ~50 CPU-s of the server's 2 cores during the run (2026-12-02T015716Z.json: 1.51x the floor).
        poll = 0.1 if len(sandbox.hosts) <= 100 else 1.0
        seconds, task, latencies = server.restart([h.id for h in sandbox.hosts], poll=poll)
        ended = time.time()
    result = Result(
        name=name,
        wall=round(seconds, 3),
        ok=task["status"] == "SUCCESSFUL",
        note="" if task["status"] == "SUCCESSFUL" else f"task {task['status']}",
        rss_mb=round((status_kb(server.proc.pid, "VmHWM") or 0) / 1024, 1),
        cpu_s=round(process_cpu_seconds(server.proc.pid) - cpu0, 2),
        extra={
            "idle_rss_mb": round(server.idle_rss_mb, 1),
            "polls": len(latencies),
            "poll_s": poll,
            "mean_get_ms": round(1000 * sum(latencies) / max(1, len(latencies)), 1),
            "task_id": task["id"],
        },
    )
    machine.record(result)
    if prefect_pid:
        result.extra["prefect_server_cpu_s"] = round(process_cpu_seconds(prefect_pid) - prefect_cpu0, 2)
        _backlog(result, prefect_pid)
    result.restarted = restarted_hosts(before, agent_pids(sandbox))
    spans, detail = store_spans(f"sqlite:///{server.home / 'tasks.db'}", task["id"])
    result.extra.update(detail)
    spans_to_result(result, spans, launched, ended)
    return result
