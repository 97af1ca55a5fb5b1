"""Prefect's half of ``prune`` (#22): the flow runs of the tasks just pruned from the store.

The task store is the truth and ``prune`` bounds it; each task's flow runs (tagged ``ocp-task:N``, with their task
runs, logs and artifacts) would otherwise stay in Prefect's database for ever (~69 KB per task, measured by
``bench.soak``; Prefect's own vacuum is off by default). Only finished runs of the tasks pruned now that ended
before the cut-off are deleted — not every run whose task is unknown to this store: one Prefect server may serve
several stores (tests do, and a staging beside production), whose tasks are not ours to judge.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from .prefect_run import TAG_PREFIX

BATCH = 100  # task ids per query: bounded request bodies


def delete_runs_of(task_ids: Iterable[int], ended_before: datetime) -> int:
    """Delete the finished flow runs tagged ``ocp-task:N`` for N in ``task_ids`` that ended before
    ``ended_before``; returns how many were deleted."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterEndTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    finished = [StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED]
    tags = [f"{TAG_PREFIX}{task_id}" for task_id in task_ids]
    deleted = 0
    with get_client(sync_client=True) as client:
        for start in range(0, len(tags), BATCH):
            query = FlowRunFilter(
                tags=FlowRunFilterTags(any_=tags[start : start + BATCH]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=finished)),
                end_time=FlowRunFilterEndTime(before_=ended_before),
            )
            seen: set[object] = set()
            while runs := [r for r in client.read_flow_runs(flow_run_filter=query, limit=200) if r.id not in seen]:
                for run in runs:  # a run read again after its delete would be Prefect's bug: not a reason to loop
                    client.delete_flow_run(run.id)
                    seen.add(run.id)
                deleted += len(runs)
    return deleted
