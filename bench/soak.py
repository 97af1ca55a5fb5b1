"""Soak (#22): one ``ocp-restart serve`` (embedded launcher) with its own Prefect server, three clients POSTing
restarts back to back and a reader listing tasks, until ``--tasks`` restarts have finished.

    python3 -m bench.soak --tasks 1000          # the issue's figure; ~3 restarts/s on this machine's 2 cores
    python3 -m bench.soak --tasks 30            # a quick check: about a minute

Each client owns its own sandbox hosts (real sshd on 127.0.0.x; a client's next POST goes to its next host once the
previous task has ended), so nothing is refused for a held host. Every ``--every`` finished tasks it samples the
serve process (RSS, open files, threads) and the two databases (file sizes, SQLite's WAL included). At the end: how
many tasks ended SUCCESSFUL, the trend of each sample (a line per sample and a least-squares slope per 100 tasks),
the task list's latency (p50, p99), the databases' growth per task, then ``ocp-restart prune --older-than 0`` and
the sizes after (file and pages in use: SQLite keeps a file's size after a DELETE; its free pages are reused).
Results are written to ``bench/results/soak-<UTC timestamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from .common import ROOT, status_kb

RESULTS = ROOT / "bench" / "results"


def database_bytes(path: Path) -> dict[str, int]:
    """A SQLite database's file size (with its -wal) and the bytes of its pages in use (size minus free pages)."""
    files = sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as conn:
        pages, free, size = (
            conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count", "page_size")
        )
    return {"file_bytes": files, "used_bytes": (pages - free) * size}


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (0 with fewer than two points)."""
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


class Soak:
    """The run's shared state: the serve process, the finished-task count, the samples and the reader's times."""

    def __init__(self, server, prefect_db: Path, total: int, every: int, seconds: float) -> None:
        self.server, self.prefect_db, self.total, self.every = server, prefect_db, total, every
        self.store_db = server.home / "tasks.db"
        self.lock = threading.Lock()
        self.done = 0
        self.statuses: dict[str, int] = {}
        self.failures: list[str] = []
        self.samples: list[dict] = []
        self.list_ms: list[float] = []
        self.stop = threading.Event()
        self.started = time.monotonic()
        self.deadline = self.started + seconds  # bounded in time as in count: it stops by itself

    def sample(self) -> dict:
        pid = self.server.proc.pid
        row = {
            "tasks": self.done,
            "seconds": round(time.monotonic() - self.started, 1),
            "rss_mb": round((status_kb(pid, "VmRSS") or 0) / 1024, 1),
            "open_files": open_files(pid),
            "threads": status_kb(pid, "Threads") or 0,  # a count, read from the same /proc/PID/status
            "store": database_bytes(self.store_db),
            "prefect": database_bytes(self.prefect_db),
        }
        self.samples.append(row)
        print(
            f"{row['tasks']:>6} tasks {row['seconds']:>7.1f} s  RSS {row['rss_mb']:>6.1f} MB  files "
            f"{row['open_files']:>4}  threads {row['threads']:>3}  store {row['store']['file_bytes'] / 2**20:7.2f} MB"
            f"  prefect {row['prefect']['file_bytes'] / 2**20:7.2f} MB",
            flush=True,
        )
        return row

    def finished(self, status: str, note: str) -> bool:
        """Count one finished task; sample on every ``every``-th. False once ``total`` tasks are in."""
        with self.lock:
            if self.done >= self.total:
                return False
            self.done += 1
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status != "SUCCESSFUL":
                self.failures.append(note)
            if self.done % self.every == 0 or self.done == self.total:
                self.sample()
            return self.done < self.total


def client(soak: Soak, host_ids: list[int], poll: float) -> None:
    """POST a restart of one host, poll its task until it ends, go on with the next host; until the soak ends."""
    import httpx

    with httpx.Client(base_url=soak.server.url, auth=soak.server.client.auth, timeout=60) as http:
        turn = 0
        while not soak.stop.is_set():
            if time.monotonic() > soak.deadline:
                soak.stop.set()
                with soak.lock:
                    if soak.samples[-1]["tasks"] != soak.done:
                        soak.sample()
                break
            host = host_ids[turn % len(host_ids)]
            turn += 1
            answer = http.post("/api/v2/compute/hosts/batchRestartAgents", json={"hostIds": [host]})
            if answer.status_code != 200:
                if not soak.finished(f"POST {answer.status_code}", answer.text[:300]):
                    soak.stop.set()
                continue
            task_id = answer.json()["data"]["id"]
            while True:
                time.sleep(poll)
                task = http.get(f"/api/v2/tasks/instances/{task_id}").json()["data"]
                if task["status"] != "RUNNING":
                    break
            if not soak.finished(task["status"], f"task {task_id} on host {host}: {task['status']}"):
                soak.stop.set()


def reader(soak: Soak, pause: float) -> None:
    """List tasks as an OCP page does (the newest 10), timing each answer, until the soak ends."""
    import httpx

    with httpx.Client(base_url=soak.server.url, auth=soak.server.client.auth, timeout=60) as http:
        while not soak.stop.is_set():
            started = time.perf_counter()
            answer = http.get("/api/v2/tasks/instances", params={"size": 10, "sort": "id,desc"})
            elapsed = (time.perf_counter() - started) * 1000
            if answer.status_code == 200:
                soak.list_ms.append(elapsed)
            time.sleep(pause)


def prune(server) -> dict:
    """``ocp-restart prune --older-than 0`` on the server's store (while it serves), with its wall time."""
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "deployments.cli", "prune", "--older-than", "0"],
        env=server.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return {"exit": run.returncode, "output": run.stderr.strip(), "seconds": round(time.monotonic() - started, 2)}


def summary(soak: Soak, pruned: dict, after: dict, args: argparse.Namespace) -> dict:
    first, last = soak.samples[0], soak.samples[-1]
    tasks = max(1, last["tasks"] - first["tasks"])

    half = soak.samples[len(soak.samples) // 2 :]  # past the warm-up: caches and pools filled

    def per_100(key: str, samples: list[dict] = soak.samples) -> float:
        return round(100 * slope([s["tasks"] for s in samples], [s[key] for s in samples]), 3)

    def growth(db: str, kind: str) -> float:
        return round((last[db][kind] - first[db][kind]) / tasks)

    return {
        "tasks": soak.done,
        "statuses": soak.statuses,
        "failures": soak.failures[:20],
        "seconds": last["seconds"],
        "hosts": args.hosts,
        "clients": args.clients,
        "samples": soak.samples,
        "rss_mb_per_100_tasks": per_100("rss_mb"),
        "open_files_per_100_tasks": per_100("open_files"),
        "threads_per_100_tasks": per_100("threads"),
        "second_half_rss_mb_per_100_tasks": per_100("rss_mb", half),
        "second_half_open_files_per_100_tasks": per_100("open_files", half),
        "list_ms": {
            "count": len(soak.list_ms),
            "p50": round(percentile(soak.list_ms, 0.50), 1),
            "p99": round(percentile(soak.list_ms, 0.99), 1),
            "max": round(max(soak.list_ms, default=0.0), 1),
        },
        "store_bytes_per_task": growth("store", "file_bytes"),
        "prefect_bytes_per_task": growth("prefect", "file_bytes"),
        "store_used_bytes_per_task": growth("store", "used_bytes"),
        "prefect_used_bytes_per_task": growth("prefect", "used_bytes"),
        "prune": pruned,
        "after_prune": after,
    }


def report(out: dict) -> None:
    mb = 2**20
    last, after = out["samples"][-1], out["after_prune"]
    print(
        f"\n{out['tasks']} tasks in {out['seconds']} s ({out['clients']} clients, {out['hosts']} hosts): "
        f"{out['statuses']}"
    )
    print(
        f"trend per 100 tasks (least squares over {len(out['samples'])} samples): RSS "
        f"{out['rss_mb_per_100_tasks']:+.2f} MB, open files {out['open_files_per_100_tasks']:+.2f}, threads "
        f"{out['threads_per_100_tasks']:+.2f}; second half: RSS {out['second_half_rss_mb_per_100_tasks']:+.2f} MB, "
        f"open files {out['second_half_open_files_per_100_tasks']:+.2f}"
    )
    lm = out["list_ms"]
    print(f"task list (size 10): {lm['count']} reads, p50 {lm['p50']} ms, p99 {lm['p99']} ms, max {lm['max']} ms")
    print(
        f"growth per task: store {out['store_bytes_per_task']} B (pages in use {out['store_used_bytes_per_task']} B), "
        f"Prefect {out['prefect_bytes_per_task']} B (pages in use {out['prefect_used_bytes_per_task']} B); "
        "files with their WAL"
    )
    print(f"prune: exit {out['prune']['exit']} in {out['prune']['seconds']} s: {out['prune']['output']}")
    for db in ("store", "prefect"):
        print(
            f"{db}: file {last[db]['file_bytes'] / mb:.2f} -> {after[db]['file_bytes'] / mb:.2f} MB, pages in use "
            f"{last[db]['used_bytes'] / mb:.2f} -> {after[db]['used_bytes'] / mb:.2f} MB"
        )


def main(argv: list[str] | None = None) -> int:
    from deployments.local_prefect import LEAN_SERVICES, RECORDER_BATCHING
    from deployments.sandbox import Sandbox

    from .ours import ApiServer, PrefectServer
    from .prefect_floor import _free_port

    p = argparse.ArgumentParser(prog="python3 -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=1000, help="restarts to finish (default 1000)")
    p.add_argument("--clients", type=int, default=3, help="clients POSTing back to back (default 3)")
    p.add_argument("--hosts", type=int, default=6, help="sandbox hosts, shared out among the clients (default 6)")
    p.add_argument("--every", type=int, help="sample every N finished tasks (default tasks/10, at most 100)")
    p.add_argument("--poll", type=float, default=0.5, help="a client's poll of its task, seconds (default 0.5)")
    p.add_argument("--read-pause", type=float, default=0.2, help="the reader's pause between lists (default 0.2)")
    p.add_argument("--max-minutes", type=float, default=60.0, help="stop after this long, done or not (default 60)")
    p.add_argument("--out", type=Path, help="results file (default bench/results/soak-<timestamp>.json)")
    args = p.parse_args(argv)
    if args.tasks < 1 or args.clients < 1 or args.hosts < args.clients:
        p.error("--tasks and --clients must be 1 or more, and --hosts at least --clients")
    every = args.every or max(1, min(100, args.tasks // 10))
    work = Path(tempfile.mkdtemp(prefix="ocp-soak-"))
    prefect = PrefectServer(work / "prefect", _free_port(), settings={**LEAN_SERVICES, **RECORDER_BATCHING}).start()
    try:
        with Sandbox(args.hosts) as box:
            server = ApiServer(box, work, work / "client", prefect.api_url, _free_port()).start()
            try:
                ids = [h.id for h in box.hosts]
                server.restart(ids[:1])  # imports and the first flow run: not part of the trend
                soak = Soak(server, work / "prefect" / "prefect.db", args.tasks, every, 60 * args.max_minutes)
                soak.sample()
                threads = [
                    threading.Thread(target=client, args=(soak, ids[i :: args.clients], args.poll), daemon=True)
                    for i in range(args.clients)
                ] + [threading.Thread(target=reader, args=(soak, args.read_pause), daemon=True)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                time.sleep(2)  # the last runs' Prefect events are written in batches (1 s)
                pruned = prune(server)
                after = {"store": database_bytes(soak.store_db), "prefect": database_bytes(soak.prefect_db)}
                out = summary(soak, pruned, after, args)
            finally:
                server.stop()
    finally:
        prefect.stop()
    report(out)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = args.out or RESULTS / f"soak-{datetime.now(UTC).strftime('%Y-%m-%dT%H%M%SZ')}.json"
    out["work_dir"] = str(work)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"results: {path}")
    return 0 if out["statuses"] == {"SUCCESSFUL": out["tasks"]} and out["prune"]["exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
