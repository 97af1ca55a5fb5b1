"""The tables (rich) and the ratios and target checks printed after each run of the benchmark."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from .common import STAGES, Result

console = Console(width=None if sys.stdout.isatty() else 200)

DEFAULT = ("ours: CLI default, first", "ours: CLI default, reuse", "ours: CLI default, restarts server")
OURS = ("ours: CLI ephemeral", *DEFAULT, "ours: CLI + server", "ours: API (serve)", "ours: CLI -> serve")
WHOLE_PROCESS = ("ours: CLI ephemeral", *DEFAULT, "ours: CLI + server", "ours: CLI -> serve")  # exec to exit


def _fmt(value, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def by_name(results: list[Result]) -> dict[str, Result]:
    return {r.name: r for r in results}


def ratios(results: list[Result]) -> dict:
    """ours/floor for each of our ways, and ansible (each mode) / ours (each way), from wall times."""
    named = by_name(results)
    floor = named.get("floor (bare paramiko)")
    out: dict = {}
    for ours in OURS:
        if ours not in named:
            continue
        if floor:
            out[f"{ours} / floor"] = round(named[ours].wall / floor.wall, 2)
        for mode in ("cold", "warm", "nocp"):
            if f"ansible {mode}" in named:
                out[f"ansible {mode} / {ours}"] = round(named[f"ansible {mode}"].wall / named[ours].wall, 2)
    return out


def targets(n: int, results: list[Result], plan: dict | None) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for the issue's targets that apply to ``n`` hosts."""
    named = by_name(results)
    floor = named.get("floor (bare paramiko)")
    checks: list[tuple[str, str, bool | None]] = []
    if n >= 100 and floor:
        limit = 1.5 if n >= 1000 else 1.25  # #14's targets: 1.25x at 100 hosts, 1.5x at 1,000
        for ours in OURS:
            if ours in named:
                r = named[ours].wall / floor.wall
                checks.append((f"{ours} <= {limit} x floor", f"{r:.2f}x", r <= limit))
                cold = named.get("ansible cold")
                if cold:
                    a = cold.wall / named[ours].wall
                    checks.append((f"ansible cold >= 1.4 x {ours}", f"{a:.2f}x", a >= 1.4))
                if named[ours].rss_mb is not None:
                    checks.append(
                        (f"{ours} peak RSS <= 1 GiB", f"{named[ours].rss_mb:.0f} MB", named[ours].rss_mb <= 1024)
                    )
                backlog = named[ours].extra.get("prefect_backlog_s")
                if n >= 1000 and backlog is not None:
                    checks.append(
                        (f"{ours}: Prefect server idle <= 30 s after the run", f"{backlog:.0f} s", backlog <= 30)
                    )
    if n <= 10 and floor:
        for ours in WHOLE_PROCESS:
            if ours in named:
                over = named[ours].wall - floor.wall
                checks.append((f"{ours} whole process <= floor + 2 s", f"floor + {over:.1f} s", over <= 2.0))
    if plan:
        checks.append(
            (
                "1,000-host plan built and validated < 1 s",
                f"{plan['build_plan_s']:.2f} s",
                plan["build_plan_s"] + plan["request_validate_s"] < 1.0,
            )
        )
    return checks


def print_table(n: int, results: list[Result]) -> None:
    named = by_name(results)
    floor = named.get("floor (bare paramiko)")
    table = Table(title=f"{n} hosts (stop 1 s + start 1 s per agent)")
    for col in (
        "way",
        "ok",
        "wall s",
        "÷ floor",
        "startup",
        *STAGES,
        "gaps",
        "tail",
        "RSS MB",
        "tree MB",
        "CPU s",
        "machine CPU s",
        "other CPU s",
    ):
        table.add_column(col, justify="left" if col == "way" else "right")
    for r in results:
        ok = f"{r.restarted}/{n}" + ("" if r.ok else " FAIL")
        table.add_row(
            r.name,
            ok,
            _fmt(r.wall),
            _fmt(r.wall / floor.wall) if floor else "",
            _fmt(r.startup),
            *(_fmt(r.stages.get(s)) for s in STAGES),
            _fmt(r.gaps),
            _fmt(r.tail),
            _fmt(r.rss_mb, 0),
            _fmt(r.tree_rss_mb, 0),
            _fmt(r.cpu_s, 1),
            _fmt(r.machine_cpu_s, 1),
            _fmt(r.extra.get("foreign_cpu_s"), 1),
        )
    console.print(table)
    for key, value in ratios(results).items():
        console.print(f"  {key}: {value:.2f}x", highlight=False)
    for r in results:
        if r.note:
            console.print(f"  [red]{r.name}: {r.note}[/]", highlight=False)


def print_growth(runs: dict[str, dict]) -> None:
    """One row per way, one column per N: the wall time and, beside it, its ratio to that N's floor."""
    sizes = sorted(runs, key=int)
    if len(sizes) < 2:
        return
    walls = {n: {r["name"]: r["wall"] for r in runs[n]["results"] if r["ok"]} for n in sizes}
    ways = list(dict.fromkeys(name for n in sizes for name in walls[n]))
    table = Table(title="How each way grows with N: wall s (÷ floor at that N)")
    table.add_column("way")
    for n in sizes:
        table.add_column(f"N={n}", justify="right")
    for way in ways:
        cells = []
        for n in sizes:
            wall, floor = walls[n].get(way), walls[n].get("floor (bare paramiko)")
            cells.append("" if wall is None else f"{wall:.2f}" + (f" ({wall / floor:.2f}x)" if floor else ""))
        table.add_row(way, *cells)
    console.print(table)


def print_targets(checks: list[tuple[str, str, bool | None]]) -> None:
    for what, measured, met in checks:
        mark = "[green]met[/]" if met else "[red]MISSED[/]"
        console.print(f"  {mark}  {what}: {measured}", highlight=False)


def print_plan(plan: dict) -> None:
    console.print(
        f"1,000-host plan ({plan['nodes']} nodes): request validation {plan['request_validate_s']:.3f} s, "
        f"build_plan (with networkx validation) {plan['build_plan_s']:.3f} s "
        f"(validate alone {plan['validate_only_s']:.3f} s), record in SQLite {plan['store_create_s']:.3f} s, "
        f"whole submit (validate + inventory + plan + record) {plan['submit_total_s']:.3f} s, "
        f"load {plan['store_load_s']:.3f} s, task instance JSON {plan['task_instance_json_s']:.3f} s",
        highlight=False,
    )
