"""Benchmark: our batch restart versus a bare paramiko floor and Ansible, on the same sandbox hosts.

    python3 -m bench.run --hosts 10,50,100

For each N: one Sandbox(N, stop_seconds=1, start_seconds=1) (real sshd on 127.0.0.x, a simulated agent whose
stop and start each take the given seconds), then on the same hosts, one after the other, each timed by the wall
clock, with every agent running again (and 2 s to settle) between two measurements:

1. floor (bare paramiko): ThreadPoolExecutor(workers), one TCP_NODELAY connection per host (host key checked,
   key auth), five stages of the same remote commands with a barrier after each (bench/floor.py);
2. floor over SSHSession: the same over our own SSH layer (steps/ssh.py), to isolate what that layer costs;
3. ours: CLI default: the whole ``ocp-restart run`` process as a user types it (no Prefect configured: the
   CLI's own local Prefect server, started by the first run, reused by the next ones; see _measure_default);
4. ours: CLI + server: the same with PREFECT_API_URL at a ``prefect server start`` the bench started once;
5. ours: API (serve): POST /compute/hosts/batchRestartAgents to an already-started ``ocp-restart serve``
   (warmed by one 1-host restart), polled every 0.1 s until the task is no longer RUNNING;
5b. ours: CLI -> serve: the whole ``ocp-restart run --server URL --json`` process against that same server;
6. ansible cold / warm / nocp: ansible-playbook, five plays of ``raw`` tasks, forks = workers (bench/ansible_run.py).

Ours' stage spans come from the task store; the floor's from its barriers; Ansible's from a callback plugin.
Also measured once: building, validating and recording a 1,000-host plan. Prints one table per N and writes
everything to bench/results/<timestamp>.json. See bench/README.md for the columns.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from .common import Result, ensure_ready
from .report import console, print_growth, print_plan, print_table, print_targets, ratios, targets

RESULTS = Path(__file__).resolve().parent / "results"
WAYS = (
    "floor",
    "floor-session",
    "floor-steps",
    "ephemeral",
    "server",
    "api",
    "cli-remote",
    "ansible-cold",
    "ansible-warm",
    "ansible-nocp",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--hosts", default="10,50,100", help="comma-separated host counts (default 10,50,100)")
    p.add_argument("--stop-seconds", type=float, default=1.0, help="agent stop time (default 1)")
    p.add_argument("--start-seconds", type=float, default=1.0, help="agent start time (default 1)")
    p.add_argument("--workers", type=int, default=32, help="our --max-workers, the floor's pool, Ansible's forks")
    p.add_argument("--repeat", type=int, default=1, help="measure each way this many times; report the median")
    p.add_argument(
        "--once-from",
        type=int,
        default=0,
        metavar="N",
        help="from N hosts on, measure each way once and the default path's first and reuse runs only "
        "(1,000 hosts: ~3 min a way, ~8 min for Ansible); default: every N like the others",
    )
    p.add_argument("--skip", default="", help=f"comma-separated ways to leave out: {','.join(WAYS)}")
    p.add_argument(
        "--variant-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="also measure 'ours: CLI + server' with this environment setting (repeatable; all together)",
    )
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of the bench's Prefect server, e.g. PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED=false "
        "(repeatable): to measure a server-side knob",
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, task stores)")
    p.add_argument("--out", type=Path, help="results file (default bench/results/<timestamp>.json)")
    args = p.parse_args(argv)
    args.host_counts = [int(x) for x in args.hosts.split(",") if x.strip()]
    args.skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    unknown = args.skip - set(WAYS)
    if unknown:
        p.error(f"unknown ways in --skip: {sorted(unknown)}")
    return args


def measure(label: str, sandbox, fn, repeat: int = 1) -> Result:
    """Run a measurement ``repeat`` times (every agent brought back after each), print the wall times, and
    return the run with the median wall time (all wall times in extra["walls"])."""
    console.print(f"  {label} ...", end="", highlight=False)
    runs = []
    for _ in range(repeat):
        try:
            result = fn()
        except Exception as exc:  # one broken way must not lose the others' figures
            result = Result(name=label, wall=float("nan"), ok=False, note=f"{type(exc).__name__}: {exc}")
        console.print(
            f" {result.wall:.2f} s{'' if result.ok else ' FAILED: ' + result.note[:200]}", end="", highlight=False
        )
        fixed = ensure_ready(sandbox)
        if fixed:
            result.extra["agents_restarted_after"] = fixed
        runs.append(result)
    console.print("")
    if any(not r.ok for r in runs):
        return next(r for r in runs if not r.ok)
    chosen = sorted(runs, key=lambda r: r.wall)[len(runs) // 2]
    if repeat > 1:
        chosen.extra["walls"] = [r.wall for r in runs]
    return chosen


def bench_hosts(n: int, args: argparse.Namespace, ctx: dict) -> list[Result]:
    """Every way on one sandbox of ``n`` hosts, in the documented order."""
    from deployments.sandbox import Sandbox

    from .ansible_run import AnsibleBench
    from .floor import KINDS, run_floor
    from .ours import run_cli

    work, skip, results = ctx["work"], args.skip, []
    large = bool(args.once_from) and n >= args.once_from
    rep = 1 if large else args.repeat
    started = time.monotonic()
    with Sandbox(n, stop_seconds=args.stop_seconds, start_seconds=args.start_seconds) as sandbox:
        console.print(f"[bold]{n} hosts[/]: sandbox up in {time.monotonic() - started:.1f} s", highlight=False)
        ensure_ready(sandbox)
        if "floor" not in skip:
            results.append(measure(KINDS["bare"], sandbox, lambda: run_floor(sandbox, workers=args.workers), rep))
        for kind in ("session", "steps"):
            if f"floor-{kind}" not in skip:
                results.append(
                    measure(KINDS[kind], sandbox, lambda: run_floor(sandbox, kind=kind, workers=args.workers), rep)
                )
        if "ephemeral" not in skip:
            results += _measure_default(sandbox, n, args, ctx, repeat=rep, restart=not large)
        if "server" not in skip:
            results.append(
                measure(
                    "ours: CLI + server",
                    sandbox,
                    lambda: run_cli(
                        sandbox,
                        name="ours: CLI + server",
                        work_dir=work,
                        prefect_home=ctx["client_home"],
                        api_url=ctx["api_url"],
                        workers=args.workers,
                        server_pid=ctx["server_pid"],
                    ),
                    rep,
                )
            )
        if args.variant_env:
            label = "ours: CLI + server, " + " ".join(args.variant_env)
            results.append(
                measure(
                    label,
                    sandbox,
                    lambda: run_cli(
                        sandbox,
                        name=label,
                        work_dir=work,
                        prefect_home=ctx["client_home"],
                        api_url=ctx["api_url"],
                        workers=args.workers,
                        server_pid=ctx["server_pid"],
                        env=dict(kv.split("=", 1) for kv in args.variant_env),
                    ),
                    rep,
                )
            )
        if not {"api", "cli-remote"} <= skip:
            results += _measure_api(sandbox, ctx, rep, skip)
        ansible = AnsibleBench(sandbox, work, args.workers)
        try:
            for mode in ("cold", "warm", "nocp"):
                if f"ansible-{mode}" not in skip:
                    results.append(measure(f"ansible {mode}", sandbox, lambda: ansible.run(mode), rep))
        finally:
            ansible.close()
    return results


def _measure_default(
    sandbox, n: int, args: argparse.Namespace, ctx: dict, *, repeat: int, restart: bool = True
) -> list[Result]:
    """``ocp-restart run``'s default path (no PREFECT_API_URL: a local Prefect server started once, then reused),
    with one OCP_RESTART_HOME for this N: the first run (starts the server, fresh Prefect database), ``--repeat``
    runs reusing it (median reported), then, with the server stopped as after its idle time, one run that starts
    it again on the existing database. The local server is stopped at the end (by its supervisor's pid)."""
    from .ours import run_cli_default, stop_local_server

    home = ctx["work"] / f"default-home-{n}"
    base = "ours: CLI default"

    def one(name: str):
        return lambda: run_cli_default(
            sandbox, name=name, home=home, prefect_home=ctx["ephemeral_home"], workers=args.workers
        )

    try:
        results = [measure(f"{base}, first", sandbox, one(f"{base}, first"))]
        results.append(measure(f"{base}, reuse", sandbox, one(f"{base}, reuse"), repeat))
        if restart:
            stop_local_server(home)
            results.append(measure(f"{base}, restarts server", sandbox, one(f"{base}, restarts server")))
    finally:
        stop_local_server(home)
    return results


def _measure_api(sandbox, ctx: dict, repeat: int, skip: set[str]) -> list[Result]:
    from .ours import ApiServer, run_api, run_cli_remote

    server = ApiServer(sandbox, ctx["work"], ctx["client_home"], ctx["api_url"], free_port())
    try:
        server.start()
        warmup, _, _ = server.restart([sandbox.hosts[0].id])
        ensure_ready(sandbox)
        results = []
        if "api" not in skip:
            results.append(
                measure(
                    "ours: API (serve)",
                    sandbox,
                    lambda: run_api(server, sandbox, prefect_pid=ctx["server_pid"]),
                    repeat,
                )
            )
            results[-1].extra["warmup_1_host_s"] = round(warmup, 2)
        if "cli-remote" not in skip:
            results.append(
                measure(
                    "ours: CLI -> serve", sandbox, lambda: run_cli_remote(server, sandbox, work_dir=ctx["work"]), repeat
                )
            )
        return results
    finally:
        server.stop()


def metadata(args: argparse.Namespace) -> dict:
    import paramiko
    import prefect

    from .ansible_run import ansible_version

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "mem_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "prefect": prefect.__version__,
        "paramiko": paramiko.__version__,
        "ansible": ansible_version(),
        "workers": args.workers,
        "stop_seconds": args.stop_seconds,
        "start_seconds": args.start_seconds,
        "skipped": sorted(args.skip),
        "prefect_server_env": args.server_env,
        **_git(),
    }


def _git() -> dict:
    """The commit measured, and whether the work tree had changes outside bench/."""
    import subprocess

    from .common import ROOT

    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.rstrip()

    dirty = [line[3:] for line in git("status", "--porcelain").splitlines() if not line[3:].startswith("bench/")]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "uncommitted_outside_bench": dirty}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from .ours import PrefectServer, prime_ephemeral
    from .plan_bench import run_plan_bench

    work = Path(tempfile.mkdtemp(prefix="ocp-bench-"))
    out = {"meta": metadata(args), "plan_1000": run_plan_bench(), "runs": {}}
    print_plan(out["plan_1000"])
    from deployments.local_prefect import RECORDER_BATCHING  # as the README tells users to set up their server

    server = PrefectServer(
        work / "prefect-server", free_port(), {**RECORDER_BATCHING, **dict(kv.split("=", 1) for kv in args.server_env)}
    )
    try:
        server.start()
        out["meta"]["prefect_server_ready_s"] = round(server.ready_seconds, 1)
        ctx = {
            "work": work,
            "api_url": server.api_url,
            "server_pid": server.proc.pid,
            "ephemeral_home": work / "prefect-ephemeral",
            "client_home": work / "prefect-client",
        }
        out["meta"]["ephemeral_prime_s"] = round(prime_ephemeral(ctx["ephemeral_home"]), 1)
        console.print(
            f"prefect server ready in {server.ready_seconds:.1f} s; ephemeral PREFECT_HOME primed in "
            f"{out['meta']['ephemeral_prime_s']:.1f} s; work dir {work}",
            highlight=False,
        )
        for n in args.host_counts:
            results = bench_hosts(n, args, ctx)
            checks = targets(n, results, out["plan_1000"])
            out["runs"][str(n)] = {
                "results": [r.to_json() for r in results],
                "ratios": ratios(results),
                "targets": [{"target": t, "measured": m, "met": ok} for t, m, ok in checks],
            }
            print_table(n, results)
            print_targets(checks)
            _write(out, args)
        print_growth(out["runs"])
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    console.print(f"results: {_write(out, args)}", highlight=False)
    return 0


def _write(out: dict, args: argparse.Namespace) -> Path:
    path = args.out or RESULTS / f"{out['meta']['date'].replace(':', '').replace('+0000', 'Z')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=str))
    return path


if __name__ == "__main__":
    raise SystemExit(main())
