"""AgentControl's reading of the agent's answers: status JSON, errors, pid-file identities, ps lines."""

from __future__ import annotations

import json
import time

import pytest

from steps.agent import (
    AGENTD,
    MARK,
    STATUS_IF_CLI,
    AgentControl,
    AgentStatus,
    error_of,
    parse_identities,
    parse_live,
    parse_status,
)
from steps.errors import AgentError
from steps.runner import CommandResult, sh
from steps.testing import FakeRunner, UnexpectedCommand, result

HOME = "/home/admin/ocp_agent"
CTL = f"{HOME}/bin/ocp_agentctl"


def status_json(ready=True, pid=100, services=None, **extra) -> str:
    """A status answer shaped like obagent's (and the sandbox's)."""
    if services is None:
        services = {"ocp_mgragent": {"state": "running", "pid": 101}, "ocp_monagent": {"state": "running", "pid": 102}}
    return json.dumps(
        {"successful": True, "message": {"state": "running", "ready": ready, "pid": pid, "services": services, **extra}}
    )


def control(answers: dict[str, CommandResult]) -> tuple[AgentControl, list[str]]:
    """An AgentControl over a FakeRunner answering from ``answers``; the list collects its log lines."""
    lines: list[str] = []
    return AgentControl(FakeRunner(answers), HOME, lines.append), lines


class TestParseStatus:
    def test_a_ready_agent_with_both_services(self):
        """Every running process is listed with its pid; ready is read as given."""
        status = parse_status(True, status_json())
        assert status == AgentStatus(
            running=True, ready=True, pids={AGENTD: 100, "ocp_mgragent": 101, "ocp_monagent": 102}
        )

    def test_a_stopped_service_is_left_out(self):
        """A service in state stopped (pid 0) has no pid; the agent runs but is not ready."""
        services = {"ocp_mgragent": {"state": "stopped", "pid": 0}, "ocp_monagent": {"state": "running", "pid": 102}}
        status = parse_status(True, status_json(ready=False, services=services))
        assert status.running and not status.ready
        assert status.pids == {AGENTD: 100, "ocp_monagent": 102}

    def test_a_running_service_without_a_pid_is_left_out(self):
        """state running but pid 0 or null: not counted as running."""
        services = {"ocp_mgragent": {"state": "running", "pid": None}, "ocp_monagent": {"state": "running", "pid": 0}}
        assert parse_status(True, status_json(services=services)).pids == {AGENTD: 100}

    @pytest.mark.parametrize("services", [None, {}], ids=["null", "empty"])
    def test_no_services_section(self, services):
        """services null or empty: only agentd is known."""
        text = json.dumps({"successful": True, "message": {"ready": False, "pid": 7, "services": services}})
        assert parse_status(True, text) == AgentStatus(running=True, ready=False, pids={AGENTD: 7})

    def test_pids_as_digit_strings_are_accepted(self):
        """A pid given as "123" reads as 123."""
        services = {"ocp_mgragent": {"state": "running", "pid": "101"}}
        assert parse_status(True, status_json(pid="100", services=services)).pids == {AGENTD: 100, "ocp_mgragent": 101}

    def test_ready_must_be_the_json_true(self):
        """ready: "true" (a string) is not ready: only JSON true is."""
        assert parse_status(True, status_json(ready="true")).ready is False

    def test_extra_fields_are_ignored(self):
        """obagent's richer answer (version, socket, startAt, dangling) parses the same."""
        text = status_json(version="4.2.1", socket="/x.sock", startAt=1, dangling=[])
        assert parse_status(True, text).pids[AGENTD] == 100

    def test_a_failed_status_means_not_running_whatever_it_printed(self):
        """Exit status non-zero: agentd is down; the output is not even parsed."""
        assert parse_status(False, "garbage") == AgentStatus(running=False)

    @pytest.mark.parametrize(
        "text",
        [
            pytest.param("", id="empty"),
            pytest.param("not json", id="not-json"),
            pytest.param('{"successful":true,"message":"ok"}', id="message-is-a-string"),
            pytest.param('{"successful":true}', id="no-message"),
            pytest.param('{"successful":true,"message":{"ready":true}}', id="no-pid"),
            pytest.param('{"successful":true,"message":{"pid":-4}}', id="negative-pid"),
            pytest.param('{"successful":true,"message":{"pid":0}}', id="zero-pid"),
            pytest.param('{"successful":true,"message":{"pid":true}}', id="boolean-pid"),
            pytest.param('{"successful":true,"message":{"pid":1,"services":[1]}}', id="services-a-list"),
            pytest.param('{"successful":true,"message":{"pid":1}}\n{"x":1}', id="two-documents"),
            pytest.param("[1, 2]", id="a-list"),
        ],
    )
    def test_malformed_output_is_an_agent_error_naming_it(self, text):
        """A successful status we cannot read: AgentError naming the command and quoting the output."""
        with pytest.raises(AgentError) as raised:
            parse_status(True, text)
        assert "cannot parse `ocp_agentctl status` output" in raised.value.message
        assert repr(text[:500]) in raised.value.message


class TestDescribe:
    def test_a_running_agent_lists_every_process(self):
        """describe() names readiness and each process's pid, - for a missing one."""
        status = AgentStatus(running=True, ready=False, pids={AGENTD: 1, "ocp_monagent": 3})
        assert status.describe() == "not ready (ocp_agentd=1, ocp_mgragent=-, ocp_monagent=3)"

    def test_a_stopped_agent(self):
        """describe() of a stopped agent says so."""
        assert AgentStatus(running=False).describe() == "agent not running"


class TestErrorOf:
    def test_the_json_error_on_stderr(self):
        """obagent's failure: {"successful":false,"error":...} on stderr."""
        failed = CommandResult("c", 1, "", '{"successful":false,"error":"agentd_exited_quickly"}', 0.1)
        assert error_of(failed) == "agentd_exited_quickly"

    def test_the_json_error_on_stdout(self):
        """Some versions print the error answer on stdout."""
        assert error_of(CommandResult("c", 1, '{"error":"wait_for_exit_timeout"}', "", 0.1)) == "wait_for_exit_timeout"

    def test_no_json_gives_the_tail_of_the_output(self):
        """Plain text: the last 500 characters of stdout and stderr."""
        failed = CommandResult("c", 127, "", "sh: 1: ocp_agentctl: not found" + "x" * 600, 0.1)
        assert error_of(failed) == failed.output[-500:] and len(error_of(failed)) == 500

    def test_json_without_an_error_field_gives_the_output(self):
        """JSON that carries no error: the output itself."""
        assert error_of(CommandResult("c", 1, '{"successful":false}', "", 0.1)) == '{"successful":false}'

    def test_nothing_printed(self):
        """No output at all: said so."""
        assert error_of(CommandResult("c", 1, "", "", 0.1)) == "(no output)"


class TestIdentitiesAndPs:
    def test_identities_with_and_without_a_start_time(self):
        """`name pid start`; start `-` (the process is gone) is None."""
        text = "ocp_agentd 100 5000\nocp_mgragent 101 -\nocp_monagent 102 5002\n"
        assert parse_identities(text) == {
            "ocp_agentd": (100, 5000),
            "ocp_mgragent": (101, None),
            "ocp_monagent": (102, 5002),
        }

    def test_identities_ignore_junk_and_strangers(self):
        """Lines that are not `agent-process pid start` are skipped."""
        text = "banner text\nocp_agentd abc 1\nsshd 5 6\nocp_monagent 7\nocp_mgragent 8 9 10\nocp_mgragent 11 12\n"
        assert parse_identities(text) == {"ocp_mgragent": (11, 12)}

    def test_ps_keeps_live_agent_processes(self):
        """ps lines of agent processes are live unless their state is Z."""
        text = "  100 Ssl  ocp_agentd\n  101 Z    ocp_mgragent\n  102 R    ocp_monagent\n"
        assert parse_live(text) == {100: "ocp_agentd", 102: "ocp_monagent"}

    def test_ps_ignores_reused_pids_and_junk(self):
        """A pid now held by another program is not the agent's; malformed lines are skipped."""
        text = "  100 S    bash\n  PID STAT COMMAND\nxyz S ocp_agentd\n  103 S\n"
        assert parse_live(text) == {}


class TestControl:
    def test_ctl_then_status_success_reads_the_status_after_the_mark(self):
        """`start && echo MARK && status`: the status after the mark is returned."""
        command = sh([CTL, "start"], ["echo", MARK], [CTL, "status"])
        agent, _ = control({command: result(command, f'{{"successful":true}}\n{MARK}\n{status_json()}\n')})
        status = agent.ctl_then_status(("start",), deadline=time.monotonic() + 5, doing="starting the agent")
        assert status.ready and status.pids[AGENTD] == 100

    def test_ctl_then_status_failure_carries_the_agents_error(self):
        """No mark and a non-zero exit: AgentError with the command, its exit status and the agent's error."""
        command = sh([CTL, "start"], ["echo", MARK], [CTL, "status"])
        failed = result(command, "", '{"successful":false,"error":"agentd_exited_quickly"}\n', 1)
        agent, lines = control({command: failed})
        with pytest.raises(
            AgentError, match="starting the agent failed: ocp_agentctl start exited 1: agentd_exited_quickly"
        ):
            agent.ctl_then_status(("start",), deadline=time.monotonic() + 5, doing="starting the agent")
        assert lines[0] == f"$ {sh([CTL, 'start'], [CTL, 'status'])}"

    def test_ctl_then_status_without_mark_but_success_is_an_error(self):
        """Exit 0 but no mark (the command did not run as built): AgentError quoting the output."""
        command = sh([CTL, "start"], ["echo", MARK], [CTL, "status"])
        agent, _ = control({command: result(command, "something else\n")})
        with pytest.raises(AgentError, match="gave no answer for ocp_agentctl start: 'something else'"):
            agent.ctl_then_status(("start",), deadline=time.monotonic() + 5, doing="starting the agent")

    def test_status_with_a_missing_cli(self):
        """require_cli and exit 127: AgentError naming the CLI's path."""
        command = STATUS_IF_CLI.render(CTL)
        agent, _ = control({command: result(command, exit_status=127)})
        with pytest.raises(AgentError, match=f"agent CLI {CTL} is missing or not executable"):
            agent.status(time.monotonic() + 5, require_cli=True)

    def test_quiet_status_logs_nothing(self):
        """A quiet status (the polls of wait_until) leaves no log line."""
        command = sh([CTL, "status"])
        agent, lines = control({command: result(command, status_json())})
        assert agent.status(time.monotonic() + 5, quiet=True).ready
        assert lines == []

    def test_ctl_command_failure_names_the_arguments(self):
        """ctl_command: AgentError with the quoted arguments, exit status and the agent's error."""
        command = sh([CTL, "service", "start", "ocp_mgragent"])
        agent, _ = control({command: result(command, "", '{"error":"agentd is not running"}', 1)})
        with pytest.raises(AgentError, match="ocp_agentctl service start ocp_mgragent exited 1: agentd is not running"):
            agent.ctl_command(("service", "start", "ocp_mgragent"), time.monotonic() + 5, doing="starting it")

    def test_an_unknown_signal_is_refused_before_sending(self):
        """signal() takes TERM or KILL only; anything else sends nothing."""
        runner = FakeRunner({})
        agent = AgentControl(runner, HOME, lambda line: None)
        with pytest.raises(ValueError, match="TERM"):
            agent.signal({1}, "HUP; reboot", time.monotonic() + 5)
        assert runner.commands == []

    def test_an_unexpected_command_fails_loudly(self):
        """The fake answers only what it was given: a new command is UnexpectedCommand, not a silent success."""
        agent, _ = control({})
        with pytest.raises(UnexpectedCommand):
            agent.status(time.monotonic() + 5)
