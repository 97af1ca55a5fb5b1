"""The CLI's reads and per-process operations: ``tasks`` (the task list, with the API's filters), ``agent HOST_ID``
(the host's agent as the API shows it, read live), ``process restart|stop HOST_ID PROCESS`` (through the same code
as the API's POST) and ``process list HOST_ID`` (the record of those operations).

Each command takes the caller's Settings (``config``), as every command of deployments/cli.py does.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from flows.settings import Settings

EXIT_OK, EXIT_FAILED = 0, 1
TASK_STATUSES = ("RUNNING", "FAILED", "SUCCESSFUL")


def add_commands(sub: Any) -> None:
    """The parsers of ``tasks``, ``agent`` and ``process``."""
    tasks = sub.add_parser("tasks", help="list recent tasks (the API's filters)")
    tasks.add_argument("--status", type=_statuses, help="RUNNING, FAILED, SUCCESSFUL; a comma list")
    tasks.add_argument("--name", help="a part of the task's name, any case")
    tasks.add_argument("--host-id", type=_positive, help="tasks on this host")
    tasks.add_argument("--page", type=int, default=1, help="from 1 (default 1)")
    tasks.add_argument("--size", type=int, default=20, help="tasks per page (default 20, at most 2000)")
    tasks.add_argument("--json", action="store_true", help="OCP's page object: {contents, page}")
    agent = sub.add_parser("agent", help="the host's OCP agent and its processes, read live over SSH")
    agent.add_argument("host_id", type=_positive)
    agent.add_argument("--inventory", help="default: $OCP_RESTART_INVENTORY or $OCP_RESTART_HOME/inventory.toml")
    agent.add_argument("--json", action="store_true", help="OCP's HostAgent")
    process = sub.add_parser("process", help="restart or stop one agent process; list those operations")
    process.add_argument("action", choices=("restart", "stop", "list"))
    process.add_argument("host_id", type=_positive)
    process.add_argument("process", nargs="?", help="the process's id or alias, e.g. ocp_monagent (not for list)")
    process.add_argument("--inventory", help="default: $OCP_RESTART_INVENTORY or $OCP_RESTART_HOME/inventory.toml")
    process.add_argument("--json", action="store_true")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _statuses(text: str) -> list[str]:
    values = [v.strip().upper() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in TASK_STATUSES]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"expected {', '.join(TASK_STATUSES)} (a comma list), got {text!r}")
    return values


def cmd_tasks(args: argparse.Namespace, config: Settings) -> int:
    """The task list, newest first, as the API's ``GET /api/v2/tasks/instances`` pages it."""
    from flows.store import TaskStore
    from flows.view import basic_task_instance, page, spring_page

    number, size = spring_page(args.page, args.size)
    with TaskStore(config.store_url) as store:
        ids, total = store.task_ids(
            statuses=args.status, name=args.name, host_id=args.host_id, limit=size, offset=(number - 1) * size
        )
        items = [basic_task_instance(record).to_wire() for record in store.load_many(ids)]
    if args.json:
        print(json.dumps({"contents": items, "page": page(number, size, total).to_wire()}, indent=2))
        return EXIT_OK
    rows = [
        [str(t["id"]), t["name"], t["status"], t["creator"]["name"], _short(t["startTime"]), _short(t["finishTime"])]
        for t in items
    ]
    _table(f"tasks (page {number}, {len(items)} of {total})", _TASK_COLUMNS, rows)
    return EXIT_OK


_TASK_COLUMNS = ("id", "name", "status", "creator", "started", "finished")
_PROCESS_COLUMNS = ("id", "alias", "pid", "status", "operable", "ports", "running s")
_OPERATION_COLUMNS = ("id", "action", "process", "status", "by", "started", "finished", "pid before -> after")


def cmd_agent(args: argparse.Namespace, config: Settings) -> int:
    """The host's agent as ``GET /compute/hosts/{id}/agent`` shows it."""
    from flows.agent_view import AgentViews
    from flows.store import TaskStore

    host = _host(args, config)
    with TaskStore(config.store_url) as store:
        agent = AgentViews().agent(host, store).to_wire()
    if args.json:
        print(json.dumps(agent, indent=2))
        return EXIT_OK
    version = f" version {agent['version']}" if agent["version"] else ""
    title = f"host {host.id} {host.name}: agent {agent['status']}{version} (read {agent['updateTime'] or 'never'})"
    _table(title, _PROCESS_COLUMNS, [_process_row(p) for p in agent["processes"]], wrap=False)
    print(f"logs: {agent['logHome']}")
    return EXIT_OK


def cmd_process(args: argparse.Namespace, config: Settings) -> int:
    """``restart`` / ``stop``: one process, as ``POST .../agent/processes/{id}/restart|stop`` does it; ``list``: the
    latest of those operations on the host, with their output."""
    from flows.agent_view import AgentViews
    from flows.errors import RequestError, StepError
    from flows.process_ops import operate
    from flows.store import TaskStore

    host = _host(args, config)
    with TaskStore(config.store_url) as store:
        if args.action == "list":
            return _list_operations(store, host.id, args.json)
        if not args.process:
            raise RequestError(f"process {args.action} needs the process's id or alias, e.g. ocp_monagent")
        try:
            outcome = operate(
                store,
                AgentViews(),
                host,
                args.process,
                args.action,
                creator=getpass.getuser(),
                seconds=config.process_timeout_seconds,
            )
        except StepError as exc:  # it ran and failed on the host: recorded (`process list`), exit 1
            print(f"ocp-restart: {args.action} failed on host {host.id}: {exc.message}", file=sys.stderr)
            return EXIT_FAILED
    shown = outcome.process.to_wire()
    if args.json:
        print(json.dumps(shown, indent=2))
    else:
        _table(f"host {host.id}: operation {outcome.operation_id} done", _PROCESS_COLUMNS, [_process_row(shown)])
    return EXIT_OK


def _list_operations(store: Any, host_id: int, as_json: bool) -> int:
    operations = [op.to_wire() for op in store.processes.list(host_id=host_id)]
    if as_json:
        print(json.dumps(operations, indent=2))
        return EXIT_OK
    rows = [
        [
            str(o["id"]),
            o["action"],
            o["alias"],
            o["status"],
            o["creator"],
            o["startTime"],
            o["finishTime"] or "",
            f"{o['pidBefore'] if o['pidBefore'] is not None else '-'} -> "
            f"{o['pidAfter'] if o['pidAfter'] is not None else '-'}",
        ]
        for o in operations
    ]
    _table(f"process operations on host {host_id} (newest first)", _OPERATION_COLUMNS, rows)
    for o in operations[:1]:
        print(f"output of operation {o['id']}:\n{o['output']}")
    return EXIT_OK


def _short(time: str | None) -> str:
    """An OCP time as a table shows it: to the second, without its offset (``2026-12-05 12:21:19``)."""
    return (time or "")[:19].replace("T", " ")


def _host(args: argparse.Namespace, config: Settings):
    from flows.errors import UnknownHostError
    from steps.inventory import load_inventory

    inventory = load_inventory(args.inventory or config.inventory_path)
    if args.host_id not in inventory.hosts:
        raise UnknownHostError([args.host_id], "the inventory")
    return inventory.hosts[args.host_id]


def _process_row(p: dict[str, Any]) -> list[str]:
    elapsed = "" if p["elapsedTime"] is None else str(p["elapsedTime"])
    operable = "yes" if p["operable"] else "no"
    return [str(p["id"]), p["alias"], str(p["pid"]), p["status"], operable, p["ports"], elapsed]


def _table(title: str, columns: tuple[str, ...], rows: list[list[str]], *, wrap: bool = True) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column, no_wrap=not wrap)
    for row in rows:
        table.add_row(*row)
    Console().print(table)
