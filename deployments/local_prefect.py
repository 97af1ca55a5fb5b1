"""A local Prefect server for the CLI: started on first use, reused while alive, stopped after an idle time.

Without ``PREFECT_API_URL``, Prefect starts a temporary server inside every process that runs a flow (6-10 s,
every run). Instead the CLI asks ``ensure()`` for a server: the first call starts a small supervisor process
(``python -m deployments.local_prefect``) that runs ``prefect server start`` on a free loopback port with its state
under ``$OCP_RESTART_HOME/prefect/``, and stops it once no CLI has used it for ``OCP_RESTART_PREFECT_IDLE_SECONDS``
(default 600) and none is using it now. Later calls find it by ``server.json`` and reuse it.

A run does not wait for the start (#23): ``begin()`` starts the supervisor on a port this process chose and sets
``PREFECT_API_URL`` at once, so everything that needs no Prefect server (inventory, plan, task store, host locks,
``import prefect``, SSH connections) goes on while the server comes up; ``ensure()`` then waits (polling its health
every 50 ms) only where the flow needs it. A database this Prefect version has already migrated is not migrated
again, and its blocks are not registered again (``migrated``).

    $OCP_RESTART_HOME/prefect/
        server.json     {"url", "pid" (the supervisor), "state": "starting"}; once it serves, also "server_pid",
                        "started", "idle_seconds" (null: no idle stop) (``ocp-restart prefect status`` shows it,
                        ``... stop`` stops it, ``... start`` starts it ahead of a run)
        migrated        the Prefect version that last migrated home/'s database (``prepare()``, or a start), or
                        whose migrated template home/ was copied from (``template_path()``: a fresh home's first
                        server starts from that copy, not from 100-odd migrations)
        registered      the Prefect version that last registered its block types there
        idle-seconds    asked by `ocp-restart prefect start --idle-seconds` of the running server (removed with it)
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
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

from . import prefect_env

if TYPE_CHECKING:
    from flows.settings import Settings

# The supervisor imports nothing but the standard library before it spawns the server: the server's start is the
# user's wait.

STARTUP_SECONDS = 90.0
HEALTH_POLL_SECONDS = 0.05  # the server is healthy ~4-8 s after exec; 0.2 s steps lost 0.1 s on average
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
IDLE_REQUEST = "idle-seconds"  # `ocp-restart prefect start --idle-seconds` for the running server (read_idle_request)


def state_dir(config: Settings) -> Path:
    return config.home_dir / "prefect"


_BEGUN: dict[Path, tuple[str, int | None]] = {}  # folder -> (url, the supervisor this process started, if any)


def begin(config: Settings) -> str | None:
    """Start the local Prefect server if none runs, without waiting for it; register this process as using it and
    set its URL for Prefect (call it before Prefect is imported). None when ``PREFECT_API_URL`` is set by the user
    (that server is used) or the local server is turned off. ``ensure()`` waits until it serves."""
    folder = state_dir(config)
    if folder in _BEGUN:
        return _BEGUN[folder][0]
    if os.environ.get("PREFECT_API_URL") or not config.local_prefect:
        return None
    (folder / "clients").mkdir(parents=True, exist_ok=True)
    _register_client(folder)
    with open(folder / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two CLIs starting at once start one server
        found = read_state(folder)
        if found is not None:
            url, started = str(found["url"]), None
        else:
            url, started = _start_supervisor(folder, config.prefect_idle_seconds)
    (folder / "last-used").touch()
    prefect_env.use_api(url)
    _BEGUN[folder] = (url, started)
    return url


def ensure(config: Settings) -> str | None:
    """The API URL of the local Prefect server once it serves (``begin()`` first if this process has not), or
    None as ``begin()``. RuntimeError naming the supervisor's log if it does not serve within STARTUP_SECONDS."""
    url = begin(config)
    if url is None:
        return None
    folder = state_dir(config)
    try:
        _wait_until_serving(folder, url)
    except RuntimeError:
        if _BEGUN[folder][1] is None or "prefect" in sys.modules:
            raise
        # Ours died before serving (the port this process chose was taken meanwhile, say): once more, on another.
        with open(folder / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            url, started = _start_supervisor(folder, config.prefect_idle_seconds)
        prefect_env.use_api(url)
        _BEGUN[folder] = (url, started)
        _wait_until_serving(folder, url)
    (folder / "last-used").touch()
    return url


def start(config: Settings, idle: float | None = None) -> tuple[str, bool]:
    """``ocp-restart prefect start``: the local server, started now if none runs, once it serves: (its URL, whether
    this call started it). ``idle``: its idle stop from now on (inf: none), for a server this call starts or one
    that runs already. RuntimeError as ``ensure()``; also if the local server is turned off or PREFECT_API_URL set."""
    if idle is not None:
        config = config.model_copy(update={"prefect_idle_seconds": idle})
    url = ensure(config)
    if url is None:
        raise RuntimeError("no local Prefect server here: PREFECT_API_URL is set or OCP_RESTART_LOCAL_PREFECT=false")
    folder = state_dir(config)
    started = _BEGUN[folder][1] is not None
    if idle is not None and not started:
        request_idle(folder, idle)
    _client_mark(folder).unlink(missing_ok=True)  # started for later runs: this process is no user of it
    deadline = time.monotonic() + 3 * POLL_SECONDS
    while (
        (info := read_state(folder)) is None
        or info.get("state") != "serving"
        or (idle is not None and idle_of(info, idle) != idle)
    ):  # the supervisor writes "serving" just after the health check this process saw, and takes ``idle`` in a poll
        if time.monotonic() > deadline:
            raise RuntimeError(f"the local Prefect server's supervisor does not show it serving; see {folder}")
        time.sleep(0.05)
    return url, started


def idle_of(info: dict, default: float) -> float:
    """The idle time server.json shows (``default`` if it shows none): inf for null, a kept server's."""
    if "idle_seconds" not in info:
        return default
    idle = info["idle_seconds"]
    return float("inf") if idle is None else float(idle)


def serving_url(config: Settings) -> str | None:
    """The local server's URL if it serves now, else None; never starts one."""
    info = read_state(state_dir(config))
    return str(info["url"]) if info is not None and _healthy(str(info["url"])) else None


def read_state(folder: Path) -> dict | None:
    """server.json if its supervisor lives (the server starting or serving), else None (a stale file removed)."""
    try:
        info = json.loads((folder / "server.json").read_text())
        os.kill(int(info["pid"]), 0)
        return info if isinstance(info.get("url"), str) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _healthy(url: str) -> bool:
    from http.client import HTTPConnection, HTTPException
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=2)
    try:
        conn.request("GET", parts.path + "/health")
        return conn.getresponse().status == 200
    except (OSError, HTTPException):
        return False
    finally:
        conn.close()


def _start_supervisor(folder: Path, idle: float) -> tuple[str, int]:
    """Spawn the supervisor on a free port; write server.json ("starting") for other CLIs. (url, its pid)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    log = open(folder / "supervisor.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployments.local_prefect", str(folder), str(idle), str(port)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # it outlives this CLI, and our Ctrl-C is not its
    _write_state(folder, {"url": url, "pid": proc.pid, "state": "starting", "idle_seconds": idle})
    return url, proc.pid


def request_idle(folder: Path, idle: float) -> None:
    """Ask the running supervisor to stop its server after ``idle`` unused seconds (inf: never) from now on; it
    reads the request within POLL_SECONDS and shows it in server.json."""
    tmp = folder / f"{IDLE_REQUEST}.{os.getpid()}"
    tmp.write_text(repr(idle))
    tmp.replace(folder / IDLE_REQUEST)


def read_idle_request(folder: Path) -> float | None:
    try:
        idle = float((folder / IDLE_REQUEST).read_text())
    except (OSError, ValueError):
        return None
    return idle if idle >= 0 else None


def describe_idle(idle: float) -> str:
    """An idle time as the user set it (inf: no idle stop)."""
    if idle == float("inf"):
        return "never (kept until `ocp-restart prefect stop`)"
    return f"after {idle:.0f} s"


def _write_state(folder: Path, info: dict) -> None:
    if info.get("idle_seconds") == float("inf"):
        info = {**info, "idle_seconds": None}  # kept: no idle stop (JSON has no infinity)
    tmp = folder / f"server.json.{os.getpid()}"
    tmp.write_text(json.dumps(info))
    tmp.replace(folder / "server.json")  # readers never see half a file


def _wait_until_serving(folder: Path, url: str) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if _healthy(url):
            return
        info = read_state(folder)
        if info is None or info["url"] != url:  # its supervisor gave up (see its log)
            break
        time.sleep(HEALTH_POLL_SECONDS)
    raise RuntimeError(
        f"the local Prefect server at {url} did not start within {STARTUP_SECONDS:.0f} s; see "
        f"{folder / 'supervisor.log'}"
    )


def _client_mark(folder: Path) -> Path:
    return folder / "clients" / str(os.getpid())


def _register_client(folder: Path) -> None:
    mark = _client_mark(folder)
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


def _prefect_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("prefect")


# marker file -> the setting that skips, at a server's start, what the marker says this Prefect version did
SKIPPABLE = {"migrated": "PREFECT_API_DATABASE_MIGRATE_ON_START", "registered": "PREFECT_API_BLOCKS_REGISTER_ON_START"}


def _marked(folder: Path, name: str) -> bool:
    """Whether ``folder/name`` says this Prefect version did it to ``folder/home``'s database (which exists)."""
    try:
        return (folder / "home" / "prefect.db").exists() and (folder / name).read_text() == _prefect_version()
    except OSError:
        return False


def start_settings(home: Path) -> dict[str, str]:
    """What a start on ``home``'s database can skip: the migrations of a database this Prefect version migrated
    (its alembic upgrade otherwise checks them all again), the block types it registered there."""
    return {setting: "false" for name, setting in SKIPPABLE.items() if _marked(home.parent, name)}


def template_path() -> Path:
    """Where this installation keeps an empty database this Prefect version migrated (``prepare()`` makes it): a
    fresh ``$OCP_RESTART_HOME`` starts from a copy instead of Prefect's 100-odd migrations (~10 s, #23). Beside the
    installed packages (``sys.prefix``, the virtualenv): install-time data, not any home's state."""
    return Path(sys.prefix) / "share" / "ocp-restart" / f"prefect-{_prefect_version()}.db"


def seed_from_template(folder: Path) -> bool:
    """Give ``folder/home`` a copy of the template when it has no database yet (marked ``migrated``, and
    ``registered`` when the template holds Prefect's block types); False if there is no template or already a
    database. Standard library only: the supervisor runs it."""
    database, template = folder / "home" / "prefect.db", template_path()
    if database.exists() or not template.is_file():
        return False
    database.parent.mkdir(parents=True, exist_ok=True)
    partial = database.with_name(f".prefect.db.{os.getpid()}")
    shutil.copyfile(template, partial)
    os.replace(partial, database)  # never a half-copied database under its name
    (folder / "migrated").write_text(_prefect_version())
    if _has_block_types(database):
        (folder / "registered").write_text(_prefect_version())
    return True


def _has_block_types(database: Path) -> bool:
    """Whether Prefect registered its block types in ``database`` (a template made before they were is not)."""
    try:
        with closing(sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)) as db:
            return bool(db.execute("SELECT count(*) FROM block_type").fetchone()[0])
    except sqlite3.Error:
        return False


def _upgrade(prefect_home: Path) -> None:
    """Run Prefect's migrations on the database under ``prefect_home`` (created when there is none)."""
    _prefect_on(
        prefect_home, [str(Path(sys.executable).with_name("prefect")), "server", "database", "upgrade", "--yes"]
    )


# What a server's first start on a new database does after its migrations (prefect/server/api/server.py,
# add_block_types): ~1 s of the first run's wait (#23), done once in the template instead.
_REGISTER_BLOCK_TYPES = """
import asyncio
from prefect.server.database import provide_database_interface
from prefect.server.models.block_registration import run_block_auto_registration

async def register():
    async with await provide_database_interface().session() as session:
        await run_block_auto_registration(session=session)

asyncio.run(register())
"""


def _prefect_on(prefect_home: Path, command: list[str]) -> None:
    """Run a Prefect command on the SQLite database under ``prefect_home``, never on a server the user set."""
    env = {**os.environ, "PREFECT_HOME": str(prefect_home), "DO_NOT_TRACK": "1"}
    env.pop("PREFECT_API_URL", None)
    env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
    subprocess.run(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)


def build_template() -> Path | None:
    """This installation's template (``template_path()``), made if missing: a brand-new database migrated for it
    alone, Prefect's block types registered in it; never a copy of a home's (that one holds the home's flow runs: a
    template made from a used database gave every fresh home another home's runs). None where the installation is
    not writable: the template only saves time."""
    template = template_path()
    if template.is_file() and _has_block_types(template):  # one made before block types were in it: made again
        return template
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=template.parent, prefix=".template-") as tmp:
            _upgrade(Path(tmp))
            _prefect_on(Path(tmp), [sys.executable, "-c", _REGISTER_BLOCK_TYPES])
            partial = template.with_name(f".{template.name}.{os.getpid()}")
            with (
                closing(sqlite3.connect(Path(tmp) / "prefect.db")) as source,
                closing(sqlite3.connect(partial)) as copy,
            ):
                source.backup(copy)  # consistent even if the migrations left a write-ahead log
                copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file: no -wal beside it to lose
            os.replace(partial, template)  # never a half-made template under its name
    except (OSError, sqlite3.Error, subprocess.CalledProcessError):
        return None
    return template


def prepare(config: Settings) -> bool:
    """Make this installation's migrated template if missing (``bootstrap.sh``), then give the local server a
    migrated database now — a copy of the template for a home without one, else Prefect's 100-odd migrations — so
    that the first run's server starts without them; False if this Prefect version already migrated it. Never
    while the server runs."""
    template = build_template()
    folder = state_dir(config)
    if _marked(folder, "migrated"):
        return False
    (folder / "home").mkdir(parents=True, exist_ok=True)
    with open(folder / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if read_state(folder) is not None:  # a server runs: it migrated its database as it started
            return False
        if template is not None and seed_from_template(folder):
            return True
        _upgrade(folder / "home")  # an existing database (another Prefect version's), or no template
        (folder / "migrated").write_text(_prefect_version())
    return True


def supervise(folder: Path, idle: float, port: int | None = None) -> int:
    """Run ``prefect server start`` and stop it once idle; the server's process group goes with it."""
    port = port or _free_port()
    url = f"http://127.0.0.1:{port}/api"
    home = folder / "home"
    (folder / IDLE_REQUEST).unlink(missing_ok=True)  # a request for a server that is gone (its supervisor killed)
    seed_from_template(folder)  # a fresh home: a copy of the migrated template, not 100-odd migrations
    skips = start_settings(home)
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        **LEAN_SERVICES,
        **RECORDER_BATCHING,
        **skips,
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
        while not stopping:
            if server.poll() is not None or time.monotonic() > deadline:
                return 1
            if _healthy(url):
                break
            time.sleep(HEALTH_POLL_SECONDS)
        for name, setting in SKIPPABLE.items():
            if setting not in skips:  # done by this start: the next one may skip it
                (folder / name).write_text(_prefect_version())
        (folder / "last-used").touch()
        state = {
            "url": url,
            "pid": os.getpid(),
            "state": "serving",
            "server_pid": server.pid,
            "started": time.time(),
            "idle_seconds": idle,
        }
        _write_state(folder, state)
        while not stopping and server.poll() is None:
            time.sleep(POLL_SECONDS)
            asked = read_idle_request(folder)
            if asked is not None and asked != idle:  # `ocp-restart prefect start --idle-seconds` on this server
                idle = state["idle_seconds"] = asked
                print(f"local Prefect server: idle stop {describe_idle(idle)} (asked by `prefect start`)", flush=True)
                _write_state(folder, state)
            unused = time.time() - (folder / "last-used").stat().st_mtime
            if unused > idle and not _busy(folder):
                print(f"local Prefect server idle for {unused:.0f} s: stopping it", flush=True)
                break
        return 0
    finally:
        (folder / "server.json").unlink(missing_ok=True)
        (folder / IDLE_REQUEST).unlink(missing_ok=True)  # for this server only: the next starts as configured
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


if __name__ == "__main__":
    sys.exit(supervise(Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else None))
