"""CPU of the API's reads at scale (issue #14): the detail of a 5,004-subtask task (1,000 hosts), and the task
list with 10 vs 10,000 finished tasks in the store. What a GET does, without HTTP: load, render, serialize.

    python3 -m bench.api_cpu            # prints ms of CPU (best of 5) for each
"""

from __future__ import annotations

import tempfile
import time
from typing import Any


def best_cpu_ms(fn, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return round(best * 1000, 1)


def envelope_json(data: Any) -> bytes:
    from flows.models import Envelope, now

    return Envelope[Any](data=data, timestamp=now(), duration=0, trace_id="0" * 16, server="x").model_dump_json(
        by_alias=True
    )


def fill(store, n_tasks: int) -> None:
    """``n_tasks`` finished one-host tasks, written directly (as many runs would have left them)."""
    from flows import machine
    from flows.plan import build_plan

    for i in range(n_tasks):
        task_id = store.create_task(build_plan([100000 + i]), creator="bench", executor="x")
        store.apply(machine.end_run(store.load(task_id), "2026-11-01T00:00:00.000+00:00"))


def main() -> None:
    from flows import view
    from flows.plan import build_plan
    from flows.store import TaskStore

    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        with TaskStore(f"sqlite:///{tmp}/big.db") as store:
            task_id = store.create_task(build_plan(list(range(1, 1001))), creator="bench", executor="x")
            detail = best_cpu_ms(lambda: envelope_json(view.wrapped_task_instance(store.load(task_id))))
            print(f"GET task detail, 5,004 subtasks: {detail} ms CPU (load + render + serialize)")
        for n in (10, 10_000):
            with TaskStore(f"sqlite:///{tmp}/list-{n}.db") as store:
                started = time.monotonic()
                fill(store, n)
                filled = time.monotonic() - started

                def page() -> bytes:
                    ids, total = store.task_ids(limit=10)
                    return envelope_json(
                        {
                            "contents": [view.basic_task_instance(store.load(i)) for i in ids],
                            "page": view.page(1, 10, total),
                        }
                    )

                print(
                    f"GET task list (page of 10) with {n:>6} finished tasks: {best_cpu_ms(page)} ms CPU "
                    f"(store filled in {filled:.0f} s)"
                )


if __name__ == "__main__":
    main()
