"""Prefect's half of ``prune`` (#22): the flow runs of the tasks just pruned from the store.

The task store is the truth and ``prune`` bounds it; each task's flow runs (tagged ``ocp-task:N``, with their task
runs, logs and artifacts) would otherwise stay in Prefect's database for ever (~69 KB per task, measured by
``bench.soak``; Prefect's own vacuum is off by default). Only finished runs of the tasks pruned now that ended
before the cut-off are deleted — not every run whose task is unknown to this store: one Prefect server may serve
several stores (tests do, and a staging beside production), whose tasks are not ours to judge.

Deleted with Prefect's bulk route, 50 runs a transaction: one DELETE per run (with its log clean-up behind it)
made a SQLite-backed server answer "locked" and the client back off for up to a minute per run (bench.soak, 1,000
tasks: 112 deleted in the first two minutes).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from .models import now
from .prefect_run import TAG_PREFIX

TAGS_PER_QUERY = 100  # bounded request bodies
RUNS_PER_CALL = 50  # Prefect's own limit for /flow_runs/bulk_delete


def delete_runs_of(task_ids: Iterable[int], older_than_days: float) -> int:
    """Delete the finished flow runs tagged ``ocp-task:N`` for N in ``task_ids`` that ended more than
    ``older_than_days`` ago (the store's own cut-off for those tasks); returns how many were deleted."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterEndTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    ended_before = now() - timedelta(days=older_than_days)
    finished = [StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED]
    tags = [f"{TAG_PREFIX}{task_id}" for task_id in task_ids]
    deleted = 0
    with get_client(sync_client=True) as client:
        for start in range(0, len(tags), TAGS_PER_QUERY):
            query = FlowRunFilter(
                tags=FlowRunFilterTags(any_=tags[start : start + TAGS_PER_QUERY]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=finished)),
                end_time=FlowRunFilterEndTime(before_=ended_before),
            )
            body = {"flow_runs": query.model_dump(mode="json", exclude_unset=True), "limit": RUNS_PER_CALL}
            while True:
                answer = client.request("POST", "/flow_runs/bulk_delete", json=body)  # type: ignore[arg-type]
                answer.raise_for_status()
                gone = len(answer.json().get("deleted", []))
                deleted += gone
                if gone < RUNS_PER_CALL:
                    break
    return deleted
