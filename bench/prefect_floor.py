"""What Prefect alone costs for our DAG: the same flow shape with no-op tasks, no SSH, no task store.

    python3 -m bench.prefect_floor --hosts 10,100 [--repeat 3] [--lean] [--postgres] [--server-env K=V ...]
                                   [--client-env K=V ...] [--profile-server DIR] [--label NAME]

Starts a ``prefect server start`` (as bench.run does), then per N runs, in this process, a flow that submits one
no-op Prefect task per node of ``flows.plan.build_plan(N hosts)`` (5N + 4 task runs) to a
``ThreadPoolTaskRunner(32)`` with ``wait_for`` along the DAG's edges, exactly as ``flows.restart`` does, and the
same task options (no cache, no result persistence, a task-run name); the flow ends by creating one markdown
artifact. It prints the flow's wall time, this process's CPU during it, the Prefect server's CPU during it and how
long (and how much CPU) the server keeps working afterwards, and per task run: CPU milliseconds of this process
(the client), of the server during the run, of its backlog after it, of PostgreSQL (``--postgres``) and in total.
Those are the part of our restart that one Prefect task run per DAG node costs, whatever the steps do.

Server CPU is the ``prefect server start`` process and any process under it (Prefect 3.9 runs uvicorn and the
services in that one process). After each run it checks what the UI would show, through the API: the flow run's
state, its task runs and their states, its logs (one "Finished in state" record per task run) and its artifact.

``--lean``: the server services our CLI's local server turns off (deployments.local_prefect.LEAN_SERVICES).
``--postgres``: the server on a throwaway PostgreSQL cluster (deployments.sandbox.postgres) instead of SQLite; its
processes' CPU (the postmaster and its children) is reported too. ``--server-env`` / ``--client-env``: settings of
the server / of this process (Prefect reads them at import, so they are set before it is imported).
``--profile-server DIR``: py-spy records the server (``--subprocesses --nonblocking``, 50 Hz) over each N's
measured runs and backlogs; DIR/<label>-N<n>.speedscope.json, summarized by bench.prefect_server_profile.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from deployments.sandbox.procs import reap

from .common import BIN, _subtree, process_cpu_seconds, process_table, wait_quiet


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _key_values(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"expected KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def tree_cpu_seconds(root: int | None, table: dict | None = None) -> float:
    """CPU seconds of ``root`` and every live process under it (each with the children it reaped)."""
    if root is None:
        return 0.0
    table = process_table() if table is None else table
    return sum(table[pid][2] for pid in _subtree(table, root) if pid in table)


def idle_after_trees(
    roots: list[int], max_cores: float = 0.05, window: float = 1.0, timeout: float = 600.0
) -> tuple[float, list[float], bool]:
    """(seconds, CPU seconds per root's tree, timed out) that the process trees keep working after a run, until
    together they use less than ``max_cores`` over ``window``."""
    started = time.monotonic()
    table = process_table()
    first = [tree_cpu_seconds(r, table) for r in roots]
    last, timed_out = first, True
    while time.monotonic() - started < timeout:
        time.sleep(window)
        table = process_table()
        now = [tree_cpu_seconds(r, table) for r in roots]
        busy = sum(now) - sum(last)
        last = now
        if busy / window < max_cores:
            timed_out = False
            break
    return round(time.monotonic() - started - window, 1), [b - a for a, b in zip(first, last)], timed_out


def run_dag(n: int, workers: int) -> tuple[float, int, str]:
    """Run the no-op DAG of ``n`` hosts once; (wall seconds, task runs, flow run id)."""
    from prefect import flow, task
    from prefect.artifacts import create_markdown_artifact
    from prefect.cache_policies import NO_CACHE
    from prefect.context import get_run_context
    from prefect.futures import wait
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.plan import build_plan

    @task(cache_policy=NO_CACHE, persist_result=False, task_run_name="{label}", log_prints=False)
    def noop(run_key: str, subtask_id: int, label: str) -> None:
        return None

    @flow(name="prefect-floor", log_prints=False)
    def dag(n: int) -> tuple[int, str]:
        plan = build_plan(list(range(1, n + 1)))
        with ThreadPoolTaskRunner(max_workers=workers) as runner:
            futures = {}
            for node in plan.nodes:  # topological order
                futures[node.key] = runner.submit(
                    noop,
                    parameters={"run_key": "k", "subtask_id": 0, "label": str(node.key)},
                    wait_for=[futures[up] for up in node.upstreams],
                )
            wait(list(futures.values()))
        create_markdown_artifact(f"{len(futures)} no-op task runs", key="prefect-floor")  # as report.publish
        return len(futures), str(get_run_context().flow_run.id)

    started = time.monotonic()
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):  # as flows.restart.restart_agents
        count, flow_run_id = dag(n)
    return time.monotonic() - started, count, flow_run_id


def ui_check(api_url: str, flow_run_id: str, expected: int, attempts: int = 3) -> tuple[str, int]:
    """What the UI shows of the flow run, read from the API: its state, task runs (all, COMPLETED), logs (all,
    of task runs) and artifacts; (a line saying so, task runs COMPLETED). Read again after 3 s if short (the
    client sends its logs every 2 s), ``attempts`` times at most."""
    import httpx

    by_flow = {"flow_runs": {"id": {"any_": [flow_run_id]}}}
    for attempt in range(1, attempts + 1):
        with httpx.Client(base_url=api_url, timeout=60) as api:
            state = api.get(f"/flow_runs/{flow_run_id}").json()["state_type"]
            runs = api.post("/task_runs/count", json=by_flow).json()
            done = api.post(
                "/task_runs/count", json={**by_flow, "task_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}}
            ).json()
            logs = task_logs = 0
            while True:
                page = api.post(
                    "/logs/filter",
                    json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "offset": logs, "limit": 200},
                ).json()
                logs += len(page)
                task_logs += sum(1 for row in page if row.get("task_run_id"))
                if len(page) < 200:
                    break
            artifacts = api.post("/artifacts/count", json=by_flow).json()
        ok = state == "COMPLETED" and runs == done == expected and task_logs >= expected and artifacts >= 1
        if ok or attempt == attempts:
            break
        time.sleep(3)
    return (
        f"UI check {'ok' if ok else 'FAILED'}: flow run {state}, task runs {runs} ({done} COMPLETED) of "
        f"{expected}, logs {logs} ({task_logs} of task runs), artifacts {artifacts}"
        + (f" (read {attempt} times)" if attempt > 1 else "")
    ), done


class ServerProfiler:
    """``py-spy record`` on the server's pid (and its subprocesses) until ``stop()`` (SIGINT: it writes then)."""

    def __init__(self, pid: int, out: Path, rate: int = 50) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        self.out, self.log = out, open(out.with_name(out.name.replace(".speedscope.json", "") + ".py-spy.log"), "ab")
        # --nonblocking: py-spy does not pause the server to sample it (pausing slows what is measured)
        self.proc = subprocess.Popen(
            [
                str(BIN / "py-spy"),
                "record",
                "--pid",
                str(pid),
                "--format",
                "speedscope",
                "--rate",
                str(rate),
                "--subprocesses",
                "--nonblocking",
                "-o",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        time.sleep(1.0)  # attached
        if self.proc.poll() is not None:
            raise RuntimeError(f"py-spy exited {self.proc.returncode}; see {self.log.name}")

    def stop(self) -> Path:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            reap(self.proc, timeout=120)
        self.log.close()
        return self.out


def main(argv: list[str] | None = None) -> int:
    from .ours import PrefectServer

    p = argparse.ArgumentParser(prog="python3 -m bench.prefect_floor", description=__doc__.split("\n\n")[0])
    p.add_argument("--hosts", default="10,100")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workers", type=int, default=32)
    p.add_argument(
        "--lean",
        action="store_true",
        help="turn off the server services deployments.local_prefect.LEAN_SERVICES turns off",
    )
    p.add_argument("--postgres", action="store_true", help="the server on a throwaway PostgreSQL cluster")
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of the Prefect server (repeatable)",
    )
    p.add_argument(
        "--client-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of this process, the Prefect client (repeatable)",
    )
    p.add_argument("--profile-server", type=Path, metavar="DIR", help="py-spy the server over the measured runs")
    p.add_argument("--label", default="", help="the configuration's name in the output (default: from options)")
    args = p.parse_args(argv)
    label = args.label or "+".join(
        [
            "lean" if args.lean else "default",
            *(["postgres"] if args.postgres else []),
            *(f"s:{kv}" for kv in args.server_env),
            *(f"c:{kv}" for kv in args.client_env),
        ]
    )
    settings: dict[str, str] = {}
    if args.lean:
        from deployments.local_prefect import LEAN_SERVICES

        settings.update(LEAN_SERVICES)
    server_env = _key_values(args.server_env)
    settings.update(server_env)
    client_settings = _key_values(args.client_env)
    work = Path(tempfile.mkdtemp(prefix="prefect-floor-"))
    pg = server = None
    print(f"configuration {label}: work {work}", flush=True)
    try:
        if args.postgres:
            from deployments.sandbox.postgres import PostgresCluster

            pg = PostgresCluster(_free_port()).start()
            settings["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = pg.url("prefect", "asyncpg")
            print(f"  PostgreSQL {pg.bin.parent.name}: postmaster pid {pg.pid}, port {pg.port}", flush=True)
        server = PrefectServer(work / "server", _free_port(), settings).start()
        print(
            f"  server pid {server.proc.pid} ready in {server.ready_seconds:.1f} s; "
            f"{'LEAN_SERVICES, ' if args.lean else ''}server settings {server_env}, client settings "
            f"{client_settings}",
            flush=True,
        )
        os.environ.update(
            PREFECT_API_URL=server.api_url,
            PREFECT_HOME=str(work / "client"),
            PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="WARNING",
            DO_NOT_TRACK="1",
            **client_settings,
        )
        run_dag(1, args.workers)  # imports, client start-up: not what is measured
        roots = [server.proc.pid] + ([pg.pid] if pg else [])
        for n in (int(x) for x in args.hosts.split(",")):
            profiler = None
            if args.profile_server:
                wait_quiet()
                profiler = ServerProfiler(server.proc.pid, args.profile_server / f"{_slug(label)}-N{n}.speedscope.json")
            rows = []
            for _ in range(args.repeat):
                waited = wait_quiet()
                table = process_table()
                mine, before = process_cpu_seconds(os.getpid()), [tree_cpu_seconds(r, table) for r in roots]
                wall, count, flow_run_id = run_dag(n, args.workers)
                mine = process_cpu_seconds(os.getpid()) - mine
                table = process_table()
                during = [tree_cpu_seconds(r, table) - b for r, b in zip(roots, before)]
                backlog_s, after, timed_out = idle_after_trees(roots)
                row = {
                    "wall": wall,
                    "count": count,
                    "client": mine,
                    "server": during[0],
                    "backlog": after[0],
                    "backlog_s": backlog_s,
                    "pg": sum(during[1:]) + sum(after[1:]),
                }
                row["total"] = row["client"] + row["server"] + row["backlog"] + row["pg"]
                rows.append(row)
                print(
                    f"  N={n}: {count} task runs in {wall:.2f} s (waited {waited:.0f} s for a quiet machine); "
                    f"this process {mine:.1f} CPU-s, server {during[0]:.1f} CPU-s during, then {after[0]:.1f} "
                    f"CPU-s over {backlog_s:.0f} s{' (timed out)' if timed_out else ''}"
                    + (f", PostgreSQL {row['pg']:.1f} CPU-s" if pg else "")
                    + "; "
                    + _per_run(row),
                    flush=True,
                )
                check, row["recorded"] = ui_check(server.api_url, flow_run_id, count)
                print("    " + check, flush=True)
            if profiler:
                from .prefect_server_profile import print_server_summary

                print_server_summary(profiler.stop())
            row = sorted(rows, key=lambda r: r["total"])[len(rows) // 2]
            walls = [round(r["wall"], 2) for r in rows]
            print(
                f"N={n} [{label}] median (by total CPU) of {len(rows)}: {row['wall']:.2f} s wall, {row['count']} "
                f"task runs ({row['recorded']} recorded COMPLETED); {_per_run(row)}; backlog {row['backlog_s']:.0f} "
                f"s; walls {walls}, spread {statistics.pstdev(r['wall'] for r in rows):.2f} s; totals ms/task run "
                f"{[round(1000 * r['total'] / r['count'], 1) for r in rows]}",
                flush=True,
            )
    finally:
        if server:
            server.stop()
        if pg:
            pg.stop()
    return 0


def _per_run(row: dict) -> str:
    per = {k: 1000 * row[k] / row["count"] for k in ("client", "server", "backlog", "pg", "total")}
    return (
        f"ms CPU per task run: client {per['client']:.1f}, server during {per['server']:.1f}, backlog "
        f"{per['backlog']:.1f}, PostgreSQL {per['pg']:.1f}, total {per['total']:.1f}"
    )


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:120]


if __name__ == "__main__":
    raise SystemExit(main())
