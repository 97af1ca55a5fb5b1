"""Where the seconds of each path go, from exec to the first node (issue #23): one wall-clock timeline per path.

    python3 -m bench.timeline [--hosts 10] [--repeat 3]

On one Sandbox(N, stop 1 s, start 1 s) and one OCP_RESTART_HOME, ``ocp-restart run`` under ``bench.timeline_cli``
(the CLI with a clock on its phases) on the three paths: ``first`` (a fresh home: the local Prefect server is
started from the installation's template), ``warm`` (that server alive), ``after idle stop`` (the server stopped as
its idle stop would, its database kept). Besides the CLI's own marks, the local server's: when its supervisor and
the server were exec'd and when the supervisor saw it healthy. Each mark is the median over --repeat runs, in
seconds since the CLI's exec; the first node's start is where the work on the hosts begins.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import ROOT, base_env, wait_quiet
from .ours import local_server, stop_local_server
from .timeline_cli import started_at

PATHS = ("first", "warm", "after idle stop")


def run_once(inventory: Path, home: Path) -> dict[str, float]:
    """One ``ocp-restart run`` under the clock: its marks, and the local server's, in seconds since its exec."""
    before = local_server(home)
    out = subprocess.run(
        [sys.executable, "-m", "bench.timeline_cli", "run", "--inventory", str(inventory), "--json"],
        env=base_env(OCP_RESTART_HOME=str(home)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if out.returncode != 0:
        raise RuntimeError(f"ocp-restart run exited {out.returncode}: {out.stderr[-1500:]}")
    ended = time.time()
    line = next(x for x in out.stderr.splitlines() if x.startswith("TIMELINE "))
    timeline = json.loads(line.removeprefix("TIMELINE "))
    exec_at, marks = float(timeline["exec"]), dict(timeline["marks"])  # every mark from the CLI's own exec
    marks["process exits"] = round(ended - exec_at, 3)
    info = local_server(home)
    if info and (before is None or before.get("pid") != info.get("pid")):  # this run started the server
        execs = (("local server: supervisor exec'd", info["pid"]), ("local server: exec'd", info["server_pid"]))
        for name, pid in execs:
            at = started_at(int(pid))
            if at is not None:
                marks[name] = round(at - exec_at, 3)
        marks["local server: healthy (its supervisor saw it)"] = round(float(info["started"]) - exec_at, 3)
    return marks


def main(argv: list[str] | None = None) -> int:
    from deployments.sandbox import Sandbox

    p = argparse.ArgumentParser(prog="python3 -m bench.timeline", description=__doc__.split("\n\n")[0])
    p.add_argument("--hosts", type=int, default=10)
    p.add_argument("--repeat", type=int, default=3, help="runs per path (each mark: the median)")
    p.add_argument("--out", type=Path, help="write the marks as JSON here too")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ocp-timeline-"))
    results: dict[str, list[dict[str, float]]] = {path: [] for path in PATHS}
    try:
        with Sandbox(args.hosts, stop_seconds=1, start_seconds=1) as sandbox:
            for i in range(args.repeat):
                home = work / f"home-{i}"
                wait_quiet()
                results["first"].append(run_once(sandbox.inventory_path, home))
                wait_quiet()
                results["warm"].append(run_once(sandbox.inventory_path, home))
                stop_local_server(home)
                wait_quiet()
                results["after idle stop"].append(run_once(sandbox.inventory_path, home))
                stop_local_server(home)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    names = sorted({n for runs in results.values() for r in runs for n in r}, key=lambda n: _order(results, n))
    print(f"{args.hosts} hosts, seconds since the CLI's exec (median of {args.repeat}):")
    print(f"{'mark':58} " + " ".join(f"{path:>15}" for path in PATHS))
    medians: dict[str, dict[str, float]] = {}
    for name in names:
        row = []
        for path in PATHS:
            values = [r[name] for r in results[path] if name in r]
            if values:
                medians.setdefault(path, {})[name] = statistics.median(values)
            row.append(f"{statistics.median(values):15.2f}" if values else f"{'':>15}")
        print(f"{name:58} " + " ".join(row))
    if args.out:
        args.out.write_text(json.dumps({"hosts": args.hosts, "medians": medians, "runs": results}, indent=1))
    return 0


def _order(results: dict[str, list[dict[str, float]]], name: str) -> float:
    """Where a mark goes in the table: its median on the first path that has it."""
    for path in PATHS:
        values = [r[name] for r in results[path] if name in r]
        if values:
            return statistics.median(values)
    return 0.0


if __name__ == "__main__":
    raise SystemExit(main())
