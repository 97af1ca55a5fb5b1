"""What Prefect alone costs for our DAG: the same flow shape with no-op tasks, no SSH, no task store.

    python3 -m bench.prefect_floor --hosts 10,100 [--repeat 3]

Starts a ``prefect server start`` (as bench.run does), then per N runs, in this process, a flow that submits one
no-op Prefect task per node of ``flows.plan.build_plan(N hosts)`` (5N + 4 task runs) to a
``ThreadPoolTaskRunner(32)`` with ``wait_for`` along the DAG's edges, exactly as ``flows.restart`` does, and the
same task options (no cache, no result persistence, a task-run name). It prints the flow's wall time, this
process's CPU during it, the Prefect server's CPU during it and how long (and how much CPU) the server keeps
working afterwards. Those seconds are the part of our restart that one Prefect task run per DAG node costs,
whatever the steps do.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from .common import idle_after, process_cpu_seconds, wait_quiet


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_dag(n: int, workers: int) -> tuple[float, int]:
    """Run the no-op DAG of ``n`` hosts once; (wall seconds, task runs)."""
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.futures import wait
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.plan import build_plan

    @task(cache_policy=NO_CACHE, persist_result=False, task_run_name="{label}", log_prints=False)
    def noop(run_key: str, subtask_id: int, label: str) -> None:
        return None

    @flow(name="prefect-floor", log_prints=False)
    def dag(n: int) -> int:
        plan = build_plan(list(range(1, n + 1)))
        with ThreadPoolTaskRunner(max_workers=workers) as runner:
            futures = {}
            for node in plan.nodes:  # topological order
                futures[node.key] = runner.submit(
                    noop, parameters={"run_key": "k", "subtask_id": 0, "label": str(node.key)},
                    wait_for=[futures[up] for up in node.upstreams],
                )
            wait(list(futures.values()))
        return len(futures)

    started = time.monotonic()
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):  # as flows.restart.restart_agents
        count = dag(n)
    return time.monotonic() - started, count


def main(argv: list[str] | None = None) -> int:
    from .ours import PrefectServer

    p = argparse.ArgumentParser(prog="python3 -m bench.prefect_floor", description=__doc__.split("\n\n")[0])
    p.add_argument("--hosts", default="10,100")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workers", type=int, default=32)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="prefect-floor-"))
    server = PrefectServer(work / "server", _free_port()).start()
    os.environ.update(PREFECT_API_URL=server.api_url, PREFECT_HOME=str(work / "client"),
                      PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="WARNING", DO_NOT_TRACK="1")
    try:
        run_dag(1, args.workers)  # imports, client start-up: not what is measured
        for n in (int(x) for x in args.hosts.split(",")):
            rows = []
            for _ in range(args.repeat):
                wait_quiet()
                mine, theirs = process_cpu_seconds(os.getpid()), process_cpu_seconds(server.proc.pid)
                wall, count = run_dag(n, args.workers)
                mine, theirs = process_cpu_seconds(os.getpid()) - mine, process_cpu_seconds(server.proc.pid) - theirs
                backlog_s, backlog_cpu = idle_after(server.proc.pid)
                rows.append((wall, mine, theirs, backlog_s, backlog_cpu))
                print(f"  N={n}: {count} task runs in {wall:.2f} s; this process {mine:.1f} CPU-s, Prefect server "
                      f"{theirs:.1f} CPU-s during, then {backlog_cpu:.1f} CPU-s over {backlog_s:.0f} s", flush=True)
            wall, mine, theirs, backlog_s, backlog_cpu = sorted(rows)[len(rows) // 2]
            print(f"N={n} median: {wall:.2f} s wall, {count} task runs ({1000 * wall / count:.1f} ms each), "
                  f"this process {mine:.1f} CPU-s ({1000 * mine / count:.1f} ms per task run), server {theirs:.1f} "
                  f"CPU-s during ({1000 * theirs / count:.1f} ms per task run) + {backlog_cpu:.1f} after; walls "
                  f"{[round(r[0], 2) for r in rows]}, spread {statistics.pstdev(r[0] for r in rows):.2f} s", flush=True)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
