"""``ocp-restart stop`` and ``ocp-restart restart``: OCP's other agent operations, with `run`'s habits (a dry run
printing OCP's task instance, live progress, ``--json``, the same exit codes). As OCP names them:

    ocp-restart stop --host-id 3          # "Stop OCP agent"
    ocp-restart stop --host-ids 3,4       # "Batch stop OCP agent"
    ocp-restart restart --host-id 3       # "Restart OCP agent" (a stopped agent is started)
    ocp-restart run --host-ids 3,4        # "Batch restart OCP agent" (the seed)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

Subcommands = argparse._SubParsersAction


def _one_id(text: str) -> int:
    if not text.strip().isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"a host id is a positive integer, got {text!r}")
    return int(text)


def add_commands(
    sub: Subcommands, host_ids: Callable[[str], list[int]], run_options: Callable[..., None], config: Any
) -> None:
    """The parsers of ``stop`` and ``restart``; ``run_options``: `run`'s options (--json, --timeout, ...)."""
    stop = sub.add_parser(
        "stop",
        help='stop the OCP agent: --host-id N ("Stop OCP agent") or --host-ids A,B ("Batch stop OCP agent")',
    )
    hosts = stop.add_mutually_exclusive_group(required=True)
    hosts.add_argument("--host-id", type=_one_id, metavar="ID", help='one host: OCP\'s "Stop OCP agent"')
    hosts.add_argument("--host-ids", type=host_ids, metavar="ID,ID,...", help='"Batch stop OCP agent"')
    _common(stop, run_options, config)
    restart = sub.add_parser(
        "restart",
        help='restart the OCP agent on one host ("Restart OCP agent"; a stopped agent is started); '
        "many hosts: `run --host-ids`",
    )
    restart.add_argument("--host-id", type=_one_id, metavar="ID", required=True)
    _common(restart, run_options, config)


def _common(p: argparse.ArgumentParser, run_options: Callable[..., None], config: Any) -> None:
    p.add_argument("--inventory", type=Path, help="TOML inventory (default: $OCP_RESTART_INVENTORY)")
    p.add_argument("--dry-run", action="store_true", help="print the task instance it would create; touch no host")
    p.add_argument(
        "--server",
        metavar="URL",
        default=config.server,
        help="hand it to a running `ocp-restart serve` at URL (default: $OCP_RESTART_SERVER), as `run --server`",
    )
    p.add_argument("--user", default=config.user, help="API user for --server")
    run_options(p)


def chosen(args: argparse.Namespace) -> tuple[Any, list[int]]:
    """The template the command line names, and its hosts: one --host-id is the single-host operation."""
    from flows.plan import BATCH_STOP, RESTART, STOP

    if args.command == "restart":
        return RESTART, [args.host_id]
    if args.host_id is not None:
        return STOP, [args.host_id]
    return BATCH_STOP, args.host_ids


def cmd_agent_operation(args: argparse.Namespace, config: Any) -> int:
    """``stop`` / ``restart``: a dry run, or record the task of its template and run its flow here."""
    from flows.errors import RequestError

    from . import cli

    template, ids = chosen(args)
    if args.dry_run:
        return cli.print_plan(ids, args.json, config, template)
    if args.server:
        return _remote(args, config, template, ids)
    inventory = args.inventory or config.inventory
    if inventory is None:
        raise RequestError(f"`{args.command}` needs an inventory: --inventory PATH or $OCP_RESTART_INVENTORY")
    return cli._run(args, config, inventory, ids, template)


def _remote(args: argparse.Namespace, config: Any, template: Any, ids: list[int]) -> int:
    """``--server``: POST the operation's endpoint on a running server and follow the task there."""
    import sys
    import time

    from . import cli
    from .remote import RemoteServer

    cli.refuse_local_only(args, args.server)
    started, password = time.monotonic(), config.password
    with RemoteServer(args.server, args.user, password.get_secret_value() if password else None) as server:
        if template.single_host:
            action = "restart" if template.key == "restart" else "stop"
            instance = server.submit(f"/api/v2/compute/hosts/{ids[0]}/agent/{action}")
        else:
            body = {"hostIds": ids, "batchSize": args.batch_size, "maxFailedHosts": args.max_failed_hosts}
            body["maxFailedPercent"] = args.max_failed_percent
            instance = server.submit(
                "/api/v2/compute/hosts/batchStopAgents", {k: v for k, v in body.items() if v is not None}
            )
        print(
            f"task {instance['id']}: '{template.task_name}' on {len(ids)} host(s) through {server.url}", file=sys.stderr
        )
        return cli.follow_remote(args, server, instance, args.server, started)
