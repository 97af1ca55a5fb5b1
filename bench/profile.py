"""Where our time goes: py-spy on a whole ``ocp-restart run`` process, plus micro-measurements of the suspects.

    python3 -m bench.profile record --hosts 100 --mode server        # CPU profile (py-spy, no idle samples)
    python3 -m bench.profile record --hosts 10 --mode ephemeral --idle   # wall-clock view, idle threads included
    python3 -m bench.profile summarize /tmp/ocp-bench-profiles/X.speedscope.json
    python3 -m bench.profile micro                                   # imports, store writes, task-run overhead

``record`` starts Sandbox(N, stop 1 s, start 1 s) (and for ``--mode server`` a ``prefect server``), runs the CLI
under ``py-spy record --format speedscope --subprocesses``, then summarizes: samples per process and thread
group, self time by library (the leaf frame's file), and the functions with the most inclusive samples.
The summary is printed and written next to the profile (``.summary.json``); profiles stay in --out-dir
(default /tmp/ocp-bench-profiles), they are large.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from .common import BIN, ROOT, base_env

LIBRARIES = (  # (label, substring of a frame's file), first match wins
    ("ours", str(ROOT) + "/"),
    ("prefect server", "/prefect/server/"),
    ("prefect", "/prefect/"),
    ("paramiko+crypto", "paramiko"),
    ("paramiko+crypto", "cryptography"),
    ("paramiko+crypto", "nacl"),
    ("sqlalchemy+sqlite", "sqlalchemy"),
    ("sqlalchemy+sqlite", "sqlite3"),
    ("pydantic", "pydantic"),
    ("http+async", "httpx"),
    ("http+async", "httpcore"),
    ("http+async", "anyio"),
    ("http+async", "asyncio"),
    ("http+async", "h11"),
    ("http+async", "uvicorn"),
    ("http+async", "starlette"),
    ("http+async", "fastapi"),
    ("logging", "/logging/"),
    ("threads", "threading.py"),
    ("threads", "concurrent/futures"),
    ("imports", "<frozen importlib"),
    ("alembic/migrations", "alembic"),
    ("rich", "/rich/"),
)


# Buckets: the innermost frame (function name, file substring) that matches names what a sample was spent on.
BUCKETS = (
    ("imports", "_find_and_load", "importlib"),
    ("ssh: known_hosts parse", "SSHSession._verify_host_key", "steps/ssh.py"),
    ("ssh: connect (handshake, auth)", "SSHSession.connect", "steps/ssh.py"),
    ("ssh: commands", "SSHSession.run", "steps/ssh.py"),
    ("ssh: paramiko transport threads", "Transport.run", "paramiko"),
    ("ours: subtask logs", "", "flows/logs.py"),
    ("ours: task store", "", "flows/store/"),
    ("ours: state machine", "", "flows/machine.py"),
    ("ours: steps (rest)", "", "steps/"),
    ("ours: run_node (rest)", "run_node", "flows/tasks.py"),
    ("prefect: task engine (per task run)", "run_task_sync", "prefect/task_engine.py"),
    ("prefect: submitting task runs", "ThreadPoolTaskRunner.submit", "prefect/task_runners.py"),
    ("prefect: waiting for futures", "wait", "prefect/futures.py"),
    ("ours: report.publish (artifacts)", "publish", "flows/report.py"),
    ("prefect: ephemeral server start", "", "prefect/server/api/server.py"),
    ("prefect: flow engine", "", "prefect/flow_engine.py"),
    ("ours: CLI before the flow", "_run", "deployments/cli.py"),
)


def _bucket(stack: list[int], frames: list[dict], thread: str) -> str:
    for idx in reversed(stack):
        name, file = frames[idx].get("name") or "", frames[idx].get("file") or ""
        for bucket, fn, where in BUCKETS:
            if where in file and (not fn or name == fn or (fn.endswith(".") and name.startswith(fn))):
                return bucket
    return f"other ({thread})"


# -- summarizing a speedscope file ---------------------------------------------------------------------------


def _library(frame: dict) -> str:
    path = frame.get("file", "") or ""
    for label, needle in LIBRARIES:
        if label == "ours" and "/site-packages/" in path:
            continue  # the project's own .venv is under ROOT too
        if needle in path:
            return label
    return "other"


def _thread_group(profile_name: str) -> str:
    """'Process 123 Thread 456 "ThreadPoolExecutor-0_3"' -> 'pid 123 ThreadPoolExecutor'."""
    pid = re.search(r"Process (\d+)", profile_name)
    name = re.search(r'"([^"]*)"', profile_name)
    base = re.sub(r"[-_]?\d+(_\d+)?$", "", name.group(1)) if name else "?"
    return f"pid {pid.group(1) if pid else '?'} {base}"


def summarize(path: Path, top: int = 25) -> dict:
    data = json.loads(path.read_text())
    frames = data["shared"]["frames"]
    label = [f"{f.get('name')} ({Path(f.get('file') or '?').name}:{f.get('line', '')})" for f in frames]
    libs = [_library(f) for f in frames]
    self_lib, self_fn, incl_fn, groups, buckets = Counter(), Counter(), Counter(), Counter(), Counter()
    total, timeline = 0.0, []
    for prof in data["profiles"]:
        group = _thread_group(prof.get("name", ""))
        main = re.match(r"Process (\d+) Thread (\d+)", prof.get("name", ""))
        is_main = bool(main) and main.group(1) == main.group(2)
        for stack, weight in zip(prof["samples"], prof["weights"]):
            if not stack:
                continue
            total += weight
            groups[group] += weight
            bucket = _bucket(stack, frames, "main" if is_main else group.split(" ", 2)[-1] or "?")
            buckets[bucket] += weight
            if is_main:
                _extend(timeline, f"pid {main.group(1)}: {bucket}", weight, _hint(stack, frames))
            self_lib[libs[stack[-1]]] += weight
            self_fn[label[stack[-1]]] += weight
            for idx in set(stack):
                incl_fn[label[idx]] += weight
    unit = data["profiles"][0].get("unit", "none") if data["profiles"] else "none"
    scale = 1.0 if unit == "seconds" else (1e-3 if unit == "milliseconds" else 1e-6 if unit == "microseconds" else 1.0)
    sec = lambda c: {k: round(v * scale, 2) for k, v in c}  # noqa: E731
    return {
        "file": str(path),
        "total_s": round(total * scale, 2),
        "unit": unit,
        "by_thread_group_s": sec(groups.most_common()),
        "buckets_s": sec(buckets.most_common()),
        "main_thread_timeline_s": [
            (b, round(w * scale, 2), h.most_common(1)[0][0]) for b, w, h in timeline if w * scale >= 0.05
        ],
        "self_by_library_s": sec(self_lib.most_common()),
        "self_top_s": sec(self_fn.most_common(top)),
        "inclusive_top_s": sec(incl_fn.most_common(top * 2)),
    }


def _hint(stack: list[int], frames: list[dict]) -> str:
    """The three innermost frames that are not the standard library's waiting machinery."""
    names = [
        frames[i].get("name") or "?"
        for i in reversed(stack)
        if "/lib/python3" not in (frames[i].get("file") or "") or "site-packages" in (frames[i].get("file") or "")
    ]
    return " < ".join(names[:3])


def _extend(timeline: list, bucket: str, weight: float, hint: str) -> None:
    """Samples of a main thread are in time order: merge consecutive ones of the same bucket (hints counted)."""
    if timeline and timeline[-1][0] == bucket:
        timeline[-1][1] += weight
    else:
        timeline.append([bucket, weight, Counter()])
    timeline[-1][2][hint] += weight


def print_summary(summary: dict) -> None:
    print(f"{summary['file']}: {summary['total_s']} sampled seconds")
    for key in ("by_thread_group_s", "buckets_s", "self_by_library_s", "self_top_s", "inclusive_top_s"):
        print(f"  {key}:")
        for name, seconds in summary[key].items():
            print(f"    {seconds:8.2f}  {name[:150]}")
    print("  main_thread_timeline_s (per process, segments >= 0.05 s, in order; most frequent frames):")
    for name, seconds, hint in summary["main_thread_timeline_s"]:
        print(f"    {seconds:8.2f}  {name}  [{hint[:110]}]")


# -- recording -----------------------------------------------------------------------------------------------


def record(hosts: int, mode: str, out_dir: Path, *, idle: bool, gil: bool, rate: int, workers: int) -> dict:
    from deployments.sandbox import Sandbox

    from .ours import PrefectServer, prime_ephemeral, run_cli
    from .run import free_port

    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ocp-profile-"))
    stamp = time.strftime("%Y%m%dT%H%M%S")
    view = ("-gil" if gil else "") + ("-idle" if idle else "")
    target = out_dir / f"cli-{hosts}-{mode}{view}-{stamp}.speedscope.json"
    # --nonblocking: never pause the process to sample it (blocking mode doubled the run's wall time).
    wrap = [
        str(BIN / "py-spy"),
        "record",
        "--format",
        "speedscope",
        "-o",
        str(target),
        "--rate",
        str(rate),
        "--nonblocking",
        "--subprocesses",
        *(["--idle"] if idle else []),
        *(["--gil"] if gil else []),
        "--",
    ]
    from deployments.local_prefect import RECORDER_BATCHING

    server = PrefectServer(work / "prefect-server", free_port(), dict(RECORDER_BATCHING)) if mode == "server" else None
    try:
        if server:
            server.start()
        else:
            prime_ephemeral(work / "prefect-ephemeral")
        with Sandbox(hosts, stop_seconds=1, start_seconds=1) as sandbox:
            result = run_cli(
                sandbox,
                name=f"profiled CLI {mode}",
                work_dir=work,
                prefect_home=work / ("prefect-client" if server else "prefect-ephemeral"),
                api_url=server.api_url if server else None,
                workers=workers,
                wrap=wrap,
            )
    finally:
        if server:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    summary = summarize(target)
    summary["run"] = result.to_json()
    target.with_suffix("").with_suffix(".summary.json").write_text(json.dumps(summary, indent=1))
    return summary


# -- micro-measurements --------------------------------------------------------------------------------------


def _import_seconds(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=base_env(), check=True
    ).stdout
    return round(float(out.strip()), 3)


def _store_costs(hosts: int = 100, calls: int = 2000) -> dict:
    """ms per store write, with the 5N+4-subtask task of ``hosts`` hosts in a fresh SQLite store (one thread)."""
    from flows import machine
    from flows.models import SubtaskStatus
    from flows.plan import build_plan
    from flows.store import TaskStore

    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp, TaskStore(f"sqlite:///{tmp}/t.db") as store:
        task_id = store.create_task(build_plan(list(range(1, hosts + 1))), creator="b", executor="x")
        record = store.load(task_id)
        ids = [r.id for r in record.subtasks]
        line = "2026-01-01 00:00:00.000  INFO 1 --- [worker] host : $ /x/bin/ocp_agentctl status"

        def per_call(fn, n: int) -> float:
            started = time.perf_counter()
            for i in range(n):
                fn(i)
            return round(1000 * (time.perf_counter() - started) / n, 3)

        spent = {"start": 0.0, "finish": 0.0}

        def transition(kind: str, decide) -> None:  # the runner's way: decided in memory, written guarded
            nonlocal record
            started = time.perf_counter()
            record = store.apply(decide(record))
            spent[kind] += time.perf_counter() - started

        for sid in ids:  # plan order is topological: each subtask is READY when its turn comes
            transition("start", lambda r: machine.start_subtask(r, sid, "t", "#"))
            transition("finish", lambda r: machine.finish_subtask(r, sid, SubtaskStatus.SUCCESSFUL, "t"))
        return {
            "append_log_ms": per_call(lambda i: store.append_logs([(ids[i % len(ids)], line)]), calls),
            "start_subtask_ms": round(1000 * spent["start"] / len(ids), 3),
            "finish_subtask_ms": round(1000 * spent["finish"] / len(ids), 3),
            "save_snapshot_ms": per_call(lambda i: store.save_snapshot(task_id, i, {"a": 1}), 200),
            "snapshot_read_ms": per_call(lambda i: store.snapshot(task_id, i % 200), 500),
            "load_task_ms": per_call(lambda i: store.load(task_id), 20),
        }


def _task_run_overhead(api_url: str, runs: int = 500, workers: int = 32) -> dict:
    """CPU and wall per no-op Prefect task run (our task options) in a flow with ThreadPoolTaskRunner(workers),
    against a running Prefect server."""
    code = f"""
import time, resource
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.futures import wait

@task(cache_policy=NO_CACHE, persist_result=False, task_run_name="{{label}}")
def noop(label: str) -> None:
    return None

@flow(task_runner=ThreadPoolTaskRunner(max_workers={workers}))
def many() -> None:
    t = time.perf_counter(); c = time.process_time()
    wait([noop.submit(label=str(i)) for i in range({runs})])
    print(time.perf_counter() - t, time.process_time() - c)

many()
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=base_env(PREFECT_API_URL=api_url),
        timeout=600,
        check=True,
    )
    wall, cpu = (float(x) for x in out.stdout.split()[-2:])
    return {
        "runs": runs,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "ms_cpu_per_run": round(1000 * cpu / runs, 1),
        "runs_per_s": round(runs / wall, 1),
    }


def micro(out_dir: Path) -> dict:
    from .ours import PrefectServer
    from .run import free_port

    out = {
        "import_s": {m: _import_seconds(m) for m in ("paramiko", "prefect", "flows.restart", "deployments.cli")},
        "store_100_hosts": _store_costs(),
    }
    with tempfile.TemporaryDirectory(prefix="bench-micro-") as tmp:
        server = PrefectServer(Path(tmp) / "prefect", free_port())
        try:
            server.start()
            out["task_runs_504"] = _task_run_overhead(server.api_url, runs=504)
        finally:
            server.stop()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"micro-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(json.dumps(out, indent=1))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.profile", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("--hosts", type=int, default=100)
    rec.add_argument("--mode", choices=("server", "ephemeral"), default="server")
    rec.add_argument("--idle", action="store_true", help="include idle samples (wall-clock view)")
    rec.add_argument(
        "--all-threads",
        action="store_true",
        help="sample threads whether or not they hold the GIL (default: --gil, i.e. Python CPU)",
    )
    rec.add_argument("--rate", type=int, default=50, help="samples per second (default 50)")
    rec.add_argument("--workers", type=int, default=32)
    rec.add_argument("--out-dir", type=Path, default=Path("/tmp/ocp-bench-profiles"))
    summ = sub.add_parser("summarize")
    summ.add_argument("file", type=Path)
    mic = sub.add_parser("micro")
    mic.add_argument("--out-dir", type=Path, default=Path("/tmp/ocp-bench-profiles"))
    args = p.parse_args(argv)
    if args.command == "record":
        summary = record(
            args.hosts,
            args.mode,
            args.out_dir,
            idle=args.idle,
            gil=not args.all_threads,
            rate=args.rate,
            workers=args.workers,
        )
        print_summary(summary)
        run = summary["run"]
        print(f"  run: wall {run['wall']} s, startup {run['startup']} s, stages {run['stages']}, tail {run['tail']} s")
    elif args.command == "summarize":
        print_summary(summarize(args.file))
    else:
        print(json.dumps(micro(args.out_dir), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
