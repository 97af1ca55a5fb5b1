"""The plan: a task template and host ids -> the documented DAG, checked with networkx. Pure: no I/O.

A ``TaskTemplate`` is one of OCP's agent operations (reference/agent-management.md §2): its task name, its
stages (names, classNames, seriesIds, timeouts) and whether Wait nodes join the hosts between stages.

With Wait nodes (the batch operations), for hosts h0..h(N-1) each of the S stages has one node per host
(``parallel_idx`` = host index) and a Wait node (``parallel_idx`` -1) joins all hosts between consecutive
stages: S*N + S-1 nodes (the batch restart: 5N + 4). Without (the single-host operations), the stages form one
chain on the one host, ``parallel_idx`` -1.
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
    PREPARE_STOP = "prepare_stop"  # a stop's Prepare: restarts nothing, warns of nothing to start
    FINISH_STOP = "finish_stop"  # a stop's Finish: checks that the agent is stopped, not that it is ready


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


def _stage(kind: Kind, name: str, cls: str, timeout: int, series_id: int) -> Template:
    return Template(kind, name, f"{_PKG}.obagent.{cls}", timeout, series_id)


@dataclass(frozen=True)
class TaskTemplate:
    """One of OCP's agent task operations: what its DAG looks like and how its task is shown and run.

    ``key`` is what the store records (``tasks.template``); ``flow_name`` its Prefect flow; ``wait_series_ids``
    the Wait nodes' seriesIds between consecutive stages, or None for a plain chain without Wait nodes;
    ``single_host``: one host, shown as task-level ``hostId`` and ``context.stringMap.host_id`` (else
    ``context.listMap.host_ids``); ``busy_status`` / ``done_status``: the host's agent status (OCP's
    hostAgentStatus) while the task holds it and after it succeeded.
    """

    key: str
    task_name: str
    flow_name: str
    stages: tuple[Template, ...]
    wait_series_ids: tuple[int, ...] | None
    single_host: bool
    busy_status: str
    done_status: str
    batch_wait_series_id: int = BATCH_WAIT_SERIES_ID

    @property
    def chain(self) -> list[Kind]:
        return [stage.kind for stage in self.stages]

    @property
    def kinds(self) -> set[Kind]:
        return {*self.chain, *((Kind.WAIT,) if self.wait_series_ids is not None else ())}


BATCH_RESTART = TaskTemplate(
    "batch_restart", TASK_NAME, "batch-restart-agents", STAGES, WAIT_SERIES_IDS, False, "RESTARTING", "AVAILABLE"
)
RESTART = TaskTemplate(
    "restart",
    "Restart OCP agent",
    "restart-agent",
    (
        _stage(Kind.PREPARE, "Prepare restart OCP agent", "PrepareRestartOcpAgentTask", 60, 2),
        _stage(Kind.RESTART_POS_PROXY, "Restart pos proxy", "RestartPosProxyTask", 60, 0),
        _stage(Kind.STOP_ALL, "Stop all OCP agent processes", "StopAllOcpAgentProcessesTask", 600, 4),
        _stage(Kind.START_ALL, "Start all OCP agent processes", "StartAllOcpAgentProcessesTask", 600, 1),
        _stage(Kind.FINISH, "Finish OCP agent operation", "FinishOcpAgentOperationTask", 60, 3),
    ),
    None,
    True,
    "RESTARTING",
    "AVAILABLE",
)
STOP = TaskTemplate(
    "stop",
    "Stop OCP agent",
    "stop-agent",
    (
        _stage(Kind.PREPARE_STOP, "Prepare stop OCP agent", "PrepareStopOcpAgentTask", 60, 2),
        _stage(Kind.STOP_ALL, "Stop all OCP agent processes", "StopAllOcpAgentProcessesTask", 600, 1),
        _stage(Kind.FINISH_STOP, "Finish OCP agent operation", "FinishOcpAgentOperationTask", 60, 0),
    ),
    None,
    True,
    "STOPPING",
    "OFFLINE",
)
BATCH_STOP = TaskTemplate(
    "batch_stop",
    "Batch stop OCP agent",
    "batch-stop-agents",
    (
        _stage(Kind.PREPARE_STOP, "Prepare stop OCP agent", "PrepareStopOcpAgentTask", 60, 4),
        _stage(Kind.STOP_ALL, "Stop all OCP agent processes", "StopAllOcpAgentProcessesTask", 600, 3),
        _stage(Kind.FINISH_STOP, "Finish OCP agent operation", "FinishOcpAgentOperationTask", 60, 2),
    ),
    (0, 1),
    False,
    "STOPPING",
    "OFFLINE",
    batch_wait_series_id=5,  # ours, as in the batch restart: a seriesId the template leaves free
)
TEMPLATES: dict[str, TaskTemplate] = {t.key: t for t in (BATCH_RESTART, RESTART, STOP, BATCH_STOP)}


def template_of(key: str) -> TaskTemplate:
    """The template the store calls ``key``; PlanError if there is none."""
    try:
        return TEMPLATES[key]
    except KeyError:
        raise PlanError(f"unknown task template {key!r}; known: {sorted(TEMPLATES)}") from None


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
    template: TaskTemplate = BATCH_RESTART

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
    template: TaskTemplate = BATCH_RESTART,
) -> Plan:
    """The DAG of ``template`` (default: the batch restart) for ``host_ids`` (request order), validated.

    ``timeouts`` overrides a stage's timeout in seconds (by Kind or its value); OCP's defaults otherwise.
    ``batch_size`` k: hosts go in consecutive batches of k, each OCP's DAG, batch i+1 after batch i is done.
    ``isolate``: each host's step also waits for that host's previous step, so a failed host's later steps do
    not run while Wait nodes (run with failures allowed) let the others go on.
    A single-host template takes exactly one host, and neither batches nor isolation (its chain is one host's).
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
    if template.single_host and len(hosts) != 1:
        raise PlanError(f"'{template.task_name}' acts on one host, got {len(hosts)}: {hosts}")
    for kind in overrides:
        if kind not in template.kinds:
            raise PlanError(f"'{template.task_name}' has no stage {kind.value!r} to set a timeout for")
    if template.wait_series_ids is None:
        batch_size, isolate = None, False  # one host's chain: nothing to batch or isolate
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

    plan = Plan(host_ids=hosts, nodes=nodes, batch_size=batch_size, isolate=isolate, template=template)
    waits = template.wait_series_ids
    if waits is None:  # one host's chain, as OCP's single-host samples: no Wait node, parallelIdx -1
        previous: list[int] = []
        for stage in template.stages:
            previous = [add(stage, -1, hosts[0], stage.series_id, 0, previous)]
        validate(plan)
        return plan
    barrier: list[int] = []
    previous_stage: list[int] = []
    first_idx = 0
    for batch_no, batch in enumerate(plan.batches):
        if batch_no:
            barrier = [add(WAIT, -1, None, template.batch_wait_series_id, batch_no - 1, previous_stage)]
        previous_stage = []
        for stage_no, stage in enumerate(template.stages):
            stage_keys = []
            for offset, host in enumerate(batch):
                own = [previous_stage[offset]] if isolate and previous_stage else []
                stage_keys.append(add(stage, first_idx + offset, host, stage.series_id, batch_no, barrier + own))
            previous_stage = stage_keys
            if stage_no < len(waits):
                barrier = [add(WAIT, -1, None, waits[stage_no], batch_no, stage_keys)]
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
    """Raise PlanError unless ``plan`` has exactly its template's documented shape (with its batches, if any)."""
    template = plan.template
    n = len(plan.host_ids)
    if len(set(plan.host_ids)) != n:
        raise PlanError(f"host ids must be unique, got {plan.host_ids}")
    if template.single_host and n != 1:
        raise PlanError(f"'{template.task_name}' acts on one host, got {n}")
    batches = plan.batches
    stages = len(template.stages)
    waits = template.wait_series_ids
    expected = stages * n + (len(waits) * len(batches) + len(batches) - 1 if waits is not None else 0)
    if len(plan.nodes) != expected:
        raise PlanError(
            f"a '{template.task_name}' plan for {n} host(s) in {len(batches)} batch(es) has {expected} nodes, "
            f"got {len(plan.nodes)}"
        )
    _check_links(plan)
    graph = to_graph(plan)
    if not nx.is_directed_acyclic_graph(graph):
        raise PlanError(f"the plan has a cycle: {nx.find_cycle(graph)}")
    kinds = nx.get_node_attributes(graph, "kind")
    batch_of = nx.get_node_attributes(graph, "batch")
    chain = template.chain
    allowed = template.kinds
    if not set(kinds.values()) <= allowed:
        raise PlanError(f"a '{template.task_name}' plan may only have {sorted(k.value for k in allowed)} nodes")
    _check_waits(plan, graph)
    first, last = chain[0], chain[-1]
    roots = {(kinds[k], batch_of[k]) for k in graph if graph.in_degree(k) == 0}
    sinks = {(kinds[k], batch_of[k]) for k in graph if graph.out_degree(k) == 0}
    if roots != {(first, 0)} or sinks != {(last, len(batches) - 1)}:
        raise PlanError(
            f"the plan must start with {first.value} (first batch) and end with {last.value} (last batch), got roots "
            f"{sorted((k.value, b) for k, b in roots)}, sinks {sorted((k.value, b) for k, b in sinks)}"
        )
    host_idxs = [-1] if waits is None else list(range(n))  # a single-host chain shows parallelIdx -1
    for stage in template.stages:
        idxs = sorted(graph.nodes[k]["host"] for k in graph if kinds[k] is stage.kind)
        if idxs != host_idxs:
            raise PlanError(f"stage '{stage.name}' must have one node per host index {host_idxs}, got {idxs}")
    chained = plan.isolate or waits is None  # each step depends on its host's previous one
    per_host: dict[int, list[int]] = {}
    for node in plan.nodes:  # plan order is topological, so this lists each host's steps in run order
        if node.kind is not Kind.WAIT:
            per_host.setdefault(node.parallel_idx, []).append(node.key)
    for idx, steps in per_host.items():
        if [kinds[k] for k in steps] != chain or not all(nx.has_path(graph, a, b) for a, b in pairwise(steps)):
            raise PlanError(f"host index {idx} must run {[k.value for k in chain]} in that order")
        for previous, current in pairwise(steps):
            if chained != (previous in plan.nodes[current].upstreams):
                raise PlanError(
                    f"node {current} must {'' if chained else 'not '}depend on its host's previous step {previous}"
                    f" ({'chained' if chained else 'OCP'} plan)"
                )
    if not _is_topological(plan):
        raise PlanError("plan nodes must be listed in a topological order")


def _check_links(plan: Plan) -> None:
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


def _check_waits(plan: Plan, graph: nx.DiGraph) -> None:
    """Each Wait node joins all nodes of one stage of one batch into all nodes of the next step."""
    kinds = nx.get_node_attributes(graph, "kind")
    batch_of = nx.get_node_attributes(graph, "batch")
    size = {b: len(hosts) for b, hosts in enumerate(plan.batches)}
    chain = plan.template.chain
    for wait in (k for k, kind in kinds.items() if kind is Kind.WAIT):
        preds, succs = list(graph.predecessors(wait)), list(graph.successors(wait))
        before = {(kinds[p], batch_of[p]) for p in preds if kinds[p] is not Kind.WAIT}
        after = {(kinds[s], batch_of[s]) for s in succs if kinds[s] is not Kind.WAIT}
        if len(before) != 1 or len(after) != 1:
            raise PlanError(f"wait node {wait} must join one stage of one batch into the next, got {before} -> {after}")
        (k1, b1), (k2, b2) = before.pop(), after.pop()
        inner = b1 == b2 and k1 is not chain[-1] and chain.index(k2) == chain.index(k1) + 1
        between = k1 is chain[-1] and k2 is chain[0] and b2 == b1 + 1
        if not (inner or between) or len(preds) != size[b1] or len(succs) != size[b2]:
            raise PlanError(
                f"wait node {wait} must join all {size[b1]} '{k1.value}' nodes of batch {b1} into all "
                f"{size.get(b2)} nodes of the next step, got {len(preds)} -> {len(succs)} ({k1.value} -> {k2.value})"
            )


def _is_topological(plan: Plan) -> bool:
    seen: set[int] = set()
    for node in plan.nodes:
        if any(up not in seen for up in node.upstreams):
            return False
        seen.add(node.key)
    return True
