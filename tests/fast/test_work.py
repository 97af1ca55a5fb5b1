"""Every step of steps/work.py against FakeStep + FakeAgent: the happy path, the agent's faults, the rollbacks."""

from __future__ import annotations

import threading
import time

import pytest

from deployments.sandbox.fake_agent import FakeAgent
from steps import agent as agent_module
from steps import work
from steps.agent import AGENTD, POS_PROXY, PROCESSES, SIGNAL, Limits, Probe
from steps.errors import AgentError, CommandTimeout, Fenced, SubtaskCancelled
from steps.testing import FakeRunner, FakeStep, Hang, result


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    """wait_until polls every millisecond here (0.1 s on real hosts)."""
    monkeypatch.setattr(agent_module, "POLL_SECONDS", 0.001)


def prepared(agent: FakeAgent, **kwargs) -> FakeStep:
    """A step on ``agent``'s host whose Prepare already ran (the "before" pids recorded)."""
    step = FakeStep.on(agent, **kwargs)
    work.prepare(step)
    return step


def again(step: FakeStep, **kwargs) -> FakeStep:
    """The next step on the same host and task: same connection, same pid records, a fresh log."""
    return FakeStep(step.host, step.connection, pids=step.pids, **kwargs)


class TestHappyPath:
    def test_the_whole_restart_gives_every_process_a_new_pid(self):
        """prepare, restart pos proxy, stop all, start all, finish: all new pids, recorded before/after."""
        agent = FakeAgent()
        before = agent.pids()
        step = prepared(agent)
        for run in (work.restart_pos_proxy, work.stop_all, work.start_all, work.finish):
            run(again(step))
        after = agent.pids()
        assert set(after) == set(PROCESSES) and all(after[n] != before[n] for n in PROCESSES)
        assert step.pids["before"] == before and step.pids["after"] == after
        assert [call[0] for call in agent.ctl_calls] == [
            "status",
            "status",
            "service",
            "service",
            "status",
            "stop",
            "status",
            "start",
            "status",
            "status",
        ]

    def test_round_trips_per_step_are_as_measured(self):
        """One command for prepare, two for the pos proxy restart, two for stop all, one each for start and
        finish: the counts the speed figures were measured with."""
        agent = FakeAgent()
        runner = FakeRunner(agent)
        step = FakeStep.on(agent)
        step.connection = runner
        counts = []
        for run in (work.prepare, work.restart_pos_proxy, work.stop_all, work.start_all, work.finish):
            sent = len(runner.commands)
            run(again(step))
            counts.append(len(runner.commands) - sent)
        assert counts == [1, 2, 2, 1, 1]

    def test_prepare_logs_the_agent_and_records_its_pids(self):
        """prepare: one status (the CLI checked in the same round trip), pids recorded as "before"."""
        agent = FakeAgent()
        step = prepared(agent)
        assert step.pids["before"] == agent.pids()
        assert "agent ready" in step.log.text and "# if it is executable" in step.log.text


class TestPrepareRefuses:
    """Prepare refuses what a restart cannot fix, before anything is stopped, with the reason as its message."""

    @pytest.mark.parametrize(
        "setup, reason",
        [
            (lambda a: a.set_fault("free_disk_mb", "10"), "filesystem is full: 10 MB free .simulated., 64 MB required"),
            (lambda a: a.set_fault("free_memory_mb", "3"), "too little free memory: 3 MB available .simulated."),
            (lambda a: setattr(a, "writable", False), "the agent home is not writable"),
            (lambda a: setattr(a, "owner", "UNKNOWN"), "the agent's user .the agent home's owner. has no account"),
            (
                lambda a: a.listeners.append('LISTEN 0 5 0.0.0.0:62888 0.0.0.0:* users:(("nc",pid=4242,fd=3))'),
                r"port 62888 is held by a process that is not the agent: nc \(pid 4242\) listening on 0.0.0.0:62888",
            ),
        ],
        ids=["disk-full", "low-memory", "read-only", "user-missing", "port-held"],
    )
    def test_a_host_a_restart_cannot_fix_fails_prepare_and_nothing_is_touched(self, setup, reason):
        """AgentError naming the reason; no pids recorded; the only CLI call was a status."""
        agent = FakeAgent()
        setup(agent)
        before = agent.pids()
        step = FakeStep.on(agent)
        with pytest.raises(AgentError, match=f"a restart cannot fix this host, nothing was stopped: .*{reason}"):
            work.prepare(step)
        assert step.pids == {} and agent.ctl_calls == [["status"]] and agent.pids() == before

    @pytest.mark.parametrize(
        "line",
        [
            'LISTEN 0 5 127.0.0.9:62888 0.0.0.0:* users:(("nc",pid=4242,fd=3))',
            'LISTEN 0 5 0.0.0.0:62888 0.0.0.0:* users:(("ocp_mgragent",pid={mgr},fd=3))',
        ],
        ids=["another-loopback-address", "the-agents-own-mgragent"],
    )
    def test_a_listener_that_does_not_block_the_agent_is_no_reason(self, line):
        """The port held by the agent's own mgragent, or bound to another host's loopback address (the sandbox's
        hosts share one machine): Prepare goes on."""
        agent = FakeAgent()
        agent.listeners.append(line.format(mgr=agent.pids()["ocp_mgragent"]))
        step = FakeStep.on(agent)
        work.prepare(step)
        assert step.pids["before"] == agent.pids()

    @pytest.mark.parametrize(
        "address, bound, blocks",
        [
            ("10.0.0.11", "127.0.0.1", True),  # a real host: a local-only foreign listener still takes the port
            ("10.0.0.11", "10.0.0.99", True),
            ("10.0.0.11", "*", True),
            ("127.0.0.5", "127.0.0.9", False),  # sandbox hosts on one kernel: another host's address
            ("127.0.0.5", "127.0.0.5", True),
            ("127.0.0.5", "0.0.0.0", True),
            ("127.0.0.5", "[::]", True),
        ],
    )
    def test_which_listeners_block_the_agents_port(self, address, bound, blocks):
        """#20: only a listener on another loopback address of a host reached over loopback is someone else's."""
        probe = Probe(listeners=(f'LISTEN 0 5 {bound}:62888 0.0.0.0:* users:(("nc",pid=4242,fd=3))',))
        assert bool(probe.problems(Limits(), address, set())) is blocks

    def test_the_thresholds_are_the_steps(self):
        """A lower min_free_disk_mb lets the same host through."""
        agent = FakeAgent()
        agent.set_fault("free_disk_mb", "10")
        step = FakeStep.on(agent, limits=Limits(min_free_disk_mb=5))
        work.prepare(step)
        assert "before" in step.pids


class TestPrepare:
    def test_a_missing_cli_is_an_agent_error(self):
        """No {agent_home}/bin/ocp_agentctl: AgentError naming it, nothing recorded, no CLI call made."""
        agent = FakeAgent()
        agent.cli = False
        step = FakeStep.on(agent)
        with pytest.raises(AgentError, match="agent CLI /home/admin/ocp_agent/bin/ocp_agentctl is missing"):
            work.prepare(step)
        assert step.pids == {} and agent.ctl_calls == []

    def test_a_stopped_agent_is_a_warning_not_a_failure(self):
        """The agent is down: prepare succeeds, warns, and records no pids."""
        step = prepared(FakeAgent(running=False))
        assert step.pids["before"] == {}
        assert ("WARN", "the agent is not running on this host; Start all will start it") in step.log.lines

    def test_a_fenced_step_sends_nothing(self):
        """A runner that lost its lease: Fenced before any command reaches the host."""
        agent = FakeAgent()
        step = FakeStep.on(agent, fenced="the lease was lost")
        with pytest.raises(Fenced, match="the lease was lost"):
            work.prepare(step)
        assert agent.commands == []

    def test_a_deadline_already_passed_sends_nothing(self):
        """A step whose deadline is gone: CommandTimeout before sending."""
        agent = FakeAgent()
        step = FakeStep.on(agent, deadline=time.monotonic() - 1)
        with pytest.raises(CommandTimeout, match="deadline passed before"):
            work.prepare(step)
        assert agent.commands == []


class TestRestartPosProxy:
    def test_only_the_command_channel_gets_a_new_pid(self):
        """ocp_mgragent restarted (new pid); agentd and monagent untouched; the log names old -> new."""
        agent = FakeAgent()
        before = agent.pids()
        step = FakeStep.on(agent)
        work.restart_pos_proxy(step)
        after = agent.pids()
        assert after[POS_PROXY] != before[POS_PROXY]
        assert {n: after[n] for n in (AGENTD, "ocp_monagent")} == {n: before[n] for n in (AGENTD, "ocp_monagent")}
        assert f"{POS_PROXY} restarted: pid {before[POS_PROXY]} -> {after[POS_PROXY]}" in step.log.text

    def test_services_that_come_up_late_are_waited_for(self):
        """The service is not back when its CLI returns: wait_until polls status until it is."""
        agent = FakeAgent()
        agent.lagging_statuses = 3
        old = agent.pids()[POS_PROXY]
        step = FakeStep.on(agent)
        work.restart_pos_proxy(step)
        assert agent.pids()[POS_PROXY] != old
        assert agent.ctl_calls[-3:] == [["status"]] * 3  # the one after `service start`, then two polls
        assert f"{POS_PROXY} restarted: pid {old} -> {agent.pids()[POS_PROXY]}" in step.log.text

    def test_its_old_pid_again_is_a_new_process_if_younger_than_the_restart(self):
        """The restarted service got its predecessor's pid back (pids are reused: seen at 1,000 sandbox hosts, where
        Restart pos proxy then waited out its 60 s for "a new pid"): one AGE round trip tells a new process."""
        agent = FakeAgent()
        agent.reuse_pids = True
        old = agent.pids()[POS_PROXY]
        step = FakeStep.on(agent)
        work.restart_pos_proxy(step)
        assert agent.pids()[POS_PROXY] == old and agent.ctl_calls[-1] == ["status"]
        assert agent_module.AGE.parse(agent.commands[-1]) == [POS_PROXY, str(old)]
        assert f"{POS_PROXY} restarted: pid {old} -> {old} (its old pid again, a new process" in step.log.text

    def test_age_tells_an_old_process_and_a_gone_one(self):
        """AGE: a service started before the clock moved on is seconds old (not a restart's); a gone pid has no
        age."""
        agent = FakeAgent()
        agent.duplicate("ocp_monagent")  # the clock moves on: the services are older than a restart now
        old = agent.pids()[POS_PROXY]
        control = agent_module.AgentControl(FakeRunner(agent), agent.home, lambda line: None)
        assert control.age(POS_PROXY, old, time.monotonic() + 5) >= 1.0
        assert control.age(POS_PROXY, 999_999, time.monotonic() + 5) is None

    def test_a_stopped_agent_is_left_to_start_all(self):
        """agentd down: a warning, no service command sent."""
        agent = FakeAgent(running=False)
        step = FakeStep.on(agent)
        work.restart_pos_proxy(step)
        assert [call[0] for call in agent.ctl_calls] == ["status"]
        assert "cannot be restarted alone" in step.log.text

    def test_a_failing_service_command_is_an_agent_error(self):
        """service stop fails: AgentError naming both commands and the agent's error; no status read after."""
        agent = FakeAgent()
        agent.service_error = "wait_for_service_exit_timeout"
        with pytest.raises(
            AgentError,
            match="restarting ocp_mgragent failed: ocp_agentctl service stop ocp_mgragent "
            "&& ocp_agentctl service start ocp_mgragent exited 255: .*"
            "wait_for_service_exit_timeout",
        ):
            work.restart_pos_proxy(FakeStep.on(agent))
        assert agent.ctl_calls == [["status"], ["service", "stop", POS_PROXY]]


class TestStopAll:
    def test_everything_stops_and_start_times_are_recorded(self):
        """stop all: no agent process left; the start times read before the stop are recorded as "starts"."""
        agent = FakeAgent()
        starts = {p.name: p.start for p in agent.processes.values()}
        step = prepared(agent)
        work.stop_all(again(step))
        assert agent.pids() == {}
        assert step.pids["starts"] == starts

    def test_a_leftover_process_gets_sigterm(self):
        """stop leaves ocp_monagent running: it is named in a warning and TERMed; the step succeeds."""
        agent = FakeAgent()
        agent.stop_leaves = {"ocp_monagent"}
        leftover = agent.pids()["ocp_monagent"]
        step = again(prepared(agent), timeout=4)
        work.stop_all(step)
        assert agent.pids() == {}
        assert agent.signals == [("TERM", [leftover])]
        assert f"agent processes are still running: ocp_monagent (pid {leftover}); sending SIGTERM" in step.log.text

    def test_a_leftover_that_ignores_term_gets_sigkill(self):
        """A leftover that ignores SIGTERM: TERM, then KILL; the step succeeds."""
        agent = FakeAgent()
        agent.stop_leaves = {"ocp_monagent"}
        agent.leftovers_ignore_term = True
        leftover = agent.pids()["ocp_monagent"]
        step = again(prepared(agent), timeout=2)  # reserve 0.5 s: 0.25 s for TERM to work
        work.stop_all(step)
        assert agent.pids() == {}
        assert agent.signals == [("TERM", [leftover]), ("KILL", [leftover])]
        assert "sending SIGKILL" in step.log.text

    def test_a_stop_that_fails_with_agentd_left_is_finished_by_signals(self):
        """stop exits 1 (wait_for_exit_timeout) with agentd still up: warned, then TERMed; success."""
        agent = FakeAgent()
        agent.stop_leaves = {AGENTD}
        step = again(prepared(agent), timeout=4)
        work.stop_all(step)
        assert agent.pids() == {}
        assert (
            "ocp_agentctl stop exited 255: Module=agent, kind=DEADLINE_EXCEEDED, code=wait_for_exit_timeout"
            in step.log.text
        )

    def test_processes_that_survive_everything_fail_the_step(self):
        """Signals that change nothing (e.g. another user's processes): AgentError naming the survivors."""
        agent = FakeAgent()
        agent.stop_leaves = {"ocp_monagent"}
        leftover = agent.pids()["ocp_monagent"]
        step = again(prepared(agent), timeout=2)
        step.connection = FakeRunner(lambda c: result(c) if SIGNAL.parse(c) is not None else agent(c))
        with pytest.raises(AgentError, match=f"survived stop, SIGTERM and SIGKILL: ocp_monagent \\(pid {leftover}\\)"):
            work.stop_all(step)

    def test_zombies_count_as_stopped(self):
        """Killed processes that linger as zombies (state Z) are not leftovers."""
        agent = FakeAgent()
        agent.zombies = True
        step = again(prepared(agent))
        work.stop_all(step)
        assert agent.signals == [] and len(agent.processes) == 3
        assert "all agent processes stopped" in step.log.text

    def test_a_stop_that_hangs_times_out_and_leaves_the_agent(self):
        """stop never returns: CommandTimeout with its output and the kill of its process group; no signals."""
        agent = FakeAgent()
        agent.stop_hangs = True
        before = agent.pids()
        step = again(prepared(agent))
        with pytest.raises(CommandTimeout, match="did not finish within .* killed its process group") as raised:
            work.stop_all(step)
        assert f"stopping ocp_agentd (pid {before[AGENTD]})" in raised.value.output
        assert agent.pids() == before and agent.signals == []

    def test_a_cancel_while_stop_hangs_is_subtask_cancelled(self):
        """An operator's cancel during the hung stop: SubtaskCancelled, its process group killed."""
        agent = FakeAgent()
        agent.stop_hangs = True
        step = again(prepared(agent), cancel=True)
        with pytest.raises(SubtaskCancelled, match="cancelled by an operator while .* killed its process group"):
            work.stop_all(step)
        assert len(step.connection.killed) == 1

    def test_a_lost_lease_while_stop_hangs_is_fenced(self):
        """The lease lost during the hung stop: Fenced (not a cancel), as the real step's runner reports it."""
        agent = FakeAgent()
        agent.stop_hangs = True
        step = again(prepared(agent))
        step.connection = FakeRunner(lambda c: Hang() if "stop" in c else agent(c))
        lose = threading.Timer(0.05, lambda: setattr(step, "fenced", "another runner took the task"))
        step.connection.real_time = True
        lose.start()
        with pytest.raises(Fenced, match="stopped the running command: another runner took the task"):
            work.stop_all(step)
        lose.join()


class TestStartAll:
    def test_a_failing_start_carries_the_agents_error(self):
        """start fails: AgentError with agentd_exited_quickly; the agent stays down."""
        agent = FakeAgent()
        step = prepared(agent)
        work.stop_all(again(step))
        agent.start_error = "agentd_exited_quickly"
        with pytest.raises(
            AgentError, match="starting the agent failed: ocp_agentctl start exited 255: .*code=agentd_exited_quickly"
        ):
            work.start_all(again(step))
        assert agent.pids() == {}

    def test_a_cli_gone_at_start_is_an_agent_error(self):
        """The CLI disappeared between stop and start: AgentError with exit 127 and the shell's message."""
        agent = FakeAgent()
        step = prepared(agent)
        work.stop_all(again(step))
        agent.cli = False
        with pytest.raises(AgentError, match="ocp_agentctl start exited 127: .*not found"):
            work.start_all(again(step))

    def test_a_slow_start_is_waited_for(self):
        """Services up only after a few status reads: start all polls until ready."""
        agent = FakeAgent()
        step = prepared(agent)
        work.stop_all(again(step))
        agent.lagging_statuses = 3
        work.start_all(again(step))
        assert set(agent.pids()) == set(PROCESSES)

    def test_a_reused_pid_with_a_new_start_time_is_a_new_process(self):
        """Every process got its old pid back (pid reuse) but started anew: start all succeeds, having compared
        start times in one extra round trip."""
        agent = FakeAgent()
        agent.reuse_pids = True
        before = agent.pids()
        step = prepared(agent)
        work.stop_all(again(step))
        work.start_all(again(step))
        assert agent.pids() == before
        assert agent_module.START_TIMES.parse(agent.commands[-1]) == [str(pid) for pid in sorted(before.values())]

    def test_the_same_pid_and_start_time_is_the_old_process(self):
        """The processes were never restarted (same pid, same start time): AgentError naming them."""
        agent = FakeAgent()
        step = prepared(agent)
        step.pids["starts"] = {p.name: p.start for p in agent.processes.values()}
        with pytest.raises(AgentError, match="ocp_agentd, ocp_mgragent, ocp_monagent still run with the pid"):
            work.start_all(again(step))

    def test_without_start_times_the_same_pid_is_suspect(self):
        """No start times recorded and the same pids: AgentError (it cannot tell a reused pid)."""
        agent = FakeAgent()
        step = prepared(agent)
        with pytest.raises(AgentError, match="still run with the pid"):
            work.start_all(again(step))


class TestFinish:
    def test_a_ready_agent_is_summarised(self):
        """finish: "after" pids recorded, a before -> after line logged."""
        agent = FakeAgent()
        step = prepared(agent)
        before = dict(step.pids["before"])
        work.stop_all(again(step))
        work.start_all(again(step))
        last = again(step)
        work.finish(last)
        after = agent.pids()
        assert step.pids["after"] == after
        assert f"ocp_agentd {before[AGENTD]} -> {after[AGENTD]}" in last.log.text

    def test_finish_trusts_a_fresh_serves_of_start_all_for_the_same_ready_processes(self):
        """#23: right after Start all saw mgragent answer, Finish reads the status alone (no curl on the socket)
        when the same processes are still running and ready; other pids, or a Start all too long ago: the full
        health check."""
        agent = FakeAgent()
        step = prepared(agent)
        runner = FakeRunner(agent)
        step.connection = runner
        work.stop_all(again(step))
        work.start_all(again(step))
        sent = len(runner.commands)
        last = again(step)
        work.finish(last)
        assert len(runner.commands) == sent + 1 and "unix-socket" not in runner.commands[-1]
        assert "the same processes served" in last.log.text and step.pids["after"] == agent.pids()

        agent._service("stop", POS_PROXY)  # mgragent restarted since Start all: a new pid
        agent._service("start", POS_PROXY)
        work.finish(again(step))
        assert "unix-socket" in runner.commands[-1]

        step.pids["served"] = {**agent.pids(), "at": int(time.time()) - int(work.SERVED_FRESH_SECONDS) - 5}
        sent = len(runner.commands)
        work.finish(again(step))
        assert "unix-socket" in runner.commands[-1] and len(runner.commands) == sent + 1

    def test_an_agent_not_ready_fails_finish(self):
        """A service down at the end: retried until the deadline, then AgentError naming the state; nothing
        recorded."""
        agent = FakeAgent()
        step = prepared(agent)
        agent._service("stop", "ocp_monagent")
        with pytest.raises(AgentError, match="timed out waiting until the agent serves: the agent is not ready"):
            work.finish(again(step, timeout=1))
        assert "after" not in step.pids

    def test_ready_is_not_enough_mgragent_must_answer(self):
        """Ready, but ocp_mgragent does not answer on its unix socket (fault mgragent_mute): Finish fails at its
        deadline naming the socket's silence."""
        agent = FakeAgent()
        step = prepared(agent)
        agent.set_fault("mgragent_mute")
        with pytest.raises(AgentError, match="ocp_mgragent does not answer on its unix socket: curl: .7."):
            work.finish(again(step, timeout=1))

    def test_an_mgragent_started_before_the_stop_is_not_the_new_one(self):
        """mgragent answers with a startAt before Stop all began (by the host's clock): not restarted."""
        agent = FakeAgent()
        step = prepared(agent)
        step.pids["clock"] = {"stop": agent.clock() + 5}
        with pytest.raises(AgentError, match="not after the restart began"):
            work.finish(again(step, timeout=1))


class TestRollback:
    def test_ensure_running_starts_a_stopped_agent(self):
        """Rollback of stop/start: a stopped agent is started and waited for."""
        agent = FakeAgent(running=False)
        step = FakeStep.on(agent)
        work.ensure_running(step)
        assert set(agent.pids()) == set(PROCESSES)
        assert "agent runs again" in step.log.text

    def test_ensure_running_waits_until_the_agent_serves_not_just_ready(self):
        """#20: rollback waits for health as Start all does: mgragent silent -> AgentError at the deadline."""
        agent = FakeAgent(running=False)
        agent.set_fault("mgragent_mute")
        step = FakeStep.on(agent, timeout=1)
        with pytest.raises(AgentError, match="ocp_mgragent does not answer on its unix socket"):
            work.ensure_running(step)
        assert set(agent.pids()) == set(PROCESSES)  # started, ready, yet not serving

    def test_ensure_running_starts_a_stopped_service_of_a_running_agentd(self):
        """agentd runs but ocp_monagent was stopped (``service stop``): rollback starts that service, then serves."""
        agent = FakeAgent()
        agent._service("stop", "ocp_monagent")
        step = FakeStep.on(agent)
        work.ensure_running(step)
        assert set(agent.pids()) == set(PROCESSES) and ["service", "start", "ocp_monagent"] in agent.ctl_calls
        assert ["start"] not in agent.ctl_calls and "agent runs again" in step.log.text

    def test_ensure_running_leaves_a_ready_agent_alone(self):
        """A serving agent: nothing to undo, no start sent."""
        agent = FakeAgent()
        step = FakeStep.on(agent)
        work.ensure_running(step)
        assert ["start"] not in agent.ctl_calls and "nothing to undo" in step.log.text

    def test_ensure_running_reports_a_failing_start(self):
        """The start fails during rollback: AgentError with the agent's error."""
        agent = FakeAgent(running=False)
        agent.start_error = "fetch_admin_lock_failed"
        with pytest.raises(AgentError, match="starting the agent failed: .*code=fetch_admin_lock_failed"):
            work.ensure_running(FakeStep.on(agent))

    def test_ensure_pos_proxy_starts_a_stopped_command_channel(self):
        """Rollback of the pos proxy restart: ocp_mgragent stopped while agentd runs is started again."""
        agent = FakeAgent()
        agent._service("stop", POS_PROXY)
        work.ensure_pos_proxy(FakeStep.on(agent))
        assert POS_PROXY in agent.pids()
        assert agent.ctl_calls[-2:] == [["service", "start", POS_PROXY], ["status"]]

    @pytest.mark.parametrize("running", [True, False], ids=["all-running", "agent-down"])
    def test_ensure_pos_proxy_has_nothing_to_undo(self, running):
        """ocp_mgragent running, or agentd down: nothing to undo, no service command."""
        agent = FakeAgent(running=running)
        step = FakeStep.on(agent)
        work.ensure_pos_proxy(step)
        assert agent.ctl_calls == [["status"]] and "nothing to undo here" in step.log.text

    def test_nothing_to_undo(self):
        """Rollback of prepare and finish: logs it and sends nothing."""
        agent = FakeAgent()
        step = FakeStep.on(agent)
        work.nothing_to_undo(step)
        assert agent.commands == [] and step.log.lines == [("INFO", "nothing to undo")]


class TestFakeRunner:
    def test_a_cancel_that_arrives_while_the_command_hangs(self):
        """real_time: stop() turning True mid-command raises SubtaskCancelled before the deadline."""
        flag = threading.Event()
        runner = FakeRunner(lambda c: Hang("partial\n"), real_time=True)
        threading.Timer(0.05, flag.set).start()
        started = time.monotonic()
        with pytest.raises(SubtaskCancelled, match="its output:\npartial"):
            runner.run("x", deadline=started + 5, stop=flag.is_set)
        assert time.monotonic() - started < 2

    def test_a_hang_without_stop_is_a_timeout_at_once(self):
        """Not real time: a Hang is a CommandTimeout straight away, with the output so far."""
        runner = FakeRunner({"x": Hang("so far")})
        started = time.monotonic()
        with pytest.raises(CommandTimeout) as raised:
            runner.run("x", deadline=started + 30)
        assert raised.value.output == "so far" and time.monotonic() - started < 1
        assert runner.killed == [40001]
