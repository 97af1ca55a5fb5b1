"""The paths users take, in one run, with issue #23's targets checked: floor, first run, warm, after an idle stop,
Ansible, at 10 and 100 hosts (1,000 with --with-1000), and ``ocp-restart demo`` on a fresh home after bootstrap.

    python3 -m bench.paths                 # 10 and 100 hosts: ~6-10 min on a quiet 2-core machine
    python3 -m bench.paths --with-1000     # and 1,000 hosts (floor, first run, warm; ~10 min more)

For each N, on one Sandbox(N, stop 1 s, start 1 s), in this order (bench.run's ways, see bench/README.md):
``floor (bare paramiko)``; ``ocp-restart run`` without PREFECT_API_URL on a fresh OCP_RESTART_HOME (``first``: it
starts the local Prefect server on a new database), again with that server alive (``warm``, --repeat times,
median), again after the bench stopped the server as its idle stop would (``after idle stop``: the database
kept); ``ansible cold``. Ratios are to the floor measured in the same run, minutes before, on the same hosts:
compare those, not absolute seconds, on a shared machine (``other CPU s`` says how much others used).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from . import common
from .common import Result
from .report import console, print_table

FIRST, WARM, AFTER_IDLE = "ours: CLI default, first", "ours: CLI default, reuse", "ours: CLI default, restarts server"
FLOOR, ANSIBLE = "floor (bare paramiko)", "ansible cold"
PATHS = (("floor", FLOOR), ("first run", FIRST), ("warm", WARM), ("after idle stop", AFTER_IDLE), ("ansible", ANSIBLE))
SKIP = {"floor-session", "floor-steps", "server", "api", "cli-remote", "ansible-warm", "ansible-nocp"}


def targets(n: int, named: dict[str, Result]) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for #23's targets at ``n`` hosts."""
    checks: list[tuple[str, str, bool]] = []
    floor = named.get(FLOOR)
    if floor is None or not floor.ok:
        return checks

    def ratio(name: str, limit: float, label: str) -> None:
        if name in named and named[name].ok:
            r = named[name].wall / floor.wall
            checks.append((f"{label} <= {limit:.2f}x the floor", f"{r:.2f}x", r <= limit))

    def ansible_over(name: str, limit: float, label: str) -> None:
        if name in named and ANSIBLE in named and named[name].ok and named[ANSIBLE].ok:
            r = named[ANSIBLE].wall / named[name].wall
            checks.append((f"Ansible >= {limit:.2f}x {label}", f"{r:.2f}x", r >= limit))

    if n == 10 and AFTER_IDLE in named and named[AFTER_IDLE].ok:
        over = named[AFTER_IDLE].wall - floor.wall
        checks.append(("after idle stop <= floor + 3 s", f"floor + {over:.1f} s", over <= 3.0))
    if 100 <= n < 1000:
        ratio(AFTER_IDLE, 1.25, "after idle stop")
        ansible_over(AFTER_IDLE, 1.2, "after idle stop")
        ratio(FIRST, 1.40, "first run")
        ratio(WARM, 1.15, "warm")
        ratio(WARM, 1.05, "warm (moonshot)")
        ansible_over(WARM, 1.4, "warm")
    if n >= 1000:
        ratio(WARM, 1.2, "warm")
        ratio(FIRST, 1.25, "first run")
        for name in (FIRST, WARM):
            r = named.get(name)
            if r is not None and r.ok and r.rss_mb is not None:
                checks.append((f"{name} peak RSS <= 1 GiB", f"{r.rss_mb:.0f} MB", r.rss_mb <= 1024))
            backlog = r.extra.get("prefect_backlog_s") if r is not None else None
            if backlog is not None:
                checks.append((f"{name}: Prefect server idle <= 30 s after", f"{backlog:.0f} s", backlog <= 30))
    return checks


def measure_demo(work: Path) -> Result:
    """``ocp-restart demo`` (3 sandbox hosts) on a fresh OCP_RESTART_HOME after what bootstrap.sh does to it
    (``ocp-restart prefect prepare``, untimed), the whole process; its local Prefect server is stopped after."""
    import subprocess

    from .common import base_env, run_measured
    from .ours import stop_local_server

    home = work / "demo-home"
    env = base_env(OCP_RESTART_HOME=str(home), PREFECT_HOME=str(work / "demo-prefect"))
    env.pop("PREFECT_API_URL", None)
    cli = [sys.executable, "-m", "deployments.cli"]
    subprocess.run([*cli, "prefect", "prepare"], env=env, check=True, capture_output=True, timeout=300)
    common.wait_quiet()
    try:
        proc = run_measured([*cli, "demo", "--json"], env, log_dir=home, label="demo")
    finally:
        stop_local_server(home)
    result = Result(
        name="ocp-restart demo, fresh home after bootstrap", wall=round(proc.wall, 2), ok=proc.returncode == 0
    )
    proc.machine.record(result)
    if not result.ok:
        result.note = proc.stderr[-300:]
    return result


def print_paths(runs: dict[str, dict]) -> None:
    from rich.table import Table

    table = Table(title="#23's paths: wall s (x the floor of the same N, same run)")
    table.add_column("path")
    for n in runs:
        table.add_column(f"N={n}", justify="right")
        table.add_column("other CPU s", justify="right")
    for label, name in PATHS:
        cells = []
        for run in runs.values():
            named = {r["name"]: r for r in run["results"]}
            r, floor = named.get(name), named.get(FLOOR)
            if r is None:
                cells += ["", ""]
                continue
            ratio = f" ({r['wall'] / floor['wall']:.2f}x)" if floor and r["ok"] and floor["ok"] else ""
            cells += [
                ("FAILED " if not r["ok"] else "") + f"{r['wall']:.2f}{ratio}",
                f"{r['extra'].get('foreign_cpu_s', 0):.1f}",
            ]
        table.add_row(label, *cells)
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.paths", description=__doc__.split("\n\n")[0])
    p.add_argument("--hosts", default="10,100", help="comma-separated host counts (default 10,100)")
    p.add_argument("--with-1000", action="store_true", help="also 1,000 hosts (first run and warm only)")
    p.add_argument("--repeat", type=int, default=1, help="warm runs per N (median reported; default 1)")
    p.add_argument("--workers", type=int, default=32)
    p.add_argument("--no-demo", action="store_true", help="skip `ocp-restart demo` on a fresh home")
    p.add_argument("--no-ansible", action="store_true")
    p.add_argument(
        "--ansible-at-1000", action="store_true", help="with --with-1000: Ansible at 1,000 hosts too (~13 min more)"
    )
    p.add_argument(
        "--settle",
        type=float,
        default=20.0,
        help="between two measurements, wait at most this long for the machine to be quiet (default 20 s)",
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--out", type=Path, help="results file (default bench/results/paths-<timestamp>.json)")
    args = p.parse_args(argv)
    sizes = [int(x) for x in args.hosts.split(",") if x.strip()] + ([1000] if args.with_1000 else [])
    common.QUIET_TIMEOUT = args.settle

    from .run import RESULTS, _git, bench_hosts

    run_args = argparse.Namespace(
        stop_seconds=1.0,
        start_seconds=1.0,
        workers=args.workers,
        repeat=args.repeat,
        once_from=1000,
        skip=SKIP | ({"ansible-cold"} if args.no_ansible else set()),
        variant_env=[],
    )
    work = Path(tempfile.mkdtemp(prefix="ocp-paths-"))
    started = time.monotonic()
    out: dict = {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "cpus": os.cpu_count(),
            "load_before": os.getloadavg(),
            "sizes": sizes,
            **_git(),
        },
        "runs": {},
    }
    path = args.out or RESULTS / f"paths-{out['meta']['date'].replace(':', '').replace('+00:00', 'Z')}.json"
    ctx = {"work": work, "ephemeral_home": work / "prefect-client", "client_home": work / "prefect-client"}
    ctx["ephemeral_home"].mkdir(parents=True)
    all_checks: list[tuple[str, str, bool]] = []
    try:
        if not args.no_demo:
            demo = measure_demo(work)
            check = (
                "`ocp-restart demo` on a fresh home after bootstrap <= 6 s",
                f"{demo.wall:.1f} s",
                demo.ok and demo.wall <= 6.0,
            )
            console.print(
                f"demo on a fresh home after bootstrap: {demo.wall:.2f} s "
                f"(other CPU {demo.extra.get('foreign_cpu_s')} s)"
            )
            out["demo"] = {**demo.to_json(), "target": check}
            all_checks.append(check)
        for n in sizes:
            # 1,000 hosts: no after-idle run (once_from), as #23 asks only first and warm there
            skip_ansible = n >= 1000 and not args.ansible_at_1000
            sized = argparse.Namespace(
                **{**vars(run_args), "skip": run_args.skip | ({"ansible-cold"} if skip_ansible else set())}
            )
            results = bench_hosts(n, sized, ctx)
            named = {r.name: r for r in results}
            checks = targets(n, named)
            all_checks += [(f"N={n}: {t}", m, ok) for t, m, ok in checks]
            out["runs"][str(n)] = {
                "results": [r.to_json() for r in results],
                "targets": [{"target": t, "measured": m, "met": ok} for t, m, ok in checks],
            }
            print_table(n, results)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(out, indent=1, default=str))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_paths(out["runs"])
    for what, measured, met in all_checks:
        console.print(f"  {'[green]PASS[/]' if met else '[red]MISS[/]'}  {what}: {measured}", highlight=False)
    out["meta"].update(load_after=os.getloadavg(), minutes=round((time.monotonic() - started) / 60, 1))
    path.write_text(json.dumps(out, indent=1, default=str))
    console.print(
        f"{sum(ok for *_, ok in all_checks)}/{len(all_checks)} targets met in {out['meta']['minutes']} min; "
        f"load average before {out['meta']['load_before'][0]:.1f}, after {out['meta']['load_after'][0]:.1f}; "
        f"results: {path}",
        highlight=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
