"""What the CLI prints about a task: its subtasks as rows, the final table, the dry run's table, and the live
progress while it runs (rich). Pure presentation: the rows come from the store or from a server's JSON."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI imports this module at start: keep `ocp-restart --help` from loading the flows
    from rich.console import Console as RichConsole

    from flows.models import TaskInstance
    from flows.records import TaskRecord


@dataclass(frozen=True, slots=True)
class Row:
    """One subtask as the progress view and the tables show it."""

    id: int
    name: str
    status: str
    host_id: int | None
    start_time: str | None = None
    finish_time: str | None = None

    @property
    def seconds(self) -> float | None:
        if self.start_time and self.finish_time:
            return (datetime.fromisoformat(self.finish_time) - datetime.fromisoformat(self.start_time)).total_seconds()
        return None


def rows_from_record(record: TaskRecord) -> list[Row]:
    """A task record's subtasks as rows."""
    return [Row(s.id, s.name, s.status.value, s.host_id, s.start_time, s.finish_time) for s in record.subtasks]


def rows_from_wire(instance: dict[str, Any]) -> list[Row]:
    """A task instance's subtasks (OCP's JSON, from a server) as rows; it carries no times per host."""
    hosts = instance["context"]["listMap"].get("host_ids", [])
    single = instance.get("hostId")  # a single-host operation: every subtask is that host's (parallelIdx -1)
    return [
        Row(
            s["id"],
            s["name"],
            s["status"],
            single
            if single is not None
            else int(hosts[s["parallelIdx"]])
            if 0 <= s["parallelIdx"] < len(hosts)
            else None,
        )
        for s in instance["subtasks"]
    ]


_STYLE = {"SUCCESSFUL": "green", "FAILED": "bold red", "RUNNING": "yellow", "READY": "cyan", "PENDING": "dim"}


TABLE_ROWS_MAX = 60  # beyond this (about 11 hosts) the final table is one row per step, plus the failures


def task_table(task_id: int, name: str, status: str, rows: list[Row]):
    if len(rows) > TABLE_ROWS_MAX:
        return _summary_table(task_id, name, status, rows)
    return _subtask_table(task_id, name, status, rows)


def _summary_table(task_id: int, name: str, status: str, rows: list[Row]):
    """One row per step (counts by status, the slowest subtask), then every FAILED subtask (at most 50)."""
    from rich.console import Group
    from rich.table import Table

    table = Table(title=f"task {task_id}  {name}  [{status}]  {len(rows)} subtasks")
    for col in ("step", "SUCCESSFUL", "FAILED", "other", "slowest s"):
        table.add_column(col, justify="left" if col == "step" else "right")
    for step, group in _stages(rows).items():
        counts = {s: sum(r.status == s for r in group) for s in _DONE}
        slowest = max((r.seconds or 0.0 for r in group), default=0.0)
        table.add_row(
            step,
            str(counts["SUCCESSFUL"]),
            f"[bold red]{counts['FAILED']}" if counts["FAILED"] else "0",
            str(len(group) - sum(counts.values())),
            f"{slowest:.2f}" if slowest else "",
        )
    failed = [r for r in rows if r.status == "FAILED"]
    lines = [f"FAILED {r.id} {r.name} @ host {r.host_id}" for r in failed[:50]]
    if len(failed) > 50:
        lines.append(f"... and {len(failed) - 50} more FAILED subtasks (`ocp-restart status {task_id} --json`)")
    return Group(table, *lines)


def _subtask_table(task_id: int, name: str, status: str, rows: list[Row]):
    from rich.table import Table

    table = Table(title=f"task {task_id}  {name}  [{status}]")
    for col in ("subtask", "step", "host", "status", "seconds"):
        table.add_column(col, justify="right" if col in ("subtask", "seconds") else "left")
    for row in rows:
        seconds = row.seconds
        took = f"{seconds:.2f}" if seconds is not None else ""
        host = str(row.host_id) if row.host_id is not None else ""
        table.add_row(str(row.id), row.name, host, f"[{_STYLE.get(row.status, '')}]{row.status}", took)
    return table


FAILURES_SHOWN, LINES_SHOWN = 10, 8  # a failed run's report: so many failed subtasks, so many last log lines each


def failure_report(record: TaskRecord, log_of: Callable[[int], str]) -> str:
    """For a task with FAILED subtasks: each one's host and last log lines (at most FAILURES_SHOWN of them), then
    what to run next; "" when nothing failed. ``log_of(subtask_id)`` reads a subtask's log."""
    from flows.outcome import next_steps

    failed = [s for s in record.subtasks if s.status.value == "FAILED"]
    if not failed:
        return ""
    task_id = record.task.id
    parts = []
    for sub in failed[:FAILURES_SHOWN]:
        where = f" @ host {sub.host_id}" if sub.host_id is not None else ""
        every = [line for line in log_of(sub.id).splitlines() if line.strip()]
        lines = every[-LINES_SHOWN:]
        parts.append(f"FAILED subtask {sub.id} {sub.name}{where}, its last log lines:")
        # The failure's own message first when the agent's log lines that end the log (#20) pushed it out.
        reason = next((line for line in every if " ERROR " in line), None)
        if reason is not None and reason not in lines:
            parts += [f"    {reason}", "    ..."]
        parts += [f"    {line}" for line in lines] or ["    (no log)"]
    if len(failed) > FAILURES_SHOWN:
        parts.append(
            f"... and {len(failed) - FAILURES_SHOWN} more FAILED subtasks: `ocp-restart log {task_id} --failed`"
        )
    parts.append(f"Whole logs: `ocp-restart log {task_id} SUBTASK_ID`.")
    if record.task.status.value == "FAILED":
        parts.append(next_steps(record))
    return "\n".join(parts)


def plan_table(instance: TaskInstance):
    from rich.table import Table

    hosts = instance.context.list_map.get("host_ids", [])
    single = str(instance.host_id) if instance.host_id is not None else None  # all its subtasks are on that host
    table = Table(title=f"{instance.name} (dry run)")
    for col in ("subtask", "step", "host", "status", "timeout s", "upstreams"):
        table.add_column(col)
    for sub in instance.subtasks:
        host = single or (hosts[sub.parallel_idx] if sub.parallel_idx >= 0 else "")
        table.add_row(
            str(sub.id), sub.name, host, sub.status.value, str(sub.timeout), ",".join(map(str, sub.upstreams))
        )
    return table


def _stages(rows: list[Row]) -> dict[str, list[Row]]:
    """Subtask rows grouped by step, in plan order (the Wait nodes as one group)."""
    stages: dict[str, list[Row]] = {}
    for row in rows:
        stages.setdefault(row.name, []).append(row)
    return stages


_DONE = ("SUCCESSFUL", "FAILED")
# The progress view takes at most about this share of the run's process: it waits at least (1 / share - 1) times
# as long as its last update took. A 1,000-host task's update (5,004 rows read, counted and drawn) costs ~25 ms of
# the GIL the run's workers queue for; every 0.3 s that was 10-18 CPU-s of a ~200 s run (#23). A 100-host task's
# (~3 ms) still updates every 0.3 s. One slow read (the store busy for a moment) must not freeze the view for long.
PROGRESS_SHARE = 0.05
PROGRESS_WAIT_MAX = 5.0


class Progress:
    """Follows a task while it runs: a progress bar per step on a terminal; otherwise one line per step when it
    is done, and one per FAILED subtask as it fails — a few lines for 1,000 hosts, not 5,000.

    ``load`` returns the subtask rows and whether the task has ended; ``finished`` is set once it has (or once
    ``load`` failed: ``error`` has why).
    """

    def __init__(
        self, load: Callable[[], tuple[list[Row], bool]], interval: float = 0.3, *, console: RichConsole | None = None
    ) -> None:
        self.load, self.interval, self.console = load, interval, console
        self.finished = threading.Event()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="progress", daemon=True)

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.error is not None and exc[0] is None:
            raise self.error

    def _follow(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from flows.errors import StoreUnavailableError

        console = self.console or Console(stderr=True, highlight=False)
        bar = jobs = None
        if console.is_terminal:
            bar = Progress(
                TextColumn("{task.description:<32}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[note]}"),
                TimeElapsedColumn(),
                console=console,
                transient=False,
                auto_refresh=False,  # drawn after each update below: rich's own 10 Hz redraw thread cost 4% of a core
            )
            bar.start()
            jobs = {}
        failed_seen: set[int] = set()
        stages_done: set[str] = set()
        try:
            while True:
                stopping = self._stop.is_set()
                began = time.monotonic()
                try:
                    rows, ended = self.load()
                except StoreUnavailableError:  # the run waits for the store and says so; follow it once it is back
                    if stopping:
                        return
                    self._stop.wait(self.interval)
                    continue
                out = bar.console if bar is not None else console
                for row in rows:
                    if row.status == "FAILED" and row.id not in failed_seen:
                        failed_seen.add(row.id)
                        host = f" @ host {row.host_id}" if row.host_id is not None else ""
                        out.print(f"  [bold red]FAILED[/] {row.id} {row.name}{host}")
                for name, group in _stages(rows).items():
                    done = sum(r.status in _DONE for r in group)
                    failed = sum(r.status == "FAILED" for r in group)
                    running = sum(r.status == "RUNNING" for r in group)
                    if bar is not None:
                        if name not in jobs:
                            jobs[name] = bar.add_task(name, total=len(group), note="")
                        note = (f"{running} running" if running else "") + (f" {failed} failed" if failed else "")
                        bar.update(jobs[name], completed=done, note=note.strip())
                    elif done == len(group) and name not in stages_done:
                        stages_done.add(name)
                        tally = f"{done - failed}/{len(group)} SUCCESSFUL" + (f", {failed} FAILED" if failed else "")
                        console.print(f"  {name}: {tally}")
                if bar is not None:
                    bar.refresh()
                if ended:
                    self.finished.set()
                if stopping or ended:
                    return
                spent = time.monotonic() - began
                self._stop.wait(max(self.interval, min(PROGRESS_WAIT_MAX, spent * (1 / PROGRESS_SHARE - 1))))
        except BaseException as exc:  # surfaced by __exit__ in the caller's thread
            self.error = exc
            self.finished.set()
        finally:
            if bar is not None:
                bar.stop()
