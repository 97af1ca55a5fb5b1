"""The host's agent read live (flows/agent_view.py) and one process restarted or stopped (flows/process_ops.py), on
a fake host; the observe script on the real /bin/sh."""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from contextlib import contextmanager
from datetime import datetime

import pytest
from test_api_app import settings  # noqa: F401  (the fixture)

from deployments.sandbox.local import LocalRunner
from flows.agent_view import AgentViews, operable, process_id, resolve
from flows.errors import AgentStateError, HostBusyError, ProcessNotOperableError, UnknownProcessError
from flows.plan import build_plan
from flows.process_ops import operate
from flows.store import TaskStore
from steps.agent import MARK, OBSERVE, PROCESSES, AgentControl
from steps.errors import ConnectError
from steps.inventory import MAX_ID, Host
from steps.testing import FakeRunner, result

HOST = Host(id=1001, name="h1", address="127.0.0.2", agent_home="/home/admin/ocp_agent")


class FakeHost:
    """A host's agent as its CLI answers: pids by name, ``service stop|start NAME`` changing them; ``up`` False:
    the host does not answer at all."""

    def __init__(self) -> None:
        self.pids = {"ocp_agentd": 100, "ocp_mgragent": 101, "ocp_monagent": 102}
        self.up, self.next_pid, self.connects, self.calls = True, 200, 0, []

    def status(self) -> str:
        services = {
            name: {"state": "running" if self.pids.get(name) else "stopped", "pid": self.pids.get(name, 0)}
            for name in PROCESSES[1:]
        }
        services["ocp_mgragent"]["ports"] = [62888]
        message = {"state": "running", "ready": all(self.pids.values()), "pid": self.pids["ocp_agentd"]}
        return json.dumps({"successful": True, "message": {**message, "services": services}})

    def handler(self, command: str):
        self.calls.append(command)
        if OBSERVE.parse(command) is not None:
            head = "uptime 1000.00\n" + "".join(f"{n} {p} 50000\n" for n, p in self.pids.items() if p)
            head += 'version {"successful":true,"message":"4.2.1-20230928","error":""}\n'
            return result(command, f"{head}{MARK}\n{self.status()}")
        for argv in (shlex.split(part) for part in command.split(" && ")):
            if argv[1:3] == ["service", "stop"]:
                self.pids[argv[3]] = 0
            elif argv[1:3] == ["service", "start"]:
                self.pids[argv[3]], self.next_pid = self.next_pid, self.next_pid + 1
        text = self.status()
        return result(command, (f"{MARK}\n" if MARK in command else "") + text)

    @contextmanager
    def connect(self, host: Host, deadline: float):
        self.connects += 1
        if not self.up:
            raise ConnectError(f"{host.label}: cannot connect: Connection refused")
        yield FakeRunner(self.handler)


@pytest.fixture
def store(tmp_path):
    with TaskStore(f"sqlite:///{tmp_path / 'tasks.db'}") as s:
        yield s


@pytest.fixture
def fake():
    return FakeHost()


def views(fake: FakeHost, cache: float = 60.0) -> AgentViews:
    return AgentViews(cache_seconds=cache, timeout_seconds=1.0, connect=fake.connect)


class TestIdsAndRules:
    def test_process_ids_are_stable_distinct_and_json_safe(self):
        """The same id for a host and alias every time; distinct per alias and per host; 1..2^53-1."""
        ids = {(h, a): process_id(h, a) for h in (1, 1001, MAX_ID) for a in PROCESSES}
        assert ids == {(h, a): process_id(h, a) for h in (1, 1001, MAX_ID) for a in PROCESSES}
        assert len(set(ids.values())) == len(ids) and all(0 < i <= MAX_ID for i in ids.values())
        assert resolve(1001, str(process_id(1001, "ocp_monagent"))) == "ocp_monagent"
        assert resolve(1001, "ocp_monagent") == "ocp_monagent"
        assert resolve(1001, str(process_id(1002, "ocp_monagent"))) is None and resolve(1001, "sshd") is None

    def test_only_the_worker_process_is_operable(self):
        """As OCP's sample (ocp_agentd and pos_proxy not operable): the supervisor and the command channel are
        basic; ocp_monagent may be restarted or stopped alone."""
        assert [operable(a) for a in PROCESSES] == [False, False, True]


class TestLiveView:
    def test_every_process_is_read_live_before_any_task(self, store, fake):
        """Pids, ports, STARTED, operable, log pattern, running time; AVAILABLE and fresh."""
        agent = views(fake).agent(HOST, store).to_wire()
        assert agent["status"] == "AVAILABLE" and agent["hostId"] == 1001
        assert agent["version"] == "4.2.1-20230928"  # `ocp_agentctl version`, in the same round trip (#20)
        shown = {p["alias"]: p for p in agent["processes"]}
        assert {a: p["pid"] for a, p in shown.items()} == fake.pids
        assert {a: p["id"] for a, p in shown.items()} == {a: process_id(1001, a) for a in PROCESSES}
        assert shown["ocp_mgragent"]["ports"] == "62888" and shown["ocp_monagent"]["ports"] == "62889"
        assert [p["operable"] for p in shown.values()] == [False, False, True]
        assert shown["ocp_monagent"]["logFilePattern"] == "/home/admin/ocp_agent/log/monagent.log*"
        assert all(p["status"] == "STARTED" and p["elapsedTime"] == 500 for p in shown.values())
        assert datetime.fromisoformat(agent["updateTime"]).timestamp() > time.time() - 5

    def test_reads_are_cached_per_host_and_redone_when_a_task_takes_the_host(self, store, fake):
        """Two GETs in the cache window cost one SSH login; a task locking the host makes the next one read again
        (and show RESTARTING)."""
        reader = views(fake)
        reader.agent(HOST, store)
        reader.agent(HOST, store)
        assert fake.connects == 1
        store.create_task(build_plan([1001]), creator="admin", executor="x")
        assert reader.agent(HOST, store).status == "RESTARTING" and fake.connects == 2

    def test_a_host_that_does_not_answer_shows_its_last_known_state_marked_offline(self, store, fake):
        """The last good read's pids, OFFLINE, updateTime from that read (older than the cache)."""
        reader = views(fake, cache=0.0)
        first = reader.agent(HOST, store)
        time.sleep(0.01)
        fake.up = False
        stale = reader.agent(HOST, store)
        assert stale.status == "OFFLINE" and stale.update_time == first.update_time
        assert [p.pid for p in stale.processes] == [p.pid for p in first.processes]

    def test_a_host_never_read_and_down_shows_what_a_restart_saw_or_nothing(self, store, fake):
        """Nothing known: OFFLINE and no processes."""
        fake.up = False
        agent = views(fake).agent(HOST, store)
        assert agent.status == "OFFLINE" and agent.processes == [] and agent.update_time is None


class TestOperations:
    def test_a_restart_gives_a_new_pid_leaves_the_others_and_is_recorded(self, store, fake):
        """service stop + start of ocp_monagent; ocp_agentd and ocp_mgragent untouched; the record names who, the
        pids and the commands; the host is free again."""
        before = dict(fake.pids)
        outcome = operate(store, views(fake), HOST, "ocp_monagent", "restart", creator="alice")
        assert outcome.process.pid == fake.pids["ocp_monagent"] != before["ocp_monagent"]
        assert outcome.process.status == "STARTED"
        assert {a: fake.pids[a] for a in PROCESSES[:2]} == {a: before[a] for a in PROCESSES[:2]}
        (record,) = store.processes.list(host_id=1001)
        assert (record.id, record.creator, record.status, record.action) == (
            outcome.operation_id,
            "alice",
            "SUCCESSFUL",
            "restart",
        )
        assert (record.pid_before, record.pid_after) == (before["ocp_monagent"], fake.pids["ocp_monagent"])
        assert "service stop ocp_monagent" in record.output and store.locks() == {}

    def test_a_stop_gives_pid_0_and_stopped(self, store, fake):
        outcome = operate(store, views(fake), HOST, str(process_id(1001, "ocp_monagent")), "stop", creator="bob")
        assert (outcome.process.pid, outcome.process.status) == (0, "STOPPED")

    @pytest.mark.parametrize("alias", ["ocp_agentd", "ocp_mgragent"])
    def test_a_basic_process_is_refused_and_nothing_is_done(self, store, fake, alias):
        with pytest.raises(ProcessNotOperableError, match="operable: false") as refused:
            operate(store, views(fake), HOST, alias, "restart", creator="alice")
        assert (refused.value.http_status, refused.value.code) == (400, 1003)
        assert fake.calls == [] and store.processes.list() == []

    @pytest.mark.parametrize("alias", ["pos_proxy", "ocp_exporter", "obstat2"])
    def test_an_older_agents_process_is_not_operable_rather_than_unknown(self, store, fake, alias):
        """#20: the older agent's processes, listed by its hosts' views, are named by an operation too: refused as
        not operable (its control script starts and stops only the whole agent or pos_proxy), not 404; by alias
        or by id; nothing done."""
        for name in (alias, str(process_id(1001, alias))):
            with pytest.raises(ProcessNotOperableError, match="older .Python. OCP agent") as refused:
                operate(store, views(fake), HOST, name, "restart", creator="alice")
            assert (refused.value.http_status, refused.value.code) == (400, 1003)
        assert fake.calls == [] and store.processes.list() == []

    def test_an_unknown_process_is_404(self, store, fake):
        with pytest.raises(UnknownProcessError) as unknown:
            operate(store, views(fake), HOST, "12345", "stop", creator="alice")
        assert (unknown.value.http_status, unknown.value.code) == (404, 1002) and fake.calls == []

    def test_a_host_held_by_a_task_is_409_and_nothing_is_done(self, store, fake):
        task = store.create_task(build_plan([1001]), creator="admin", executor="x")
        with pytest.raises(HostBusyError, match=f"TaskId: {task}"):
            operate(store, views(fake), HOST, "ocp_monagent", "stop", creator="alice")
        assert fake.calls == [] and store.processes.list() == []

    def test_with_agentd_down_it_is_refused_as_ocp_7019_and_recorded_failed(self, store, fake):
        fake.pids = {"ocp_agentd": 0, "ocp_mgragent": 0, "ocp_monagent": 0}
        fake.status = lambda: ""  # type: ignore[method-assign]
        failing = FakeRunner(lambda c: result(c, "", '{"successful":false,"error":"agentd is not running"}', 1))

        @contextmanager
        def connect(host, deadline):
            yield failing

        with pytest.raises(AgentStateError) as refused:
            operate(store, AgentViews(connect=connect), HOST, "ocp_monagent", "stop", creator="alice")
        assert refused.value.code == 7019
        (record,) = store.processes.list()
        assert record.status == "FAILED" and "ocp_agentd is not running" in record.output and store.locks() == {}


def test_the_observe_script_reads_pid_files_and_proc_on_the_real_shell(tmp_path):
    """OBSERVE on /bin/sh: the running time of a live process its pid file names (not of a dead one), then the
    CLI's status."""
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / "run").mkdir()
        (tmp_path / "bin").mkdir()
        (tmp_path / "run" / "ocp_agentd.pid").write_text(f"{sleeper.pid}\n")
        (tmp_path / "run" / "ocp_monagent.pid").write_text("999999999\n")  # no such process
        status = {"successful": True, "message": {"pid": sleeper.pid, "ready": False, "services": {}}}
        ctl = tmp_path / "bin" / "ocp_agentctl"
        ctl.write_text(f"#!/bin/sh\nprintf '%s' '{json.dumps(status)}'\n")
        ctl.chmod(0o755)
        observed = AgentControl(LocalRunner(), str(tmp_path), lambda line: None).observe(time.monotonic() + 10)
        assert observed.status.pids == {"ocp_agentd": sleeper.pid}
        assert list(observed.elapsed) == ["ocp_agentd"] and 0 <= observed.elapsed["ocp_agentd"] < 60
    finally:
        sleeper.kill()
        sleeper.wait()


class TestRoutes:
    """The agent routes in-process: OCP's envelope and codes, roles, both path forms."""

    @pytest.fixture
    def app(self, settings, store, fake):  # noqa: F811  (settings: test_api_app's fixture)
        import warnings

        from test_api_app import FakeLauncher

        from deployments.api import create_app, current_user
        from deployments.auth import User

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from fastapi.testclient import TestClient

        app = create_app(settings, launcher=FakeLauncher(), store=store, agents=views(fake))
        role = {"name": "HOST_MANAGER"}
        app.dependency_overrides[current_user] = lambda: User("op", (role["name"],))
        return TestClient(app), role

    def test_reads_operations_and_their_record(self, app, store, fake):
        client, _ = app
        agent = client.get("/compute/hosts/1001/agent").json()["data"]
        assert agent["status"] == "AVAILABLE" and len(agent["processes"]) == 3
        ref = process_id(1001, "ocp_monagent")
        done = client.post(f"/api/v2/compute/hosts/1001/agent/processes/{ref}/restart").json()
        assert done["successful"] and done["data"]["pid"] == fake.pids["ocp_monagent"]
        (record,) = client.get("/api/v2/compute/hosts/1001/agent/processes/operations").json()["data"]
        assert (record["creator"], record["status"], record["action"]) == ("op", "SUCCESSFUL", "RESTART")

    def test_refusals_are_ocps_error_envelopes(self, app, store, fake):
        client, role = app
        basic = client.post("/compute/hosts/1001/agent/processes/ocp_agentd/stop")
        assert (basic.status_code, basic.json()["error"]["code"]) == (400, 1003)
        unknown = client.post("/compute/hosts/1001/agent/processes/123/stop")
        assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, 1002)
        no_host = client.get("/compute/hosts/9/agent")
        assert (no_host.status_code, no_host.json()["error"]["code"]) == (404, 7005)
        task = store.create_task(build_plan([1002]), creator="admin", executor="x")
        busy = client.post("/compute/hosts/1002/agent/processes/ocp_monagent/restart")
        assert (busy.status_code, busy.json()["error"]["code"]) == (409, 20021)
        assert f"TaskId: {task}" in busy.json()["error"]["message"]
        role["name"] = "HOST_VIEWER"
        assert client.get("/compute/hosts/1001/agent/processes").status_code == 200
        refused = client.post("/compute/hosts/1001/agent/processes/ocp_monagent/stop")
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, 3100)
        assert store.processes.list() == []


def test_a_process_restart_that_gets_its_old_pid_back_is_a_restart():
    """POST .../processes/restart: the service came back with its predecessor's pid (pids are reused) but is a new
    process: no "did not come back with a new pid" failure (one AGE round trip tells)."""
    from deployments.sandbox.fake_agent import FakeAgent
    from flows.process_ops import _run
    from steps.agent import AGE, POS_PROXY, AgentControl
    from steps.testing import FakeRunner

    agent = FakeAgent()
    agent.reuse_pids = True
    old = agent.pids()[POS_PROXY]
    pids: list[int | None] = [None, None]
    control = AgentControl(FakeRunner(agent), agent.home, lambda line: None)
    _run(control, POS_PROXY, "restart", time.monotonic() + 10, pids)
    assert pids == [old, old] and AGE.parse(agent.commands[-1]) == [POS_PROXY, str(old)]
