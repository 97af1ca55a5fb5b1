"""``ocp-restart prefect status|start|stop`` (and ``ocp-restart status`` without a task): the CLI's local Prefect
server, seen, started ahead and stopped by the user (#23). It runs only because a CLI run or ``prefect start``
started it, stops by itself once idle (unless started to be kept), and its state stays under
``$OCP_RESTART_HOME/prefect/``."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any

from flows.settings import Settings

from . import local_prefect

EXIT_OK, EXIT_NOT_RUNNING, EXIT_BUSY = 0, 3, 4
STOP_SECONDS = 30.0


def add_commands(sub: Any) -> None:
    prefect = sub.add_parser(
        "prefect",
        help="the local Prefect server `run` starts: its state, start it ahead of a run (or keep it: "
        "--idle-seconds never), stop it now, or prepare its database (migrate it once, so that its first start is "
        "faster; bootstrap.sh does)",
    )
    prefect.add_argument("prefect_command", choices=("status", "start", "stop", "prepare"))
    prefect.add_argument("--json", action="store_true", help="status: server.json and the figures below as JSON")
    prefect.add_argument("--force", action="store_true", help="stop: even while a CLI run uses it (its flow fails)")
    prefect.add_argument(
        "--idle-seconds",
        type=idle_seconds,
        metavar="SECONDS|never",
        help="start: stop it once unused this long (default $OCP_RESTART_PREFECT_IDLE_SECONDS, 600); `never` keeps "
        "it until `ocp-restart prefect stop`. Also changes a server that runs already",
    )


def idle_seconds(text: str) -> float:
    """``--idle-seconds``: a number of seconds >= 0, or ``never`` (no idle stop)."""
    if text.strip().lower() == "never":
        return float("inf")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0 or 'never', got {text!r}")
    return value


def describe(config: Settings) -> dict[str, Any] | None:
    """The local server's state (server.json, the idle stop to come, the CLIs using it now); None if none runs."""
    folder = local_prefect.state_dir(config)
    info = local_prefect.read_state(folder)
    if info is None:
        return None
    try:
        unused = time.time() - (folder / "last-used").stat().st_mtime
    except OSError:
        unused = 0.0
    clients = [int(m.name) for m in (folder / "clients").glob("*") if m.name.isdigit() and _alive(int(m.name))]
    idle = local_prefect.idle_of(info, config.prefect_idle_seconds)  # inf: kept, no idle stop
    return {
        **info,
        "ui": str(info["url"]).removesuffix("/api"),
        "unused_seconds": round(unused, 1),
        "stops_in_seconds": None if clients or idle == float("inf") else round(max(0.0, idle - unused), 1),
        "clients": clients,
        "folder": str(folder),
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def print_status(config: Settings, as_json: bool = False) -> int:
    state = describe(config)
    if as_json:
        print(json.dumps(state))
        return EXIT_OK if state else EXIT_NOT_RUNNING
    folder = local_prefect.state_dir(config)
    if state is None:
        print(f"local Prefect server: not running (state under {folder}; the next `ocp-restart run` starts it)")
        return EXIT_NOT_RUNNING
    pids = f"supervisor pid {state['pid']}" + (f", server pid {state['server_pid']}" if "server_pid" in state else "")
    if state["clients"]:
        when = f"in use by {len(state['clients'])} CLI process(es) ({', '.join(map(str, state['clients']))})"
    elif state["stops_in_seconds"] is None:
        when = f"unused for {state['unused_seconds']:.0f} s, kept: no idle stop (`prefect start --idle-seconds`)"
    else:
        when = f"unused for {state['unused_seconds']:.0f} s, stops by itself in {state['stops_in_seconds']:.0f} s"
    print(f"local Prefect server: {state.get('state', 'serving')} at {state['ui']} ({pids}); {when}")
    print(f"  state and log under {folder}; `ocp-restart prefect stop` stops it now")
    return EXIT_OK


def stop(config: Settings, force: bool = False) -> int:
    """SIGTERM the supervisor (it stops the server, and removes server.json); wait until both are gone. Refused
    (exit 4) while a CLI run uses the server, unless ``force``."""
    state = describe(config)
    if state is None:
        print("local Prefect server: not running", file=sys.stderr)
        return EXIT_OK
    if state["clients"] and not force:
        print(
            f"ocp-restart: error: the local Prefect server is in use by CLI process(es) "
            f"{', '.join(map(str, state['clients']))}; stopping it would fail their runs (--force does)",
            file=sys.stderr,
        )
        return EXIT_BUSY
    pids = [int(state["pid"]), *([int(state["server_pid"])] if "server_pid" in state else [])]
    os.kill(pids[0], signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    while any(_running(pid) for pid in pids):
        if time.monotonic() > deadline:
            print(f"local Prefect server: still running after {STOP_SECONDS:.0f} s (pids {pids})", file=sys.stderr)
            return 1
        time.sleep(0.1)
    print(f"local Prefect server stopped (pids {', '.join(map(str, pids))})", file=sys.stderr)
    return EXIT_OK


def _running(pid: int) -> bool:
    """Alive and not a zombie (the supervisor's parent, a CLI that exited, may never reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def start(config: Settings, idle: float | None) -> int:
    """Start the local server now (a maintenance window's first run then finds it warm), or set the idle stop of
    the one that runs; then its status."""
    try:
        _, started = local_prefect.start(config, idle)
    except RuntimeError as exc:
        print(f"ocp-restart: error: {exc}", file=sys.stderr)
        return 1
    info = local_prefect.read_state(local_prefect.state_dir(config)) or {}
    idle_now = local_prefect.idle_of(info, config.prefect_idle_seconds)
    print(
        f"local Prefect server {'started' if started else 'already running'}; idle stop "
        f"{local_prefect.describe_idle(idle_now)}",
        file=sys.stderr,
    )
    return print_status(config)


def cmd_prefect(args: argparse.Namespace, config: Settings) -> int:
    if args.prefect_command == "start":
        return start(config, args.idle_seconds)
    if args.idle_seconds is not None:
        print("ocp-restart: error: --idle-seconds goes with `prefect start`", file=sys.stderr)
        return 2
    if args.prefect_command == "stop":
        return stop(config, args.force)
    if args.prefect_command == "prepare":
        folder = local_prefect.state_dir(config)
        done = local_prefect.prepare(config)
        print(
            f"local Prefect server's database under {folder}: "
            + ("migrated" if done else "already current (or the server runs)"),
            file=sys.stderr,
        )
        return EXIT_OK
    return print_status(config, args.json)
