"""A local Prefect server for the CLI: started on first use, reused while alive, stopped after an idle time.

Without ``PREFECT_API_URL``, Prefect starts a temporary server inside every process that runs a flow (6-10 s,
every run). Instead the CLI asks ``ensure()`` for a server: the first call starts a small supervisor process
(``python -m deployments.local_prefect``) that runs ``prefect server start`` on a free loopback port with its state
under ``$OCP_RESTART_HOME/prefect/``, and stops it once no CLI has used it for ``OCP_RESTART_PREFECT_IDLE_SECONDS``
(default 600) and none is using it now. Later calls find it by ``server.json`` and reuse it.

    $OCP_RESTART_HOME/prefect/
        server.json     {"url", "pid" (the supervisor), "server_pid", "started"} while it serves
        last-used       touched by every CLI that uses it
        clients/PID     one per CLI process using it now (removed when it exits; a dead PID does not count)
        supervisor.log  the supervisor's and the server's output
        home/           PREFECT_HOME of the server (its SQLite database, the UI's runs)
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from flows.settings import Settings

from . import prefect_env

STARTUP_SECONDS = 90.0
# Only CLI runs in this machine's processes use this server: no deployments, schedules, workers or automations.
# Off: what serves those, and the event store (the UI's Event Feed), ~1/3 of the server's CPU per task run
# (measured on SQLite with Prefect 3.9: 27-31 -> 19-22 ms per task run). On: task runs, logs, artifacts, pause, cancel.
LEAN_SERVICES = {
    f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false"
    for name in ("TRIGGERS", "EVENT_PERSISTER", "SCHEDULER", "LATE_RUNS", "FOREMAN", "REPOSSESSOR")
}
# The task-run recorder writes each task-run event in its own transaction by default (3 per task run): 80% of the
# server's CPU, and at 1,000 hosts it falls so far behind that the in-memory broker drops events ("Subscription
# queue is full") and 20-29% of the task runs never appear in the UI. In batches of 100, flushed every second: 20.2
# -> 4.6 ms of server CPU per task run (N=100), nothing dropped at N=1,000, idle 4 s after the run instead of 67 s
# (measured with bench.prefect_floor, Prefect 3.9.1, SQLite). A task run's state shows up to 1 s later. Any Prefect
# server that runs our flows should have these (README "Scale-out").
RECORDER_BATCHING = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
}
POLL_SECONDS = 2.0


def state_dir(config: Settings) -> Path:
    return config.home_dir / "prefect"


def ensure(config: Settings) -> str | None:
    """The API URL of the local Prefect server, started if needed, registered as used by this process and set for
    Prefect (call it before Prefect is imported); None when ``PREFECT_API_URL`` is already set (then that server is
    used) or the local server is turned off."""
    if os.environ.get("PREFECT_API_URL") or not config.local_prefect:
        return None
    folder = state_dir(config)
    (folder / "clients").mkdir(parents=True, exist_ok=True)
    _register_client(folder)
    with open(folder / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two CLIs starting at once start one server
        url = _running(folder)
        if url is None:
            _start_supervisor(folder, config.prefect_idle_seconds)
            url = _wait_until_serving(folder)
    (folder / "last-used").touch()
    prefect_env.use_api(url)
    return url


def _running(folder: Path) -> str | None:
    """The URL in server.json if its supervisor lives and the server answers."""
    try:
        info = json.loads((folder / "server.json").read_text())
        os.kill(int(info["pid"]), 0)
        if httpx.get(info["url"] + "/health", timeout=2).status_code == 200:
            return str(info["url"])
    except (OSError, ValueError, KeyError, httpx.HTTPError):
        pass
    return None


def _start_supervisor(folder: Path, idle: float) -> None:
    (folder / "server.json").unlink(missing_ok=True)
    log = open(folder / "supervisor.log", "ab")
    subprocess.Popen(
        [sys.executable, "-m", "deployments.local_prefect", str(folder), str(idle)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # it outlives this CLI, and our Ctrl-C is not its


def _wait_until_serving(folder: Path) -> str:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        url = _running(folder)
        if url is not None:
            return url
        time.sleep(0.2)
    raise RuntimeError(
        f"the local Prefect server did not start within {STARTUP_SECONDS:.0f} s; see {folder / 'supervisor.log'}"
    )


def _register_client(folder: Path) -> None:
    mark = folder / "clients" / str(os.getpid())
    mark.touch()

    def done() -> None:
        mark.unlink(missing_ok=True)
        (folder / "last-used").touch()

    atexit.register(done)


def _busy(folder: Path) -> bool:
    """Whether a live CLI process uses the server now (marks of dead processes are removed)."""
    busy = False
    for mark in (folder / "clients").glob("*"):
        try:
            os.kill(int(mark.name), 0)
            busy = True
        except (OSError, ValueError):
            mark.unlink(missing_ok=True)
    return busy


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def supervise(folder: Path, idle: float) -> int:
    """Run ``prefect server start`` and stop it once idle; the server's process group goes with it."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(folder / "home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        **LEAN_SERVICES,
        **RECORDER_BATCHING,
    }
    env.pop("PREFECT_API_URL", None)
    prefect = Path(sys.executable).with_name("prefect")
    server = subprocess.Popen(
        [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env, stdin=subprocess.DEVNULL
    )
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not stopping and server.poll() is None:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                return 1
            time.sleep(0.2)
        (folder / "last-used").touch()
        (folder / "server.json").write_text(
            json.dumps({"url": url, "pid": os.getpid(), "server_pid": server.pid, "started": time.time()})
        )
        while not stopping and server.poll() is None:
            time.sleep(POLL_SECONDS)
            unused = time.time() - (folder / "last-used").stat().st_mtime
            if unused > idle and not _busy(folder):
                print(f"local Prefect server idle for {unused:.0f} s: stopping it", flush=True)
                break
        return 0
    finally:
        (folder / "server.json").unlink(missing_ok=True)
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


if __name__ == "__main__":
    sys.exit(supervise(Path(sys.argv[1]), float(sys.argv[2])))
