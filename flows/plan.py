"""The plan: host ids -> the documented restart DAG, checked with networkx. Pure: no I/O.

For hosts h0..h(N-1) there are five stages, each with one node per host (``parallel_idx`` = host index),
and a Wait node (``parallel_idx`` -1) joining all hosts between consecutive stages: 5N + 4 nodes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

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
    upstreams: list[int] = field(default_factory=list)
    downstreams: list[int] = field(default_factory=list)

    @property
    def description(self) -> str:
        return self.name


@dataclass
class Plan:
    host_ids: list[int]
    nodes: list[Node]

    @property
    def roots(self) -> list[Node]:
        return [n for n in self.nodes if not n.upstreams]


def build_plan(host_ids: Sequence[int], timeouts: Mapping[Kind | str, int] | None = None) -> Plan:
    """The restart DAG for ``host_ids`` (request order), validated.

    ``timeouts`` overrides a stage's timeout in seconds (by Kind or its value); OCP's defaults otherwise.
    """
    overrides = {Kind(k): int(v) for k, v in (timeouts or {}).items()}
    for kind, seconds in overrides.items():
        if seconds <= 0:
            raise PlanError(f"timeout for {kind.value!r} must be a positive number of seconds, got {seconds}")
    hosts = list(host_ids)
    if not hosts:
        raise PlanError("a plan needs at least one host id, got none")
    nodes: list[Node] = []

    def add(t: Template, parallel_idx: int, host_id: int | None, series_id: int, ups: list[int]) -> int:
        node = Node(
            key=len(nodes), kind=t.kind, name=t.name, class_name=t.class_name,
            timeout=overrides.get(t.kind, t.timeout), series_id=series_id,
            parallel_idx=parallel_idx, host_id=host_id, upstreams=list(ups),
        )
        nodes.append(node)
        for up in ups:
            nodes[up].downstreams.append(node.key)
        return node.key

    previous_wait: list[int] = []
    for stage_no, stage in enumerate(STAGES):
        stage_keys = [add(stage, idx, host, stage.series_id, previous_wait) for idx, host in enumerate(hosts)]
        if stage_no < len(WAIT_SERIES_IDS):
            previous_wait = [add(WAIT, -1, None, WAIT_SERIES_IDS[stage_no], stage_keys)]
    plan = Plan(host_ids=hosts, nodes=nodes)
    validate(plan)
    return plan


def to_graph(plan: Plan) -> nx.DiGraph:
    graph = nx.DiGraph()
    for node in plan.nodes:
        graph.add_node(node.key, kind=node.kind, host=node.parallel_idx)
        graph.add_edges_from((up, node.key) for up in node.upstreams)
    return graph


def validate(plan: Plan) -> None:
    """Raise PlanError unless ``plan`` has exactly the documented shape."""
    n = len(plan.host_ids)
    if len(set(plan.host_ids)) != n:
        raise PlanError(f"host ids must be unique, got {plan.host_ids}")
    expected = len(STAGES) * n + len(WAIT_SERIES_IDS)
    if len(plan.nodes) != expected:
        raise PlanError(f"a plan for {n} host(s) has {expected} nodes, got {len(plan.nodes)}")
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
    by_kind: dict[Kind, list[int]] = {}
    for key, kind in kinds.items():
        by_kind.setdefault(kind, []).append(key)
    waits = by_kind.get(Kind.WAIT, [])
    for before, wait, after in zip(STAGES, waits, STAGES[1:]):
        preds = {kinds[p] for p in graph.predecessors(wait)}
        succs = {kinds[s] for s in graph.successors(wait)}
        if (preds, succs) != ({before.kind}, {after.kind}) or graph.in_degree(wait) != n or graph.out_degree(wait) != n:
            raise PlanError(
                f"wait node {wait} must join all {n} '{before.name}' nodes into all {n} '{after.name}' nodes"
            )
    roots = {kinds[k] for k in graph if graph.in_degree(k) == 0}
    sinks = {kinds[k] for k in graph if graph.out_degree(k) == 0}
    if roots != {Kind.PREPARE} or sinks != {Kind.FINISH}:
        raise PlanError(f"the plan must start with Prepare and end with Finish, got roots {sorted(k.value for k in roots)}, sinks {sorted(k.value for k in sinks)}")
    for stage in STAGES:
        idxs = sorted(graph.nodes[k]["host"] for k in by_kind.get(stage.kind, []))
        if idxs != list(range(n)):
            raise PlanError(f"stage '{stage.name}' must have one node per host index 0..{n - 1}, got {idxs}")
    chain = [stage.kind for stage in STAGES]
    order = {k: i for i, k in enumerate(nx.topological_sort(graph))}
    per_host: dict[int, list[tuple[int, Kind]]] = {}
    for key, kind in kinds.items():
        if kind is not Kind.WAIT:
            per_host.setdefault(graph.nodes[key]["host"], []).append((order[key], kind))
    for idx, steps in per_host.items():
        if [kind for _, kind in sorted(steps)] != chain:
            raise PlanError(f"host index {idx} must run {[k.value for k in chain]} in that order")
    if not _is_topological(plan):
        raise PlanError("plan nodes must be listed in a topological order")


def _is_topological(plan: Plan) -> bool:
    seen: set[int] = set()
    for node in plan.nodes:
        if any(up not in seen for up in node.upstreams):
            return False
        seen.add(node.key)
    return True
