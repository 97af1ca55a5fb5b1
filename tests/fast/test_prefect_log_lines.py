"""What of Prefect's own log lines our node tasks send to its API (#23)."""

from __future__ import annotations

import logging

from flows import tasks


def _record(level: int, message: str, task_name: str) -> logging.LogRecord:
    record = logging.LogRecord("prefect.task_runs", level, __file__, 1, message, None, None)
    record.task_name = task_name
    return record


def test_a_node_tasks_completed_line_is_dropped_and_nothing_else():
    """#23: "Finished in state Completed()" of our node tasks costs ~15% of a task run's CPU and says what the task
    run's state says; a failure's line, a NotReady's and other tasks' lines stay."""
    quiet = logging.getLogger("prefect.task_runs").filters
    assert any(isinstance(f, tasks._QuietCompletion) for f in quiet), f"expected the filter installed, got {quiet}"
    keep = tasks._QuietCompletion()
    node = "Prepare restart OCP agent"
    assert node in tasks._QuietCompletion.NAMES
    assert not keep.filter(_record(logging.INFO, "Finished in state Completed()", node))
    assert keep.filter(_record(logging.ERROR, "Finished in state Failed('boom')", node))
    assert keep.filter(_record(logging.INFO, "Finished in state NotReady()", node))
    assert keep.filter(_record(logging.INFO, "Finished in state Completed()", "someone-elses-task"))
    assert keep.filter(_record(logging.INFO, "Prepare restart OCP agent done in 0.21 s", node))
