"""``ocp-restart``: plan, run, status and demo from a terminal.

Exit codes: 0 the task is SUCCESSFUL; 1 it FAILED; 2 bad input (nothing was executed; with --server also a
refused login); 3 it is still RUNNING; 4 another task holds a host; 5 the task store (or the --server) is
unavailable; 6 this process lost its lease on the task (another process may own it; see ``status``); 70 an
unexpected internal error (a bug or a broken installation: the message names it); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import atexit
import getpass
import json
import logging
import os
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from pydantic import ValidationError

from flows.settings import Settings
from steps.runner import is_decimal

from . import cli_agent, cli_ops, cli_prefect, console

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_RUNNING, EXIT_BUSY, EXIT_STORE, EXIT_FENCED = 0, 1, 2, 3, 4, 5, 6
EXIT_INTERNAL, EXIT_INTERRUPTED = 70, 130  # 70: EX_SOFTWARE (sysexits.h)


def _host_ids(text: str) -> list[int]:
    ids = []
    for part in text.split(","):
        part = part.strip()
        if not is_decimal(part) or int(part) <= 0:
            raise argparse.ArgumentTypeError(
                f"host ids must be positive integers separated by commas, got {part!r} in {text!r}"
            )
        ids.append(int(part))
    return ids


def _timeout(text: str) -> tuple[str, int]:
    kind, _, seconds = text.partition("=")
    if not is_decimal(seconds):
        raise argparse.ArgumentTypeError(f"expected STAGE=SECONDS (e.g. stop_all=120), got {text!r}")
    return kind, int(seconds)


def build_parser(config: Settings) -> argparse.ArgumentParser:
    """The command line; defaults that the environment may set come from ``config``."""
    parser = argparse.ArgumentParser(prog="ocp-restart", description="Restart OceanBase OCP agents, OCP's way.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_restart_commands(sub, config)
    cli_ops.add_commands(sub, _host_ids, _run_options, config)
    _add_serve_command(sub, config)
    _add_task_commands(sub)
    _add_deploy_command(sub)
    _add_admin_commands(sub)
    _add_demo_command(sub)
    cli_agent.add_commands(sub)
    cli_prefect.add_commands(sub)
    return parser


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("ocp-agent-restart")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0 (not installed)"


Subcommands = argparse._SubParsersAction  # what add_subparsers returns


def _add_restart_commands(sub: Subcommands, config: Settings) -> None:
    """plan, run, status."""
    plan = sub.add_parser("plan", help="dry run: print the task instance a restart would create; touches no host")
    plan.add_argument("--host-ids", type=_host_ids, required=True, metavar="ID,ID,...")
    plan.add_argument("--json", action="store_true", help="print the task instance (OCP's data object) alone")

    run = sub.add_parser("run", help="restart the agents on hosts of an inventory (no inventory: a local sandbox)")
    run.add_argument("--inventory", type=Path, help="TOML inventory (default: $OCP_RESTART_INVENTORY; none: sandbox)")
    run.add_argument("--host-ids", type=_host_ids, metavar="ID,ID,...", help="default: every host of the inventory")
    run.add_argument(
        "--server",
        metavar="URL",
        default=config.server,
        help="hand the restart to a running `ocp-restart serve` at URL (default: $OCP_RESTART_SERVER); "
        "it uses its own inventory. Credentials: --user or $OCP_RESTART_USER with "
        "$OCP_RESTART_PASSWORD, else ~/.netrc",
    )
    run.add_argument("--user", default=config.user, help="API user for --server")
    _run_options(run)

    status = sub.add_parser(
        "status", help="show a task instance from the task store; without one, the local Prefect server's state"
    )
    status.add_argument("task_id", type=int, nargs="?")
    status.add_argument("--json", action="store_true")

    log = sub.add_parser("log", help="print a subtask's log, or every subtask's log of a task")
    log.add_argument("task_id", type=int)
    log.add_argument("subtask_id", type=int, nargs="?", help="one subtask (default: all of them, in plan order)")
    log.add_argument("--failed", action="store_true", help="only the FAILED subtasks")


def _add_serve_command(sub: Subcommands, config: Settings) -> None:
    serve = sub.add_parser("serve", help="serve the OCP-compatible HTTP API")
    serve.add_argument("--inventory", type=Path, required=True)
    serve.add_argument("--users", type=Path, required=True, help="users file (see `ocp-restart user add`)")
    serve.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--prune-after-days",
        type=float,
        metavar="DAYS",
        help="delete finished tasks older than DAYS from the task store, at start and daily",
    )
    serve.add_argument(
        "--launcher",
        choices=("embedded", "deployment"),
        default=config.launcher,
        help="run flows in this process (embedded) or as Prefect deployment runs for workers",
    )


def _add_task_commands(sub: Subcommands) -> None:
    """retry, rollback, subtask: the actions of flows/actions.py."""
    for name, text in (
        ("retry", "retry a FAILED task: its failed subtasks, then what never ran"),
        ("rollback", "roll a FAILED task back: the agent runs again wherever it was stopped"),
    ):
        op = sub.add_parser(name, help=text)
        op.add_argument("task_id", type=int)
        op.add_argument("--inventory", type=Path, help="default: the inventory the task was created from")
        op.add_argument("--json", action="store_true")
    subtask = sub.add_parser("subtask", help="retry, skip or cancel one subtask")
    subtask.add_argument("action", choices=("retry", "skip", "cancel"))
    subtask.add_argument("task_id", type=int)
    subtask.add_argument("subtask_id", type=int)
    subtask.add_argument("--inventory", type=Path, help="default: the inventory the task was created from")
    subtask.add_argument("--json", action="store_true")


def _add_deploy_command(sub: Subcommands) -> None:
    deploy = sub.add_parser(
        "deploy", help="register the Prefect deployment (schedules, UI runs, workers), or --serve it"
    )
    deploy.add_argument("--name", default="batch-restart", help="deployment name (default batch-restart)")
    deploy.add_argument(
        "--pool", default="ocp-restart", help="process work pool (default ocp-restart; created if missing)"
    )
    deploy.add_argument("--host-ids", type=_host_ids, metavar="ID,ID,...", help="default parameter: the hosts")
    deploy.add_argument("--inventory", type=Path, help="default parameter: the inventory (absolute path)")
    deploy.add_argument("--cron", help="maintenance window, e.g. '0 3 * * 6' (Saturdays 03:00)")
    deploy.add_argument(
        "--stop-cron", help="schedule batch-stop-agents/NAME on the same hosts, e.g. before the window ('50 2 * * 6')"
    )
    deploy.add_argument("--interval", type=float, metavar="SECONDS", help="or run every SECONDS")
    deploy.add_argument("--timezone", help="IANA timezone of the schedule, e.g. Asia/Shanghai (default UTC)")
    deploy.add_argument("--batch-size", type=int, metavar="K")
    deploy.add_argument("--max-failed-hosts", type=int, metavar="N")
    deploy.add_argument("--paused", action="store_true", help="register the schedule paused")
    deploy.add_argument(
        "--accept-new-host-keys",
        action="store_true",
        help="let this deployment's runs trust host keys missing from known_hosts (else refused)",
    )
    deploy.add_argument(
        "--ask-on-failure",
        type=int,
        metavar="SECONDS",
        help="when a run's task FAILS, pause and ask the operator in the UI for up to SECONDS",
    )
    deploy.add_argument(
        "--notify-webhook",
        metavar="URL",
        help="a Prefect automation POSTs JSON to URL when a run of the deployment fails",
    )
    deploy.add_argument(
        "--serve",
        action="store_true",
        help="single machine: serve the deployment from this process instead of a work pool",
    )


def _add_admin_commands(sub: Subcommands) -> None:
    """prune, db, user."""
    prune = sub.add_parser(
        "prune", help="delete finished tasks older than DAYS from the task store (never RUNNING ones)"
    )
    prune.add_argument("--older-than", type=float, required=True, metavar="DAYS")

    db = sub.add_parser("db", help="the task store's schema: its revision, or upgrade it (any command upgrades it too)")
    db.add_argument(
        "db_command",
        choices=("current", "upgrade"),
        help="current: the store's revision and this ocp-restart's head; upgrade: bring the store to it",
    )

    user = sub.add_parser("user", help="manage API users")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    add = user_sub.add_parser("add", help="add or replace a user (asks for the password)")
    add.add_argument("name")
    add.add_argument(
        "--role", action="append", required=True, help="repeatable: ADMIN, HOST_MANAGER, HOST_VIEWER, TASK_MANAGER, ..."
    )
    add.add_argument("--users", type=Path, default=None, help="users file (default $OCP_RESTART_HOME/users.toml)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin (for scripts)")
    key = user_sub.add_parser(
        "access-key", help="create an access key pair for a user (OCP-ACCESS-KEY-HMACSHA1); shown once"
    )
    key.add_argument("name")
    key.add_argument("--users", type=Path, default=None, help="users file (default $OCP_RESTART_HOME/users.toml)")
    key.add_argument("--json", action="store_true", help='print {"accessKeyId": ..., "accessKeySecret": ...}')


def _add_demo_command(sub: Subcommands) -> None:
    demo = sub.add_parser("demo", help="start sandbox hosts on loopback and restart their agents")
    demo.add_argument("--hosts", type=int, default=3, help="how many sandbox hosts (default 3)")
    demo.add_argument(
        "--older-hosts",
        type=int,
        default=0,
        help="how many of them (the last ones) run the older Python agent (ocp_agent_ctl.py, pos_proxy); their "
        "generation is left to Prepare to detect (default 0)",
    )
    _run_options(demo)


def _run_options(p: argparse.ArgumentParser) -> None:
    """Options of `run` and `demo`: how the restart runs and what it prints."""
    p.add_argument("--json", action="store_true", help="print the final task instance alone on stdout")
    p.add_argument("--max-workers", type=int, help="subtasks running at once (default 32)")
    p.add_argument(
        "--timeout",
        type=_timeout,
        action="append",
        default=[],
        metavar="STAGE=SECONDS",
        help="override a stage's timeout: prepare, restart_pos_proxy, stop_all, start_all, finish, wait",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        metavar="K",
        help="rolling restart: batches of K hosts, each after the previous one is done",
    )
    p.add_argument(
        "--max-failed-hosts",
        type=int,
        metavar="N",
        help="isolate failed hosts and go on; the task fails only past N failed hosts",
    )
    p.add_argument("--max-failed-percent", type=float, metavar="P", help="the same threshold as a percentage")
    p.add_argument(
        "--accept-new-host-keys",
        action="store_true",
        help="trust host keys missing from known_hosts (logged); changed keys are always refused",
    )
    p.add_argument("--verbose", action="store_true", help="show Prefect's own log lines")


def main(argv: list[str] | None = None) -> int:
    """``ocp-restart``: the exit status. Called without ``argv`` (the installed command, ``python -m``), the process
    also leaves without the interpreter's teardown once every exit handler has run (see ``_leave_at_once``)."""
    if argv is not None:  # a caller in Python (tests, scripts): nothing process-wide
        return _main(argv)
    atexit.register(_leave_at_once)  # registered before anything else, so it runs after every other handler
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    code = _main(None)
    _EXIT_STATUS.append(code)
    if _PREFECT_GONE:  # its exit drains would retry a dead API for every queued event (~7 s each, #22): skip them
        _flush_and_exit(code)
    return code


# How long a thread may hold the GIL while another waits for it (Python's default: 5 ms). A run's threads are mostly
# paramiko's, one per host, each woken by a packet for a few ms of work, beside 32 workers and Prefect's engines: at
# 5 ms the GIL changed hands more often than the work needed, and every handoff is a wait on 2 cores. 20 ms: 100
# hosts warm, median of 6 alternated pairs 19.5 -> 19.0 s (the shorter run in each of the 6; Start all 6.2 -> 5.7 s);
# 10 hosts on par (5.49 vs 5.52 s, 4 pairs); 1,000 hosts on par within the noise (4 pairs, 2 each way, medians
# 198.7 vs 204.6 s). 1 ms was slower (19.5 -> 19.7 s, 4 pairs at 100 hosts), 50 ms as 20 (#23).
SWITCH_INTERVAL_SECONDS = 0.02

# Tearing the interpreter down after a run (freeing Prefect's, pydantic's and SQLAlchemy's module graphs, object by
# object) took 0.2-0.3 s of every `ocp-restart run`, after its work was done and recorded. Prefect's own exit work
# (draining logs and events to its API) runs before, in threading's and atexit's handlers.
_EXIT_STATUS: list[int] = []
_PREFECT_GONE: list[str] = []  # why Prefect's API stopped answering during this process's run, if it did


def _leave_at_once() -> None:
    """The last exit handler of a process whose main() returned: flush what is buffered, then exit with its status."""
    if not _EXIT_STATUS:  # an exception or a signal ends this process: Python's own exit, status and all
        return
    logging.shutdown()
    _flush_and_exit(_EXIT_STATUS[0])


def _flush_and_exit(status: int | None) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can reach it
            pass
    os._exit(0 if status is None else status if isinstance(status, int) else 1)  # as sys.exit(status) would


def _main(argv: list[str] | None) -> int:
    from flows.errors import OcpRestartError

    try:
        config = Settings()  # the one settings object of this process: every command gets it
    except ValidationError as exc:
        print(f"ocp-restart: error: bad setting in the environment: {_validation_message(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    args = build_parser(config).parse_args(argv)
    if not getattr(args, "verbose", False):
        from . import prefect_env

        prefect_env.quiet_console()
    try:
        commands = {
            "plan": cmd_plan,
            "run": cmd_run,
            "stop": cli_ops.cmd_agent_operation,
            "restart": cli_ops.cmd_agent_operation,
            "status": cmd_status,
            "log": cmd_log,
            "demo": cmd_demo,
            "serve": cmd_serve,
            "user": cmd_user,
            "retry": cmd_operation,
            "rollback": cmd_operation,
            "subtask": cmd_operation,
            "deploy": cmd_deploy,
            "prune": cmd_prune,
            "db": cmd_db,
            "tasks": cli_agent.cmd_tasks,
            "agent": cli_agent.cmd_agent,
            "process": cli_agent.cmd_process,
            "prefect": cli_prefect.cmd_prefect,
        }
        return commands[args.command](args, config)
    except OcpRestartError as exc:
        print(f"ocp-restart: error: {exc.message}", file=sys.stderr)
        from flows.errors import Fenced, HostBusyError, ServerError, StoreUnavailableError

        if isinstance(exc, Fenced):
            return EXIT_FENCED
        if isinstance(exc, ServerError):  # unreachable or broken: 5, like the store; a busy host: 4; refused: 2
            return (
                EXIT_BUSY
                if exc.http_status == 409
                else EXIT_STORE
                if exc.http_status in (0, 500, 502, 503, 504)
                else EXIT_BAD_INPUT
            )
        if isinstance(exc, StoreUnavailableError):
            return EXIT_STORE
        return EXIT_BUSY if isinstance(exc, HostBusyError) else EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("ocp-restart: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # not "the task FAILED" (1): a bug, or a broken installation
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"ocp-restart: internal error: {type(exc).__name__}: {reason}", file=sys.stderr)
        return EXIT_INTERNAL


def cmd_plan(args: argparse.Namespace, config: Settings) -> int:
    return print_plan(args.host_ids, args.json, config)


def print_plan(host_ids: list[int], as_json: bool, config: Settings, template=None) -> int:
    """Dry run: print the task instance ``template`` (default: the batch restart) would create; touch nothing."""
    from flows.models import now
    from flows.plan import BATCH_RESTART, build_plan
    from flows.view import preview

    request = _request(host_ids)
    plan = build_plan(request.host_ids, template=template or BATCH_RESTART)
    instance = preview(plan, creator=getpass.getuser(), executor=config.executor_address, start_time=now())
    if as_json:
        print(json.dumps(instance.to_wire(), indent=2))
    else:
        from rich.console import Console

        Console().print(console.plan_table(instance))
        print(f"{len(instance.subtasks)} subtasks for {len(request.host_ids)} host(s); nothing was executed.")
    return EXIT_OK


def _validation_message(exc: ValidationError) -> str:
    """pydantic's errors as one line: ``field: message; ...``."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


def _request(host_ids: list[int]):
    from flows.errors import RequestError
    from flows.models import BatchRestartRequest

    try:
        return BatchRestartRequest.model_validate({"hostIds": host_ids})
    except ValidationError as exc:
        raise RequestError("; ".join(e["msg"] for e in exc.errors())) from None


def cmd_run(args: argparse.Namespace, config: Settings) -> int:
    if args.server:
        return _run_remote(args, config, args.server)
    inventory = args.inventory or config.inventory
    if inventory is None:
        print(
            "ocp-restart: no inventory given: running on a local sandbox (see `ocp-restart demo --help`)",
            file=sys.stderr,
        )
        args.hosts = 3
        return cmd_demo(args, config)
    return _run(args, config, inventory, args.host_ids)


def cmd_demo(args: argparse.Namespace, config: Settings) -> int:
    from deployments.sandbox import Sandbox

    if not 1 <= args.hosts <= 250:
        print(f"ocp-restart: error: --hosts must be between 1 and 250, got {args.hosts}", file=sys.stderr)
        return EXIT_BAD_INPUT
    older = getattr(args, "older_hosts", 0)
    if not 0 <= older <= args.hosts:
        print(
            f"ocp-restart: error: --older-hosts must be between 0 and --hosts ({args.hosts}), got {older}",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    from . import local_prefect

    local_prefect.begin(config)  # the Prefect server comes up while the sandbox does
    print(f"starting {args.hosts} sandbox host(s) on loopback ...", file=sys.stderr)
    generations = {1001 + i: "auto:3" for i in range(args.hosts - older, args.hosts)}
    with Sandbox(args.hosts, generations=generations) as sandbox:
        for host in sandbox.hosts:
            print(f"  {host.id}  {host.name}  {host.address}:{host.port}  pids {host.agent_pids()}", file=sys.stderr)
        code = _run(args, config, sandbox.inventory_path, getattr(args, "host_ids", None))
        if not args.json:
            for host in sandbox.hosts:
                print(f"  {host.id}  {host.name}  pids now {host.agent_pids()}", file=sys.stderr)
        return code


def _run(
    args: argparse.Namespace, config: Settings, inventory_path: Path, host_ids: list[int] | None, template=None
) -> int:
    """Record a task of ``template`` (default: the batch restart) and run its flow here."""
    from flows.errors import RequestError
    from steps.inventory import load_inventory

    inventory = load_inventory(inventory_path)
    ids = host_ids or list(inventory.hosts)
    _request(ids)
    # The local Prefect server starts now, before this process imports anything heavy (#23: after an idle stop the
    # server's start is the run's critical path, ~2.8 s); until the flow needs it, this process imports Prefect,
    # records the task and opens the hosts' SSH connections.
    from . import local_prefect

    local_prefect.begin(config)
    # Imported before Prefect's import starts in its thread, not beside it: two threads importing at once took
    # 0.15-0.2 s longer than one after the other (the GIL passed between them; measured warm, 10 hosts).
    from flows.options import RestartOptions
    from flows.plan import BATCH_RESTART
    from flows.store import TaskStore
    from flows.submit import create_task

    importing = _import_in_background(_FLOW_RUN_IMPORTS)

    template = template or BATCH_RESTART
    try:
        options = RestartOptions(
            max_workers=args.max_workers or 32,
            timeouts=dict(args.timeout),
            accept_new_host_keys=args.accept_new_host_keys,
            batch_size=args.batch_size,
            max_failed_hosts=args.max_failed_hosts,
            max_failed_percent=args.max_failed_percent,
        )
    except ValidationError as exc:
        raise RequestError(_validation_message(exc)) from None
    with TaskStore(config.store_url) as store:
        task_id = create_task(
            store,
            inventory,
            ids,
            options,
            creator=getpass.getuser(),
            executor=config.executor_address,
            template=template,
        )
        doing = "restarting the OCP agent" if template is BATCH_RESTART else f"'{template.task_name}'"
        print(f"task {task_id}: {doing} on {len(ids)} host(s)", file=sys.stderr)
        record = store.load(task_id)
        _preconnect(record, inventory, options)
        importing.join()
        return _execute(store, config, record.task, inventory_path, options, args.json)


# What a flow run of this process imports: our flows, and what Prefect imports only once a flow runs (its engines,
# FastAPI's encoder for the run's parameters, the asyncio backend of its event loop thread: ~0.1 s). Imported while
# the local server starts, they are off the run's critical path after an idle stop and on a first run.
_FLOW_RUN_IMPORTS = (
    "flows.agent_ops",
    "prefect.flow_engine",
    "prefect.task_engine",
    "fastapi.encoders",
    "prefect.artifacts",
    "anyio._backends._asyncio",
)


def _import_in_background(modules: tuple[str, ...]) -> threading.Thread:
    """Import ``modules`` in a thread (their errors come back when the caller imports them after ``join()``)."""
    import importlib

    def load() -> None:
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception:  # the caller's own import raises it where it can be reported
                pass

    thread = threading.Thread(target=load, name=f"import-{modules[0]}", daemon=True)
    thread.start()
    return thread


def _preconnect(record, inventory, options) -> None:
    """Open the task's hosts' SSH connections in the background for its steps (``flows/preconnect.py``)."""
    from flows import preconnect

    hosts = inventory.select(record.task.host_ids)
    timeout = max((s.timeout for s in record.subtasks if s.host_id is not None), default=60)
    preconnect.offer(
        record.task.id,
        preconnect.Preconnect(
            hosts,
            accept_new_host_keys=options.accept_new_host_keys,
            deadline=time.monotonic() + min(timeout, 60),
            workers=options.max_workers,
        ),
    )


def _execute(store, config: Settings, task, inventory_path, options, as_json: bool) -> int:
    """Run the flow of a recorded ``task``'s template in this process, with progress on stderr; report the result.
    (The task as its caller has it: loading a 1,000-host task again costs 0.06 s alone, up to 0.4 s beside a run.)"""
    from . import local_prefect

    local_prefect.ensure(config)  # before Prefect is imported (it reads PREFECT_API_URL once): begin() did that
    import httpx

    from flows import preconnect
    from flows.agent_ops import run_operation

    started, task_id = time.monotonic(), task.id

    def load() -> tuple[list[console.Row], bool]:
        status, subtasks = store.progress(task_id)
        return [console.Row(*sub) for sub in subtasks], status != "RUNNING"

    with ExitStack() as stack:
        stack.callback(preconnect.withdraw, task_id)  # close the connections no step took
        if not as_json or sys.stderr.isatty():
            stack.enter_context(console.Progress(load))
        try:
            run_operation(
                task.template,
                task_id=task_id,
                host_ids=list(task.host_ids),
                inventory=str(inventory_path),
                options=options,
            )
        except httpx.TransportError as exc:  # Prefect went away: the run ended all the same, the store says how
            _PREFECT_GONE.append(str(exc))
            print(
                f"ocp-restart: Prefect's API became unreachable ({exc}): its flow run of task {task_id} may not show "
                "the outcome; the task store has it (below)",
                file=sys.stderr,
            )
    return _report(store, store.load(task_id), as_json, time.monotonic() - started)


def _run_remote(args: argparse.Namespace, config: Settings, url: str) -> int:
    """``run --server``: POST the restart to a running ocp-restart server and follow it there."""
    from .remote import RemoteServer

    refuse_local_only(args, url)
    started = time.monotonic()
    password = config.password
    with RemoteServer(url, args.user, password.get_secret_value() if password else None) as server:
        ids = args.host_ids or server.host_ids()
        instance = server.restart(
            ids,
            batchSize=args.batch_size,
            maxFailedHosts=args.max_failed_hosts,
            maxFailedPercent=args.max_failed_percent,
        )
        print(
            f"task {instance['id']}: restarting the OCP agent on {len(ids)} host(s) through {server.url}",
            file=sys.stderr,
        )
        return follow_remote(args, server, instance, url, started)


def refuse_local_only(args: argparse.Namespace, url: str) -> None:
    """RequestError if options that only a local run can honour are given with --server."""
    from flows.errors import RequestError

    local_only = [
        flag
        for flag, given in (
            ("--inventory", args.inventory),
            ("--timeout", args.timeout),
            ("--max-workers", args.max_workers is not None),
            ("--accept-new-host-keys", args.accept_new_host_keys),
        )
        if given
    ]
    if local_only:
        raise RequestError(
            f"{', '.join(local_only)} cannot be used with --server {url}: the server restarts hosts "
            "with its own inventory and settings"
        )


def follow_remote(args: argparse.Namespace, server, instance: dict, url: str, started: float) -> int:
    """Follow a task a server has just recorded until it ends, with progress on stderr; report it as `run` does."""
    task_id = instance["id"]
    # Each GET loads and renders the whole task (~10 ms of the server's CPU at 100 hosts, taken from the run it
    # is doing): poll big tasks less often.
    interval = 0.25 if len(instance["subtasks"]) <= 100 else 0.5
    latest = [instance]

    def load() -> tuple[list[console.Row], bool]:
        latest[0] = server.task(task_id)
        return console.rows_from_wire(latest[0]), latest[0]["status"] != "RUNNING"

    if not args.json or sys.stderr.isatty():
        with console.Progress(load, interval) as progress:
            progress.finished.wait()
    else:
        for latest[0] in server.follow(task_id, interval):
            pass
    instance = latest[0]
    if args.json:
        print(json.dumps(instance, indent=2))
    else:
        from rich.console import Console

        Console().print(
            console.task_table(task_id, instance["name"], instance["status"], console.rows_from_wire(instance))
        )
        print(f"task {task_id} {instance['status']} in {time.monotonic() - started:.1f} s (on {url})")
    return {"SUCCESSFUL": EXIT_OK, "FAILED": EXIT_FAILED}.get(instance["status"], EXIT_RUNNING)


def cmd_operation(args: argparse.Namespace, config: Settings) -> int:
    """``retry`` / ``rollback`` TASK and ``subtask retry|skip|cancel`` TASK SUBTASK: an action of
    ``flows/actions.py``, then the task's flow runs here for what it reopened."""
    from flows.actions import ACTIONS
    from flows.store import TaskStore

    action = ACTIONS[f"{args.action}_subtask" if args.command == "subtask" else args.command]
    with TaskStore(config.store_url) as store:
        task = action.apply(store, args.task_id, getattr(args, "subtask_id", None)).task
        if not action.reruns:
            print(
                f"subtask {args.subtask_id} of task {args.task_id}: CANCELING; the run kills its command",
                file=sys.stderr,
            )
            return EXIT_OK
        inventory = args.inventory or task.inventory
        print(f"task {args.task_id}: {task.operation.value.lower()}", file=sys.stderr)
        return _execute(store, config, task, inventory, task.options, args.json)


def cmd_prune(args: argparse.Namespace, config: Settings) -> int:
    from flows.errors import RequestError
    from flows.store import TaskStore

    if args.older_than < 0:
        raise RequestError(f"--older-than must be 0 or more days, got {args.older_than}")
    with TaskStore(config.store_url) as store:
        deleted = store.prune(args.older_than)
        print(f"deleted {len(deleted)} finished task(s) older than {args.older_than:g} day(s)", file=sys.stderr)
    if deleted:
        _prune_prefect(deleted, config, args.older_than)
    return EXIT_OK


def _prune_prefect(task_ids: list[int], config: Settings, days: float) -> None:
    """Prefect's half of ``prune`` (``flows/prefect_prune.py``): on the configured Prefect server, or the local
    one if it serves now (one is never started for this)."""
    from . import local_prefect, prefect_env

    url = os.environ.get("PREFECT_API_URL") or local_prefect.serving_url(config)
    if url is None:
        print("Prefect: no local server runs now; the pruned tasks' flow runs stay in its database", file=sys.stderr)
        return
    prefect_env.use_api(url)
    from flows.prefect_prune import delete_runs_of
    from flows.prefect_run import api_reachable

    if not api_reachable():
        print(f"Prefect at {url} does not answer: the pruned tasks' flow runs stay in its database", file=sys.stderr)
        return
    runs = delete_runs_of(task_ids, days)
    print(f"deleted {runs} flow run(s) of pruned tasks from Prefect at {url}", file=sys.stderr)


def cmd_db(args: argparse.Namespace, config: Settings) -> int:
    """``db current``: the store's schema revision and this code's head, changing nothing; ``db upgrade``: bring the
    store to the head, as opening it for any other command would."""
    from flows.store.database import Database
    from flows.store.migrate import SHIPPED, describe, stored_revision

    upgrade = args.db_command == "upgrade"
    db = Database(config.store_url, SHIPPED if upgrade else None)
    try:
        if upgrade:
            done = (
                f"upgraded from {describe(db.upgraded[0])} to revision {db.upgraded[1]}"
                if db.upgraded
                else f"already at revision {SHIPPED.head}"
            )
            print(f"the task store {db.safe_url}: {done}", file=sys.stderr)
            return EXIT_OK
        with db.read() as conn:
            found = stored_revision(conn)
    finally:
        db.close()
    note = (
        "current"
        if found == SHIPPED.head
        else "behind: `ocp-restart db upgrade` (or any command) upgrades it"
        if SHIPPED.knows(found)
        else "newer than this ocp-restart: upgrade ocp-restart"
    )
    print(f"task store {db.safe_url}: {describe(found)} ({note})")
    print(f"this ocp-restart: revision {SHIPPED.head} (head)")
    return EXIT_OK


def _prune_daily(store, days: float, stop: threading.Event) -> None:
    """``serve --prune-after-days``: prune at start, then every day, until ``stop``."""
    import logging

    while True:
        try:
            deleted = store.prune(days)
            if deleted:
                print(
                    f"ocp-restart: pruned {len(deleted)} finished task(s) older than {days:g} day(s)", file=sys.stderr
                )
            if deleted and os.environ.get("PREFECT_API_URL"):  # the server this serve's flows report to
                from flows.prefect_prune import delete_runs_of

                runs = delete_runs_of(deleted, days)
                print(f"ocp-restart: deleted their {runs} flow run(s) from Prefect", file=sys.stderr)
        except Exception as exc:  # a store or Prefect hiccup must not stop the server; the next day tries again
            logging.getLogger(__name__).warning("pruning failed: %s", exc)
        if stop.wait(86400):
            return


SHUTDOWN_GRACE_SECONDS = 10.0  # serve on SIGTERM/SIGINT: how long running remote commands may take to finish


def cmd_serve(args: argparse.Namespace, config: Settings) -> int:
    """Serve the API until SIGTERM or SIGINT, then stop gracefully: no new requests; running remote commands get
    a grace period, then are killed on their hosts; what was interrupted is FAILED with the reason; exit 0."""
    import signal

    import uvicorn

    from deployments.api import create_app
    from deployments.api.limits import header_deadline

    config = config.model_copy(update={"inventory": args.inventory, "users": args.users, "launcher": args.launcher})
    app = create_app(config)
    state = app.state.api
    print(f"ocp-restart: serving on http://{args.host}:{args.port} ({args.launcher} launcher)", file=sys.stderr)
    server = _graceful_server(
        uvicorn.Config(
            app, host=args.host, port=args.port, log_level="warning", access_log=False, http=header_deadline()
        )
    )
    pruning = threading.Event()
    if args.prune_after_days is not None:
        threading.Thread(
            target=_prune_daily, args=(state.store, args.prune_after_days, pruning), name="prune", daemon=True
        ).start()
    server.run()
    pruning.set()
    why = ", ".join(signal.Signals(s).name for s in server.signals) or "the server stopped"
    reason = f"ocp-restart serve was shut down ({why}) while this ran"
    print(f"ocp-restart: {why}: stopping; running commands get {SHUTDOWN_GRACE_SECONDS:.0f} s", file=sys.stderr)
    state.launcher.shutdown(reason, SHUTDOWN_GRACE_SECONDS)
    state.store.close()
    print("ocp-restart: stopped", file=sys.stderr)
    return EXIT_OK


def _graceful_server(config):
    """uvicorn's server, except that a SIGTERM/SIGINT ends ``run()`` instead of killing the process after the
    shutdown (uvicorn re-raises the signal): our own graceful stop comes after it. ``signals``: what was received."""
    import contextlib
    import signal

    import uvicorn

    class Server(uvicorn.Server):
        signals: list[int]

        @contextlib.contextmanager
        def capture_signals(self):
            self.signals = []

            def handle(sig, frame):
                self.signals.append(sig)
                self.handle_exit(sig, frame)

            original = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    return Server(config)


def cmd_deploy(args: argparse.Namespace, config: Settings) -> int:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from flows.errors import RequestError
    from flows.options import RestartOptions

    from . import prefect_deploy

    if args.timezone:
        try:
            ZoneInfo(args.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise RequestError(
                f"--timezone must be an IANA timezone such as Asia/Shanghai, got {args.timezone!r}"
            ) from None
    inventory = str(args.inventory.expanduser().resolve()) if args.inventory else None
    try:
        options = RestartOptions(
            batch_size=args.batch_size,
            max_failed_hosts=args.max_failed_hosts,
            accept_new_host_keys=args.accept_new_host_keys,
            ask_on_failure_seconds=args.ask_on_failure,
        )
    except ValidationError as exc:
        raise RequestError(_validation_message(exc)) from None
    common = dict(
        name=args.name,
        host_ids=args.host_ids,
        inventory=inventory,
        options=options,
        cron=args.cron,
        interval=args.interval,
        timezone=args.timezone,
        stop_cron=args.stop_cron,
    )
    if args.serve:
        if args.notify_webhook:
            raise RequestError(
                "--notify-webhook needs registered deployments: use it without --serve (then "
                "`prefect worker start --pool ...`)"
            )
        prefect_deploy.serve(**common)
        return EXIT_OK
    deployment_id = prefect_deploy.deploy(
        pool=args.pool, paused=args.paused, notify_webhook=args.notify_webhook, **common
    )
    print(
        f"deployments batch-restart-agents/{args.name} ({deployment_id}), ocp-task-operation/"
        f"{prefect_deploy.operation_name(args.name)}, restart-agent/{args.name}, stop-agent/{args.name} and "
        f"batch-stop-agents/{args.name} in work pool {args.pool}; "
        "start workers with: prefect worker start "
        f"--pool {args.pool}",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_user(args: argparse.Namespace, config: Settings) -> int:
    from deployments.auth import add_user

    path = args.users or config.users_path
    if args.user_command == "access-key":
        from deployments.auth import add_access_key

        key_id, secret = add_access_key(path, args.name)
        if args.json:
            print(json.dumps({"accessKeyId": key_id, "accessKeySecret": secret}))
        else:
            print(f"AccessKey ID:     {key_id}\nAccessKey Secret: {secret}")
        print(
            f"access key {key_id} of user {args.name} written to {path} (mode 0600); the secret is shown only "
            "this once",
            file=sys.stderr,
        )
        return EXIT_OK
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if password != getpass.getpass("again: "):
            print("ocp-restart: error: the passwords differ", file=sys.stderr)
            return EXIT_BAD_INPUT
    add_user(path, args.name, password, args.role)
    print(f"user {args.name} ({', '.join(args.role)}) written to {path} (mode 0600)", file=sys.stderr)
    return EXIT_OK


def cmd_status(args: argparse.Namespace, config: Settings) -> int:
    from flows.store import TaskStore

    if args.task_id is None:
        return cli_prefect.print_status(config, args.json)

    with TaskStore(config.store_url) as store:
        # No server may be running to reap lapsed leases: a task whose runner died shows as FAILED here too.
        store.reap_expired()
        record = store.load(args.task_id)
        return _report(store, record, args.json, None)


def _report(store, record, as_json: bool, seconds: float | None) -> int:
    """The task instance (``--json``), or the table, each failed subtask's last log lines and the verdict."""
    from flows.view import task_instance

    instance = task_instance(record)
    if as_json:
        print(json.dumps(instance.to_wire(), indent=2))
    else:
        from rich.console import Console

        Console().print(
            console.task_table(
                record.task.id, record.task.name, record.task.status.value, console.rows_from_record(record)
            )
        )
        failures = console.failure_report(record, store.log)
        if failures:
            print(failures)
        from flows.outcome import version_mismatch

        mismatch = version_mismatch(store.versions(record.task.id))  # OCP's host_agent_version_not_same (#20)
        if mismatch:
            print(mismatch)
        took = f" in {seconds:.1f} s" if seconds is not None else ""
        print(f"task {instance.id} {instance.status.value}{took}")
    return {"SUCCESSFUL": EXIT_OK, "FAILED": EXIT_FAILED}.get(instance.status.value, EXIT_RUNNING)


def cmd_log(args: argparse.Namespace, config: Settings) -> int:
    """``log TASK [SUBTASK]``: a subtask's log, or every subtask's (``--failed``: the FAILED ones) in plan order."""
    from flows.errors import RequestError
    from flows.store import TaskStore

    with TaskStore(config.store_url) as store:
        record = store.load(args.task_id)
        if args.subtask_id is not None:
            if not record.has(args.subtask_id):
                raise RequestError(f"task {args.task_id} has no subtask {args.subtask_id}")
            subtasks = [record.subtask(args.subtask_id)]
        else:
            subtasks = [s for s in record.subtasks if not args.failed or s.status.value == "FAILED"]
        for sub in subtasks:
            if args.subtask_id is None:
                where = f" @ host {sub.host_id}" if sub.host_id is not None else ""
                print(f"== subtask {sub.id} {sub.name}{where} [{sub.status.value}]")
            text = store.log(sub.id)
            print(text.rstrip("\n") if text else "(no log)")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
