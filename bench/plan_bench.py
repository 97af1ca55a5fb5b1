"""A 1,000-host plan: request validation, build_plan (which validates the DAG with networkx), recording it in a
fresh SQLite task store, reading it back, and rendering the documented task instance (what every API GET does).
Pure CPU and SQLite: no host is touched. Each figure is the best of ``repeat`` runs (seconds)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path


def _best(fn, repeat: int) -> tuple[float, object]:
    best, value = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - started)
    return best, value


def _inventory(path: Path, host_ids: list[int]) -> Path:
    lines = ['[defaults]\nuser = "admin"\n']
    for i, host_id in enumerate(host_ids):
        lines.append(f'[[hosts]]\nid = {host_id}\nname = "h{host_id}"\naddress = "10.0.{i // 250}.{1 + i % 250}"\n')
    path.write_text("\n".join(lines))
    return path


def run_plan_bench(hosts: int = 1000, repeat: int = 3) -> dict:
    from flows.models import BatchRestartRequest
    from flows.options import RestartOptions
    from flows.plan import build_plan, validate
    from flows.store import TaskStore
    from flows.submit import create_task
    from flows.view import task_instance
    from steps.inventory import load_inventory

    ids = list(range(1001, 1001 + hosts))
    out: dict = {"hosts": hosts}
    out["request_validate_s"], _ = _best(lambda: BatchRestartRequest.model_validate({"hostIds": ids}), repeat)
    out["build_plan_s"], plan = _best(lambda: build_plan(ids), repeat)
    out["validate_only_s"], _ = _best(lambda: validate(plan), repeat)
    out["nodes"] = len(plan.nodes)
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        inventory = load_inventory(_inventory(Path(tmp) / "inventory.toml", ids))
        stores: list[TaskStore] = []

        def record_plan() -> int:
            store = TaskStore(f"sqlite:///{tmp}/store-{len(stores)}.db")  # fresh: no host locks held
            stores.append(store)
            return store.create_task(plan, creator="bench", executor="127.0.0.1", options={}, inventory="")

        out["store_create_s"], task_id = _best(record_plan, repeat)

        def submit() -> int:
            store = TaskStore(f"sqlite:///{tmp}/submit-{len(stores)}.db")
            stores.append(store)
            return create_task(store, inventory, ids, RestartOptions(), creator="bench", executor="127.0.0.1")

        out["submit_total_s"], _ = _best(submit, repeat)  # validate + inventory select + plan + record
        store = stores[0]
        out["store_load_s"], record = _best(lambda: store.load(task_id), repeat)
        out["task_instance_json_s"], _ = _best(lambda: task_instance(record).to_wire(), repeat)
        for s in stores:
            s.close()
    out["build_and_validate_under_1s"] = out["build_plan_s"] + out["request_validate_s"] < 1.0
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}
