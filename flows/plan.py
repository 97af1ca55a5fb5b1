"""The plan: host ids -> the documented restart DAG, checked with networkx. Pure: no I/O.

For hosts h0..h(N-1) there are five stages, each with one node per host (``parallel_idx`` = host index),
and a Wait node (``parallel_idx`` -1) joining all hosts between consecutive stages: 5N + 4 nodes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import networkx as nx

from .errors import PlanError

TASK_NAME = "Batch restart OCP agent"
_PKG = "com.alipay.ocp.service.task.business"


class Kind(str, enum.Enum):
    """A kind of DAG node; each kind is one Prefect task."""

    PREPARE = "prepare"
    RESTART_POS_PROXY = "restart_pos_proxy"
    STOP_ALL = "stop_all"
    START_ALL = "start_all"
    FINISH = "finish"
    WAIT = "wait"


@dataclass(frozen=True)
class Template:
    kind: Kind
    name: str
    class_name: str
    timeout: int
    series_id: int


# The seed's template, in chain order. seriesIds are OCP's (hash order of its template set), not ours to change.
STAGES: tuple[Template, ...] = (
    Template(Kind.PREPARE, "Prepare restart OCP agent", f"{_PKG}.obagent.PrepareRestartOcpAgentTask", 60, 2),
    Template(Kind.RESTART_POS_PROXY, "Restart pos proxy", f"{_PKG}.obagent.RestartPosProxyTask", 60, 8),
    Template(Kind.STOP_ALL, "Stop all OCP agent processes", f"{_PKG}.obagent.StopAllOcpAgentProcessesTask", 600, 1),
    Template(Kind.START_ALL, "Start all OCP agent processes", f"{_PKG}.obagent.StartAllOcpAgentProcessesTask", 600, 5),
    Template(Kind.FINISH, "Finish OCP agent operation", f"{_PKG}.obagent.FinishOcpAgentOperationTask", 60, 6),
)
WAIT_SERIES_IDS = (0, 4, 7, 3)
WAIT = Template(Kind.WAIT, "Wait node", f"{_PKG}.WaitNode", 30, -1)


BATCH_WAIT_SERIES_ID = 9  # ours: the barrier between rolling batches (OCP's own DAG has none)


@dataclass
class Node:
    """One subtask of the plan. ``key`` is its position in the plan (a topological order)."""

    key: int
    kind: Kind
    name: str
    class_name: str
    timeout: int
    series_id: int
    parallel_idx: int
    host_id: int | None
    batch: int = 0
    upstreams: list[int] = field(default_factory=list)
    downstreams: list[int] = field(default_factory=list)

    @property
    def description(self) -> str:
        return self.name


@dataclass
class Plan:
    """The DAG. ``batch_size`` (rolling batches) and ``isolate`` (a failed host does not stop the others) are
    our extensions; without them the plan is exactly OCP's."""

    host_ids: list[int]
    nodes: list[Node]
    batch_size: int | None = None
    isolate: bool = False

    @property
    def roots(self) -> list[Node]:
        return [n for n in self.nodes if not n.upstreams]

    @property
    def batches(self) -> list[list[int]]:
        size = self.batch_size or len(self.host_ids) or 1
        return [self.host_ids[i : i + size] for i in range(0, len(self.host_ids), size)]


def build_plan(
    host_ids: Sequence[int],
    timeouts: Mapping[Kind, int] | Mapping[str, int] | None = None,
    *,
    batch_size: int | None = None,
    isolate: bool = False,
) -> Plan:
    """The restart DAG for ``host_ids`` (request order), validated.

    ``timeouts`` overrides a stage's timeout in seconds (by Kind or its value); OCP's defaults otherwise.
    ``batch_size`` k: hosts go in consecutive batches of k, each OCP's DAG, batch i+1 after batch i is done.
    ``isolate``: each host's step also waits for that host's previous step, so a failed host's later steps do
    not run while Wait nodes (run with failures allowed) let the others go on.
    """
    overrides = {Kind(k): int(v) for k, v in (timeouts or {}).items()}
    for kind, seconds in overrides.items():
        if seconds <= 0:
            raise PlanError(f"timeout for {kind.value!r} must be a positive number of seconds, got {seconds}")
    hosts = list(host_ids)
    if not hosts:
        raise PlanError("a plan needs at least one host id, got none")
    if batch_size is not None and batch_size < 1:
        raise PlanError(f"batch_size must be at least 1, got {batch_size}")
    nodes: list[Node] = []

    def add(t: Template, parallel_idx: int, host_id: int | None, series_id: int, batch: int, ups: list[int]) -> int:
        node = Node(
            key=len(nodes),
            kind=t.kind,
            name=t.name,
            class_name=t.class_name,
            timeout=overrides.get(t.kind, t.timeout),
            series_id=series_id,
            parallel_idx=parallel_idx,
            host_id=host_id,
            batch=batch,
            upstreams=list(ups),
        )
        nodes.append(node)
        for up in ups:
            nodes[up].downstreams.append(node.key)
        return node.key

    plan = Plan(host_ids=hosts, nodes=nodes, batch_size=batch_size, isolate=isolate)
    barrier: list[int] = []
    previous_stage: list[int] = []
    first_idx = 0
    for batch_no, batch in enumerate(plan.batches):
        if batch_no:
            barrier = [add(WAIT, -1, None, BATCH_WAIT_SERIES_ID, batch_no - 1, previous_stage)]
        previous_stage = []
        for stage_no, stage in enumerate(STAGES):
            stage_keys = []
            for offset, host in enumerate(batch):
                own = [previous_stage[offset]] if isolate and previous_stage else []
                stage_keys.append(add(stage, first_idx + offset, host, stage.series_id, batch_no, barrier + own))
            previous_stage = stage_keys
            if stage_no < len(WAIT_SERIES_IDS):
                barrier = [add(WAIT, -1, None, WAIT_SERIES_IDS[stage_no], batch_no, stage_keys)]
        first_idx += len(batch)
    validate(plan)
    return plan


def to_graph(plan: Plan) -> nx.DiGraph:
    graph = nx.DiGraph()
    for node in plan.nodes:
        graph.add_node(node.key, kind=node.kind, host=node.parallel_idx, batch=node.batch)
        graph.add_edges_from((up, node.key) for up in node.upstreams)
    return graph


def validate(plan: Plan) -> None:
    """Raise PlanError unless ``plan`` has exactly the documented shape (with its batches, if any)."""
    n = len(plan.host_ids)
    if len(set(plan.host_ids)) != n:
        raise PlanError(f"host ids must be unique, got {plan.host_ids}")
    batches = plan.batches
    expected = len(STAGES) * n + len(WAIT_SERIES_IDS) * len(batches) + len(batches) - 1
    if len(plan.nodes) != expected:
        raise PlanError(
            f"a plan for {n} host(s) in {len(batches)} batch(es) has {expected} nodes, got {len(plan.nodes)}"
        )
    keys = {node.key for node in plan.nodes}
    for node in plan.nodes:
        for up in node.upstreams:
            if up not in keys or node.key not in plan.nodes[up].downstreams:
                raise PlanError(f"node {node.key} lists upstream {up}, which does not list it as downstream")
        for down in node.downstreams:
            if down not in keys or node.key not in plan.nodes[down].upstreams:
                raise PlanError(f"node {node.key} lists downstream {down}, which does not list it as upstream")
        if node.timeout <= 0:
            raise PlanError(f"node {node.key} ({node.name}) has timeout {node.timeout}; it must be positive")
    graph = to_graph(plan)
    if not nx.is_directed_acyclic_graph(graph):
        raise PlanError(f"the plan has a cycle: {nx.find_cycle(graph)}")
    kinds = nx.get_node_attributes(graph, "kind")
    batch_of = nx.get_node_attributes(graph, "batch")
    size = {b: len(hosts) for b, hosts in enumerate(batches)}
    chain = [stage.kind for stage in STAGES]
    for wait in (k for k, kind in kinds.items() if kind is Kind.WAIT):
        preds, succs = list(graph.predecessors(wait)), list(graph.successors(wait))
        before = {(kinds[p], batch_of[p]) for p in preds if kinds[p] is not Kind.WAIT}
        after = {(kinds[s], batch_of[s]) for s in succs if kinds[s] is not Kind.WAIT}
        if len(before) != 1 or len(after) != 1:
            raise PlanError(f"wait node {wait} must join one stage of one batch into the next, got {before} -> {after}")
        (k1, b1), (k2, b2) = before.pop(), after.pop()
        inner = b1 == b2 and k1 is not Kind.FINISH and chain.index(k2) == chain.index(k1) + 1
        between = k1 is Kind.FINISH and k2 is Kind.PREPARE and b2 == b1 + 1
        if not (inner or between) or len(preds) != size[b1] or len(succs) != size[b2]:
            raise PlanError(
                f"wait node {wait} must join all {size[b1]} '{k1.value}' nodes of batch {b1} into all "
                f"{size.get(b2)} nodes of the next step, got {len(preds)} -> {len(succs)} ({k1.value} -> {k2.value})"
            )
    roots = {(kinds[k], batch_of[k]) for k in graph if graph.in_degree(k) == 0}
    sinks = {(kinds[k], batch_of[k]) for k in graph if graph.out_degree(k) == 0}
    if roots != {(Kind.PREPARE, 0)} or sinks != {(Kind.FINISH, len(batches) - 1)}:
        raise PlanError(
            "the plan must start with Prepare (first batch) and end with Finish (last batch), got roots "
            f"{sorted((k.value, b) for k, b in roots)}, sinks {sorted((k.value, b) for k, b in sinks)}"
        )
    for stage in STAGES:
        idxs = sorted(graph.nodes[k]["host"] for k in graph if kinds[k] is stage.kind)
        if idxs != list(range(n)):
            raise PlanError(f"stage '{stage.name}' must have one node per host index 0..{n - 1}, got {idxs}")
    per_host: dict[int, list[int]] = {}
    for node in plan.nodes:  # plan order is topological, so this lists each host's steps in run order
        if node.kind is not Kind.WAIT:
            per_host.setdefault(node.parallel_idx, []).append(node.key)
    for idx, steps in per_host.items():
        if [kinds[k] for k in steps] != chain or not all(nx.has_path(graph, a, b) for a, b in pairwise(steps)):
            raise PlanError(f"host index {idx} must run {[k.value for k in chain]} in that order")
        for previous, current in pairwise(steps):
            if plan.isolate != (previous in plan.nodes[current].upstreams):
                raise PlanError(
                    f"node {current} must {'' if plan.isolate else 'not '}depend on its host's previous step {previous}"
                    f" ({'isolating' if plan.isolate else 'OCP'} plan)"
                )
    if not _is_topological(plan):
        raise PlanError("plan nodes must be listed in a topological order")


def _is_topological(plan: Plan) -> bool:
    seen: set[int] = set()
    for node in plan.nodes:
        if any(up not in seen for up in node.upstreams):
            return False
        seen.add(node.key)
    return True
