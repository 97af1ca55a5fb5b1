"""The three operations next to the batch restart (issue #21), each checked against OCP's sample field by field.

The expected values are copied from the reference's tables (reference/agent-management.md §2), not from the code:
order, name, className, seriesId, timeout and parallelIdx of every subtask, and how each task names its host(s).
"""

from __future__ import annotations

import pytest

from flows.errors import PlanError
from flows.models import now
from flows.plan import (
    BATCH_RESTART,
    BATCH_STOP,
    RESTART,
    STOP,
    TEMPLATES,
    Kind,
    Node,
    build_plan,
    template_of,
    validate,
)
from flows.view import preview

OBAGENT = "com.alipay.ocp.service.task.business.obagent."
WAIT = ("Wait node", "com.alipay.ocp.service.task.business.WaitNode")

# (name, className, seriesId, timeout, parallelIdx) in the sample's order; the subtasks form one chain.
RESTART_SAMPLE = [
    ("Prepare restart OCP agent", OBAGENT + "PrepareRestartOcpAgentTask", 2, 60, -1),
    ("Restart pos proxy", OBAGENT + "RestartPosProxyTask", 0, 60, -1),
    ("Stop all OCP agent processes", OBAGENT + "StopAllOcpAgentProcessesTask", 4, 600, -1),
    ("Start all OCP agent processes", OBAGENT + "StartAllOcpAgentProcessesTask", 1, 600, -1),
    ("Finish OCP agent operation", OBAGENT + "FinishOcpAgentOperationTask", 3, 60, -1),
]
STOP_SAMPLE = [
    ("Prepare stop OCP agent", OBAGENT + "PrepareStopOcpAgentTask", 2, 60, -1),
    ("Stop all OCP agent processes", OBAGENT + "StopAllOcpAgentProcessesTask", 1, 600, -1),
    ("Finish OCP agent operation", OBAGENT + "FinishOcpAgentOperationTask", 0, 60, -1),
]
BATCH_STOP_SAMPLE = [  # one host (index 0), Wait nodes between the stages
    ("Prepare stop OCP agent", OBAGENT + "PrepareStopOcpAgentTask", 4, 60, 0),
    (*WAIT, 0, 30, -1),
    ("Stop all OCP agent processes", OBAGENT + "StopAllOcpAgentProcessesTask", 3, 600, 0),
    (*WAIT, 1, 30, -1),
    ("Finish OCP agent operation", OBAGENT + "FinishOcpAgentOperationTask", 2, 60, 0),
]
COMMON_TASK = {
    "taskDefinitionId": -1,
    "type": "MANUAL",
    "operation": "EXECUTE",
    "status": "RUNNING",
    "creator": "admin",
}
COMMON_SUBTASK = {"nodeType": "JAVA_TASK", "operation": "EXECUTE", "runTime": 1, "prohibitRollback": False}


def _instance(template, host_ids):
    plan = build_plan(host_ids, template=template)
    return preview(plan, creator="admin", executor="10.0.0.1", start_time=now()).to_wire()


def _as_chain(task: dict) -> list[tuple]:
    """The subtasks as (name, className, seriesId, timeout, parallelIdx), after checking they form one chain in
    list order: the first a root READY, each next one the previous one's only downstream, PENDING."""
    subs = task["subtasks"]
    for i, sub in enumerate(subs):
        assert sub["upstreams"] == ([subs[i - 1]["id"]] if i else [])
        assert sub["downstreams"] == ([subs[i + 1]["id"]] if i + 1 < len(subs) else [])
        assert sub["status"] == ("READY" if i == 0 else "PENDING")
        assert {k: sub[k] for k in COMMON_SUBTASK} == COMMON_SUBTASK
        assert sub["description"] == sub["name"]
    return [(s["name"], s["className"], s["seriesId"], s["timeout"], s["parallelIdx"]) for s in subs]


class TestRestartOcpAgent:
    def test_its_five_subtasks_are_the_samples_without_a_wait_node(self):
        """Prepare restart -> Restart pos proxy -> Stop all -> Start all -> Finish, OCP's seriesIds and timeouts."""
        assert _as_chain(_instance(RESTART, [2])) == RESTART_SAMPLE

    def test_the_task_names_its_host_at_task_level_and_in_the_string_map(self):
        """hostId 2, stringMap.host_id "2", an empty listMap; the name, creator and the rest as OCP's."""
        task = _instance(RESTART, [2])
        assert task["name"] == "Restart OCP agent" and task["hostId"] == 2
        assert task["context"] == {
            "listMap": {},
            "stringMap": {"host_id": "2", "prohibit_rollback": "false"},
            "parallel": False,
            "parallelIdx": -1,
        }
        assert {k: task[k] for k in COMMON_TASK} == COMMON_TASK


class TestStopOcpAgent:
    def test_its_three_subtasks_are_the_samples(self):
        """Prepare stop -> Stop all -> Finish, no Wait node."""
        assert _as_chain(_instance(STOP, [2])) == STOP_SAMPLE

    def test_the_task_names_its_host_at_task_level(self):
        task = _instance(STOP, [7])
        assert task["name"] == "Stop OCP agent" and task["hostId"] == 7
        assert task["context"]["listMap"] == {} and task["context"]["stringMap"]["host_id"] == "7"
        assert {k: task[k] for k in COMMON_TASK} == COMMON_TASK


class TestBatchStopOcpAgent:
    def test_one_host_gives_the_samples_five_nodes(self):
        """Prepare stop, Wait, Stop all, Wait, Finish: the host's nodes at parallelIdx 0, the Waits at -1."""
        assert _as_chain(_instance(BATCH_STOP, [2])) == BATCH_STOP_SAMPLE

    def test_the_task_lists_its_hosts_as_strings_and_has_no_task_level_host(self):
        task = _instance(BATCH_STOP, [2, 5])
        assert task["name"] == "Batch stop OCP agent" and "hostId" not in task
        assert task["context"]["listMap"] == {"host_ids": ["2", "5"]}
        assert task["context"]["stringMap"] == {"prohibit_rollback": "false"}

    def test_three_hosts_give_3n_plus_2_nodes_each_wait_joining_all_hosts(self):
        """11 nodes; each Wait has the three hosts' nodes of one stage upstream and of the next downstream."""
        plan = build_plan([1, 2, 3], template=BATCH_STOP)
        assert len(plan.nodes) == 3 * 3 + 2
        waits = [n for n in plan.nodes if n.kind is Kind.WAIT]
        assert [w.series_id for w in waits] == [0, 1]
        assert all(len(w.upstreams) == 3 and len(w.downstreams) == 3 for w in waits)
        for idx in range(3):
            steps = [n.kind for n in plan.nodes if n.parallel_idx == idx]
            assert steps == [Kind.PREPARE_STOP, Kind.STOP_ALL, Kind.FINISH_STOP]

    def test_rolling_batches_and_isolation_stay_valid(self):
        """Our extensions apply to the batch stop as to the batch restart: 5 hosts in batches of 2, isolating."""
        plan = build_plan([1, 2, 3, 4, 5], template=BATCH_STOP, batch_size=2, isolate=True)
        assert len(plan.nodes) == 3 * 5 + 2 * 3 + 2
        validate(plan)


class TestTheBatchRestartIsUnchanged:
    def test_it_is_the_default_template_and_keeps_the_seeds_series_ids(self):
        plan = build_plan([2])
        assert plan.template is BATCH_RESTART
        assert [n.series_id for n in plan.nodes] == [2, 0, 8, 4, 1, 7, 5, 3, 6]
        assert "hostId" not in _instance(BATCH_RESTART, [2])


class TestChecks:
    @pytest.mark.parametrize("template", [RESTART, STOP], ids=["restart", "stop"])
    def test_a_single_host_operation_takes_exactly_one_host(self, template):
        with pytest.raises(PlanError, match="acts on one host, got 2"):
            build_plan([1, 2], template=template)

    def test_a_timeout_for_a_stage_the_template_lacks_is_refused(self):
        with pytest.raises(PlanError, match="has no stage 'start_all'"):
            build_plan([1], {"start_all": 30}, template=STOP)

    def test_a_stage_timeout_override_applies(self):
        plan = build_plan([1], {"stop_all": 120}, template=STOP)
        assert [n.timeout for n in plan.nodes] == [60, 120, 60]

    @pytest.mark.parametrize("template", list(TEMPLATES.values()), ids=list(TEMPLATES))
    def test_a_broken_chain_is_caught_by_the_graph_checks(self, template):
        """Dropping the edge into the last stage leaves two roots (or a dangling Wait): validate says so."""
        plan = build_plan([1] if template.single_host else [1, 2], template=template)
        last = plan.nodes[-1]
        for up in list(last.upstreams):
            plan.nodes[up].downstreams.remove(last.key)
        last.upstreams.clear()
        with pytest.raises(PlanError):
            validate(plan)

    def test_a_stop_with_a_restart_node_is_refused(self):
        """A node kind the template has no stage for (Start all in a stop) fails the checks."""
        plan = build_plan([1], template=STOP)
        plan.nodes.append(Node(3, Kind.START_ALL, "Start all OCP agent processes", "x", 600, 9, -1, 1, upstreams=[2]))
        plan.nodes[2].downstreams.append(3)
        with pytest.raises(PlanError):
            validate(plan)

    def test_templates_are_found_by_their_stored_key(self):
        assert {key: template_of(key).task_name for key in TEMPLATES} == {
            "batch_restart": "Batch restart OCP agent",
            "restart": "Restart OCP agent",
            "stop": "Stop OCP agent",
            "batch_stop": "Batch stop OCP agent",
        }
        with pytest.raises(PlanError, match="unknown task template 'reinstall'"):
            template_of("reinstall")


class TestDispatch:
    def test_each_template_has_its_flow_and_host_parameter(self):
        """The launcher and the CLI run the flow of the task's template, with its host parameter's shape."""
        from flows.agent_ops import FLOWS, flow_parameters

        assert {key: FLOWS[key].name for key in TEMPLATES} == {key: t.flow_name for key, t in TEMPLATES.items()}
        assert flow_parameters("stop", [3]) == {"host_id": 3}
        assert flow_parameters("batch_stop", [3, 4]) == {"host_ids": [3, 4]}

    def test_the_deployment_launcher_finds_each_operations_deployment_by_the_same_name(self):
        from deployments.launch import deployment_for

        assert deployment_for("batch-restart-agents/nightly", "batch_restart") == "batch-restart-agents/nightly"
        assert deployment_for("batch-restart-agents/nightly", "stop") == "stop-agent/nightly"
        assert deployment_for("batch-restart-agents/nightly", "batch_stop") == "batch-stop-agents/nightly"
        assert deployment_for("batch-restart-agents/nightly", "restart") == "restart-agent/nightly"


class TestStore:
    def test_a_task_keeps_its_template_and_its_hosts_show_the_templates_busy_status(self, tmp_path):
        """The store records each task's template (revision 0002); while a stop holds a host its agent is
        STOPPING, while a restart holds one RESTARTING; a stop's task on the same host is refused (20021)."""
        from flows.errors import HostBusyError
        from flows.store import TaskStore

        with TaskStore(f"sqlite:///{tmp_path / 'tasks.db'}") as store:
            stop = store.create_task(build_plan([1], template=STOP), creator="c", executor="e")
            store.create_task(build_plan([2, 3], template=BATCH_RESTART), creator="c", executor="e")
            assert store.load(stop).task.template == "stop" and store.load(stop).task.name == "Stop OCP agent"
            assert store.held_agent_statuses() == {1: "STOPPING", 2: "RESTARTING", 3: "RESTARTING"}
            with pytest.raises(HostBusyError) as busy:
                store.create_task(build_plan([1], template=RESTART), creator="c", executor="e")
            assert busy.value.code == 20021
