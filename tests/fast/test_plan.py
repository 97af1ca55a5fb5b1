"""The plan: OCP's DAG for N hosts, checked against the seed sample and networkx invariants."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from flows.errors import PlanError
from flows.models import now
from flows.plan import Kind, build_plan, validate
from flows.view import preview

SEED = json.loads((Path(__file__).parent.parent / "data" / "seed_sample.json").read_text())


def _canonical(subtasks: list[dict]) -> list[dict]:
    """Subtasks with ids replaced by their position in chain order, so two DAGs compare by structure."""
    by_id = {s["id"]: s for s in subtasks}
    order, current = [], [s for s in subtasks if not s["upstreams"]]
    while current:
        order.extend(sorted(current, key=lambda s: (s["parallelIdx"], s["id"])))
        nxt = {d for s in current for d in s["downstreams"]}
        current = [by_id[i] for i in nxt]
    rank = {s["id"]: i for i, s in enumerate(order)}
    out = []
    for s in order:
        item = {k: v for k, v in s.items() if k != "id"}
        item["upstreams"] = sorted(rank[u] for u in s["upstreams"])
        item["downstreams"] = sorted(rank[d] for d in s["downstreams"])
        out.append(item)
    return out


class TestOneHost:
    def test_matches_the_seed_sample_node_for_node(self):
        """For one host the plan's subtasks equal the seed's, field for field (ids aside)."""
        ours = preview(build_plan([2]), creator="admin", executor="192.168.0.1", start_time=now()).to_wire()
        assert _canonical(ours["subtasks"]) == _canonical(SEED["response"]["data"]["subtasks"])

    def test_task_fields_match_the_seed(self):
        """name, context, operation, type, taskDefinitionId and status are the seed's."""
        ours = preview(build_plan([2]), creator="admin", executor="192.168.0.1", start_time=now()).to_wire()
        seed = SEED["response"]["data"]
        for key in ("name", "context", "operation", "type", "taskDefinitionId", "status", "creator", "executor"):
            assert ours[key] == seed[key], key
        assert sorted(ours) == sorted(seed)


class TestManyHosts:
    def test_three_hosts_give_19_valid_nodes(self):
        """5N + 4 nodes; every Wait joins all hosts; each host runs the five steps in order."""
        plan = build_plan([1001, 1002, 1003])
        assert len(plan.nodes) == 19
        waits = [n for n in plan.nodes if n.kind is Kind.WAIT]
        assert [w.series_id for w in waits] == [0, 4, 7, 3]
        assert all(len(w.upstreams) == 3 and len(w.downstreams) == 3 for w in waits)
        assert [n.host_id for n in plan.roots] == [1001, 1002, 1003]
        assert {n.parallel_idx for n in plan.nodes if n.kind is Kind.STOP_ALL} == {0, 1, 2}
        validate(plan)

    def test_a_thousand_hosts_plan_in_under_a_second(self):
        """Building and validating a 1,000-host plan (5,004 nodes) takes < 1 s."""
        started = time.perf_counter()
        plan = build_plan(list(range(1, 1001)))
        assert len(plan.nodes) == 5004
        assert time.perf_counter() - started < 1.0

    def test_timeout_overrides_apply_to_their_stage(self):
        """A stop_all override changes only the Stop nodes' timeout."""
        plan = build_plan([1, 2], {"stop_all": 42})
        assert {n.timeout for n in plan.nodes if n.kind is Kind.STOP_ALL} == {42}
        assert {n.timeout for n in plan.nodes if n.kind is Kind.START_ALL} == {600}


class TestInvalidPlans:
    def test_empty_host_list_is_rejected(self):
        """No hosts: PlanError saying so."""
        with pytest.raises(PlanError, match="at least one host"):
            build_plan([])

    def test_duplicate_hosts_are_rejected(self):
        """The same host twice: PlanError naming the ids."""
        with pytest.raises(PlanError, match="unique"):
            build_plan([1, 1])

    def test_a_cycle_is_rejected(self):
        """An edge from Finish back to Prepare makes the plan invalid."""
        plan = build_plan([1])
        first, last = plan.nodes[0], plan.nodes[-1]
        first.upstreams.append(last.key)
        last.downstreams.append(first.key)
        with pytest.raises(PlanError):
            validate(plan)

    def test_a_wait_that_misses_a_host_is_rejected(self):
        """Dropping one host's edge into a Wait node breaks the barrier: PlanError names the wait node."""
        plan = build_plan([1, 2])
        wait = next(n for n in plan.nodes if n.kind is Kind.WAIT)
        dropped = wait.upstreams.pop()
        plan.nodes[dropped].downstreams.remove(wait.key)
        with pytest.raises(PlanError, match="wait node"):
            validate(plan)

    def test_one_sided_edges_are_rejected(self):
        """An upstream not mirrored by a downstream is reported with both node keys."""
        plan = build_plan([1])
        plan.nodes[2].upstreams.append(0)
        with pytest.raises(PlanError, match="node 2 lists upstream 0"):
            validate(plan)

    def test_non_positive_timeout_is_rejected(self):
        """A zero timeout override is refused with the stage and value."""
        with pytest.raises(PlanError, match="stop_all.*got 0"):
            build_plan([1], {"stop_all": 0})


class TestExtensions:
    def test_rolling_batches_chain_ocp_dags(self):
        """batch_size 2 over 5 hosts: three OCP DAGs joined by two batch barriers (5N + 4B + B - 1 nodes)."""
        plan = build_plan([1, 2, 3, 4, 5], batch_size=2)
        assert len(plan.nodes) == 25 + 12 + 2
        barriers = [n for n in plan.nodes if n.series_id == 9]
        assert [len(b.upstreams) for b in barriers] == [2, 2] and [len(b.downstreams) for b in barriers] == [2, 1]
        assert [n.host_id for n in plan.roots] == [1, 2]
        assert sorted(n.parallel_idx for n in plan.nodes if n.kind is Kind.FINISH) == [0, 1, 2, 3, 4]

    def test_isolation_adds_per_host_edges_only(self):
        """isolate: each host step also depends on its own previous step; Wait nodes are unchanged."""
        plain, isolated = build_plan([1, 2]), build_plan([1, 2], isolate=True)
        assert len(plain.nodes) == len(isolated.nodes)
        stop = next(n for n in isolated.nodes if n.kind is Kind.STOP_ALL and n.host_id == 2)
        assert {isolated.nodes[u].kind for u in stop.upstreams} == {Kind.WAIT, Kind.RESTART_POS_PROXY}

    def test_a_plan_claiming_isolation_without_its_edges_is_rejected(self):
        """Flags and edges must agree: PlanError says which node lacks its host's previous step."""
        plan = build_plan([1, 2])
        plan.isolate = True
        with pytest.raises(PlanError, match="must depend on its host's previous step"):
            validate(plan)

    def test_batch_size_must_be_positive(self):
        """batch_size 0: PlanError naming the value."""
        with pytest.raises(PlanError, match="batch_size must be at least 1, got 0"):
            build_plan([1], batch_size=0)
