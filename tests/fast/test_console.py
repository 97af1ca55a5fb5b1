"""What the CLI prints about a task: rows, the final tables and the live progress (deployments/console.py)."""

from __future__ import annotations

import io

from rich.console import Console

from deployments import console
from deployments.console import Row


def _render(renderable, *, terminal: bool = False) -> str:
    out = Console(file=io.StringIO(), width=160, force_terminal=terminal, color_system=None)
    out.print(renderable)
    return out.file.getvalue()


def _rows(hosts: int, failed: set[int] = frozenset()) -> list[Row]:
    steps = ("Prepare restart OCP agent", "Stop all OCP agent processes")
    return [
        Row(
            i * len(steps) + k + 1,
            step,
            "FAILED" if (i, k) in failed else "SUCCESSFUL",
            1000 + i,
            "2026-12-05T10:00:00.000+00:00",
            "2026-12-05T10:00:01.500+00:00",
        )
        for i in range(hosts)
        for k, step in enumerate(steps)
    ]


class TestTables:
    def test_a_small_task_is_one_row_per_subtask_with_its_seconds(self):
        """Up to TABLE_ROWS_MAX rows: subtask, step, host, status and seconds, one row each."""
        text = _render(console.task_table(7, "Batch restart OCP agent", "SUCCESSFUL", _rows(2)))
        assert "task 7  Batch restart OCP agent  [SUCCESSFUL]" in text
        assert text.count("1.50") == 4 and "1001" in text

    def test_a_big_task_is_one_row_per_step_and_lists_its_failures(self):
        """Past TABLE_ROWS_MAX rows: counts per step, then each FAILED subtask with its host."""
        rows = _rows(40, failed={(3, 1)})
        text = _render(console.task_table(9, "Batch restart OCP agent", "FAILED", rows))
        assert f"{len(rows)} subtasks" in text
        assert "FAILED 8 Stop all OCP agent processes @ host 1003" in text

    def test_rows_from_a_servers_json_name_each_host(self):
        """A task instance from `run --server` gives rows whose host is the parallelIdx-th host id."""
        wire = {
            "context": {"listMap": {"host_ids": ["11", "12"]}},
            "subtasks": [
                {"id": 1, "name": "Prepare", "status": "READY", "parallelIdx": 1},
                {"id": 2, "name": "Wait node", "status": "PENDING", "parallelIdx": -1},
            ],
        }
        assert console.rows_from_wire(wire) == [Row(1, "Prepare", "READY", 12), Row(2, "Wait node", "PENDING", None)]


class TestProgress:
    def test_off_a_terminal_it_prints_a_line_per_finished_step_and_per_failure(self):
        """Not a terminal: "step: n/N SUCCESSFUL" once per step, and one line per FAILED subtask."""
        out = Console(file=io.StringIO(), force_terminal=False, color_system=None)
        with console.Progress(lambda: (_rows(2, failed={(1, 1)}), True), interval=0.01, console=out) as progress:
            assert progress.finished.wait(5)
        text = out.file.getvalue()
        assert "FAILED 4 Stop all OCP agent processes @ host 1001" in text
        assert "Prepare restart OCP agent: 2/2 SUCCESSFUL" in text
        assert "Stop all OCP agent processes: 1/2 SUCCESSFUL, 1 FAILED" in text

    def test_at_a_terminal_it_draws_a_bar_per_step_after_each_update(self):
        """A terminal: one bar per step with done/total, drawn by the view's own updates (no redraw thread)."""
        out = Console(file=io.StringIO(), force_terminal=True, color_system=None, width=120)
        with console.Progress(lambda: (_rows(2, failed={(1, 1)}), True), interval=0.01, console=out) as progress:
            assert progress.finished.wait(5)
        text = out.file.getvalue()
        assert "Prepare restart OCP agent" in text and "2/2" in text and "1 failed" in text

    def test_a_slow_load_is_asked_less_often(self):
        """Each update waits at least 19x as long as the last one took: a big task's progress takes ~5% of a core,
        not the run's GIL every 0.3 s (#23)."""
        import time

        calls = []

        def load():
            calls.append(time.monotonic())
            time.sleep(0.025)
            return _rows(1), False

        out = Console(file=io.StringIO(), force_terminal=False, color_system=None)
        with console.Progress(load, interval=0.001, console=out):
            time.sleep(1.0)
        # The last call may be the one the exit asks for at once; the first two are 0.025 s of load + 0.475 s apart.
        assert 2 <= len(calls) <= 4 and calls[1] - calls[0] >= 0.45, [b - a for a, b in zip(calls, calls[1:])]

    def test_one_slow_load_does_not_freeze_the_view(self, monkeypatch):
        """The wait after a slow update is capped (PROGRESS_WAIT_MAX): a store busy for a moment costs one late
        update, not minutes of a frozen view."""
        import time

        monkeypatch.setattr(console, "PROGRESS_WAIT_MAX", 0.2)
        calls = []

        def load():
            calls.append(time.monotonic())
            if len(calls) == 1:
                time.sleep(0.2)  # uncapped, the next update would wait 19 x 0.2 = 3.8 s
            return _rows(1), False

        out = Console(file=io.StringIO(), force_terminal=False, color_system=None)
        with console.Progress(load, interval=0.01, console=out):
            time.sleep(1.0)
        assert len(calls) >= 3 and calls[1] - calls[0] < 1.0, [b - a for a, b in zip(calls, calls[1:])]

    def test_a_failing_load_is_raised_in_the_callers_thread(self):
        """An error while loading the task ends the progress and is raised where it was entered."""

        def load():
            raise ConnectionError("the store went away")

        out = Console(file=io.StringIO(), force_terminal=False)
        try:
            with console.Progress(load, console=out) as progress:
                assert progress.finished.wait(5)
        except ConnectionError as exc:
            assert "went away" in str(exc)
        else:
            raise AssertionError("the load's error was swallowed")


class TestFailureReport:
    def _record(self, tmp_path, failures: int):
        from flows import machine
        from flows.models import SubtaskStatus
        from flows.plan import build_plan
        from flows.store import TaskStore

        store = TaskStore(f"sqlite:///{tmp_path / 'tasks.db'}")
        task_id = store.create_task(build_plan(list(range(1, failures + 2))), creator="a", executor="e")
        for sub in store.load(task_id).subtasks[:failures]:
            store.apply(machine.start_subtask(store.load(task_id), sub.id, "t", "--- attempt"))
            lines = tuple(f"line {n} of {sub.id}" for n in range(12))
            store.apply(machine.finish_subtask(store.load(task_id), sub.id, SubtaskStatus.FAILED, "t", lines))
        store.apply(machine.end_run(store.load(task_id), "t"))
        return store, store.load(task_id)

    def test_a_failed_subtask_shows_its_host_its_last_lines_and_what_to_run_next(self, tmp_path):
        """Each FAILED subtask: its host, its last LINES_SHOWN log lines; then `ocp-restart` commands to go on."""
        store, record = self._record(tmp_path, 1)
        text = console.failure_report(record, store.log)
        assert text.startswith("FAILED subtask 1 Prepare restart OCP agent @ host 1, its last log lines:")
        assert "line 11 of 1" in text and "line 3 of 1" not in text
        assert "`ocp-restart log 1 SUBTASK_ID`" in text and "`ocp-restart retry 1`" in text

    def test_the_failures_message_is_shown_when_the_agents_log_lines_end_the_log(self, tmp_path):
        """#20: a failed subtask's log ends with the agent's own log lines; the report still shows its ERROR."""
        from flows import machine
        from flows.models import SubtaskStatus
        from flows.plan import build_plan
        from flows.store import TaskStore

        store = TaskStore(f"sqlite:///{tmp_path / 'tasks.db'}")
        task_id = store.create_task(build_plan([1]), creator="a", executor="e")
        sub = store.load(task_id).subtasks[0]
        store.apply(machine.start_subtask(store.load(task_id), sub.id, "t", "--- attempt"))
        lines = ("x  INFO 1 --- [t] s : $ ocp_agentctl start", "x ERROR 1 --- [t] s : starting the agent failed")
        lines += tuple(f"    agent log line {n}" for n in range(12))
        store.apply(machine.finish_subtask(store.load(task_id), sub.id, SubtaskStatus.FAILED, "t", lines))
        text = console.failure_report(store.load(task_id), store.log)
        assert "starting the agent failed\n    ...\n" in text and "agent log line 11" in text
        assert "agent log line 3\n" not in text

    def test_many_failures_are_capped_with_the_command_that_shows_them_all(self, tmp_path):
        """Past FAILURES_SHOWN failed subtasks, one line says how many more and how to see them."""
        store, record = self._record(tmp_path, console.FAILURES_SHOWN + 2)
        text = console.failure_report(record, store.log)
        assert text.count("FAILED subtask ") == console.FAILURES_SHOWN
        assert "... and 2 more FAILED subtasks: `ocp-restart log 1 --failed`" in text

    def test_nothing_failed_says_nothing(self, tmp_path):
        """A task without FAILED subtasks adds nothing to the report."""
        store, record = self._record(tmp_path, 0)
        assert console.failure_report(record, store.log) == ""
