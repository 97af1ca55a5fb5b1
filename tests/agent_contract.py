"""One agent contract, two agents: what our steps rely on from a host's OCP agent, checked against any of them.

The same tests run against the sandbox's FakeAgent (in memory, through a FakeRunner) and its shell agent (the
real scripts of ``deployments/sandbox/agent``, as processes; run by a LocalRunner in the fast tier, over SSH in the
end-to-end tier). The shell agent follows obagent's contract; where the fake disagrees, the fake is wrong.

A test module picks the agents: it defines an ``agent`` fixture giving a started ``AgentDriver`` and imports the
test classes from here (``tests/fast/test_agent_contract.py``, ``tests/test_agent_contract_ssh.py``).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Callable

import pytest

from deployments.sandbox.agent_home import AgentHome
from deployments.sandbox.fake_agent import FakeAgent
from steps import agent_logs, work
from steps.agent import (
    AGENTD,
    LIVE,
    LIVE_THEN_STATUS,
    MARK,
    POS_PROXY,
    PROCESSES,
    SERVICES,
    SIGNAL,
    STATUS_IF_CLI,
    STOP_ALL,
    AgentControl,
    AgentStatus,
    Limits,
)
from steps.errors import AgentError, CommandTimeout
from steps.inventory import DEFAULT_AGENT_HOME, Host
from steps.runner import CommandResult, Runner, sh
from steps.testing import FakeRunner, FakeStep

SECONDS = 20.0  # each command's deadline: far beyond what a healthy agent needs
DEAD = 4_194_304  # PID_MAX_LIMIT: no process ever has this pid
OK = '{"successful":true,"message":"ok","error":""}'  # obagent's: no trailing newline
USAGE = "usage: ocp_agentctl status|start|stop|restart|version|service start|stop ocp_mgragent|ocp_monagent\n"
VERSION = "4.2.1-sandbox"


# -- the agents under test --------------------------------------------------------------------------------------


class AgentDriver:
    """One agent under test, started: the runner our commands go through, and the host-side view and switches
    a test needs (pid files, fault switches, processes, signals from outside)."""

    kind: str
    home: str
    runner: Runner

    def pid_file(self, name: str) -> str | None:
        """The content of run/NAME.pid, None when there is none."""
        raise NotImplementedError

    def write_pid_file(self, name: str, content: str) -> None:
        raise NotImplementedError

    def set_fault(self, name: str, value: str = "1") -> None:
        """A fault switch by the shell agent's name (``agent_home.FAULTS``)."""
        raise NotImplementedError

    def set_version(self, version: str) -> None:
        """The agent's version from now on (the sandbox's per-host setting: a mixed-version batch)."""
        raise NotImplementedError

    def remove_cli(self) -> None:
        """{home}/bin/ocp_agentctl is gone."""
        raise NotImplementedError

    def processes(self) -> list[tuple[int, str]]:
        """(pid, comm) of every live process of the agent, from the host's process table."""
        raise NotImplementedError

    def kill(self, pid: int, sig: str) -> None:
        """A signal from outside our commands (an operator, the OOM killer)."""
        raise NotImplementedError

    def stranger(self) -> int:
        """A live process of the agent's user that is no agent's (e.g. one that got an old agent pid)."""
        raise NotImplementedError

    def duplicate(self, name: str) -> int:
        """A second ``name`` of this agent home, beside the one its pid file names (started by hand, say)."""
        raise NotImplementedError

    def close(self) -> None:
        """Leave nothing running."""


class FakeAgentDriver(AgentDriver):
    kind = "fake"

    def __init__(self) -> None:
        self.agent = FakeAgent(DEFAULT_AGENT_HOME)
        self.home = self.agent.home
        self.runner = FakeRunner(self.agent, label="fake-agent")

    def pid_file(self, name: str) -> str | None:
        return self.agent.pid_files.get(name)

    def write_pid_file(self, name: str, content: str) -> None:
        self.agent.pid_files[name] = content

    def set_fault(self, name: str, value: str = "1") -> None:
        self.agent.set_fault(name, value)

    def set_version(self, version: str) -> None:
        self.agent.version = version

    def remove_cli(self) -> None:
        self.agent.cli = False

    def processes(self) -> list[tuple[int, str]]:
        return [(p.pid, p.name) for p in self.agent.processes.values() if not p.zombie]

    def kill(self, pid: int, sig: str) -> None:
        self.agent.kill(pid, sig)

    def stranger(self) -> int:
        return self.agent.other_process()

    def duplicate(self, name: str) -> int:
        return self.agent.duplicate(name)


class ShellAgentDriver(AgentDriver):
    """The sandbox's shell agent in ``home``, driven through ``runner`` (a LocalRunner, or an SSHSession to a
    sandbox host); ``uid``/``gid``: the agent's user when it is not ours."""

    kind = "shell"

    def __init__(self, home: AgentHome, runner: Runner, *, uid: int | None = None, gid: int | None = None) -> None:
        self.agent_home, self.runner, self.uid, self.gid = home, runner, uid, gid
        self.home = str(home.path)
        self._strangers: list[subprocess.Popen] = []

    def start(self) -> ShellAgentDriver:
        done = ctl(self, "start")
        assert done.exit_status == 0, done
        return self

    def pid_file(self, name: str) -> str | None:
        try:
            return (self.agent_home.run_dir / f"{name}.pid").read_text()
        except FileNotFoundError:
            return None

    def write_pid_file(self, name: str, content: str) -> None:
        path = self.agent_home.run_dir / f"{name}.pid"
        path.write_text(content)
        if self.uid is not None:
            os.chown(path, self.uid, self.gid)

    def set_fault(self, name: str, value: str = "1") -> None:
        self.agent_home.set_fault(name, value)

    def set_version(self, version: str) -> None:
        self.agent_home.set_version(version)

    def remove_cli(self) -> None:
        self.agent_home.ctl.rename(self.agent_home.ctl.with_name("ocp_agentctl.removed"))

    def processes(self) -> list[tuple[int, str]]:
        return self.agent_home.processes(self.uid)

    def kill(self, pid: int, sig: str) -> None:
        os.kill(pid, getattr(signal, f"SIG{sig}"))

    def stranger(self) -> int:
        as_user = {} if self.uid is None else {"user": self.uid, "group": self.gid, "extra_groups": []}
        proc = subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL, **as_user)
        self._strangers.append(proc)
        return proc.pid

    def duplicate(self, name: str) -> int:
        runuser = shutil.which("runuser", path="/usr/sbin:/usr/bin:/sbin:/bin") or "runuser"
        as_user = [] if self.uid is None else [runuser, "-u", pwd.getpwuid(self.uid).pw_name, "--"]
        return self.agent_home.start_duplicate(name, as_user=as_user)

    def close(self) -> None:
        self.agent_home.terminate(self.uid, grace=0)
        for proc in self._strangers:
            proc.kill()
            proc.wait()
        removed = self.agent_home.ctl.with_name("ocp_agentctl.removed")
        if removed.exists():
            removed.rename(self.agent_home.ctl)


def waits_for_the_agent(test: Callable) -> Callable:
    """Marks a test that waits out the shell agent's own give-up time (conf/wait_seconds, 1 s in these tests): a
    second or more each, so the fast tier runs it on the fake only."""
    test.waits_for_the_agent = True
    return test


# -- helpers ------------------------------------------------------------------------------------------------------


def compact(value: object) -> str:
    """JSON as agentctl prints it: no spaces."""
    return json.dumps(value, separators=(",", ":"))


def failed(kind: str, code: str) -> str:
    """obagent's handled error, as printed on stderr (exit 255)."""
    return compact({"successful": False, "message": None, "error": f"Module=agent, kind={kind}, code={code}; "})


def deadline(seconds: float = SECONDS) -> float:
    return time.monotonic() + seconds


def ctl(agent: AgentDriver, *args: str) -> CommandResult:
    """``ocp_agentctl ARGS`` as the steps send it."""
    return agent.runner.run(sh([f"{agent.home}/bin/ocp_agentctl", *args]), deadline=deadline())


def control(agent: AgentDriver) -> AgentControl:
    return AgentControl(agent.runner, agent.home, lambda line: None)


def status(agent: AgentDriver) -> AgentStatus:
    return control(agent).status(deadline())


def pid_files(agent: AgentDriver) -> dict[str, int]:
    """The pids the three pid files hold (those that hold one)."""
    found = {}
    for name in PROCESSES:
        content = agent.pid_file(name)
        if content is not None and content.strip().isdigit():
            found[name] = int(content)
    return found


def agent_processes(agent: AgentDriver) -> list[tuple[int, str]]:
    """The live processes named as agent processes, sorted by pid."""
    return sorted((pid, comm) for pid, comm in agent.processes() if comm in PROCESSES)


def eventually(check: Callable[[], object], seconds: float = 5.0) -> object:
    """``check()`` once it is truthy (the shell agent's agentd acts a moment after a command returns)."""
    give_up = time.monotonic() + seconds
    while not (value := check()):
        assert time.monotonic() < give_up, "not within 5 s"
        time.sleep(0.01)
    return value


def restart_with(agent: AgentDriver, fault: str) -> dict[str, int]:
    """Switch ``fault`` on and restart the agent, so that its new processes have it; their pids."""
    agent.set_fault(fault)
    assert ctl(agent, "stop").exit_status == 0 and ctl(agent, "start").exit_status == 0
    return status(agent).pids


def _stopped(agent: AgentDriver) -> None:
    ctl(agent, "stop")


def _agentd_killed(agent: AgentDriver) -> None:
    """agentd SIGKILLed: its services run on, orphaned, their pid files still naming them."""
    agentd = pid_files(agent)[AGENTD]
    agent.kill(agentd, "KILL")
    eventually(lambda: AGENTD not in control(agent).live_processes({agentd}, deadline()))


def _stale_pid_file(agent: AgentDriver) -> int:
    """The agent stopped, and run/ocp_agentd.pid naming a live process that is no agent's (a reused pid)."""
    ctl(agent, "stop")
    other = agent.stranger()
    agent.write_pid_file(AGENTD, f"{other}\n")
    return other


def _duplicate_service(agent: AgentDriver) -> None:
    """A second ocp_monagent of this home beside the one its pid file names."""
    agent.duplicate("ocp_monagent")


def _service_stopped(agent: AgentDriver) -> None:
    ctl(agent, "service", "stop", "ocp_monagent")


#: The states a restart meets in the field (issue #20), each set up on a running agent; a stranger's pid, if any.
STATES: dict[str, Callable[[AgentDriver], int | None]] = {
    "running": lambda agent: None,
    "stopped": _stopped,  # type: ignore[dict-item]
    "agentd-killed": _agentd_killed,  # type: ignore[dict-item]
    "stale-pid-file": _stale_pid_file,
    "duplicate-service": _duplicate_service,  # type: ignore[dict-item]
    "service-stopped": _service_stopped,  # type: ignore[dict-item]
}


# -- the contract ---------------------------------------------------------------------------------------------------


class TestStatus:
    def test_a_running_agent_answers_ready_with_its_pid_files_pids(self, agent):
        """status: exit 0, nothing on stderr, JSON without a trailing newline: running, ready, the version, the
        pids the pid files hold."""
        done = ctl(agent, "status")
        pids = pid_files(agent)
        services = {name: {"state": "running", "pid": pids[name]} for name in SERVICES}
        message = {"state": "running", "ready": True, "version": VERSION, "pid": pids[AGENTD], "services": services}
        assert (done.exit_status, done.stdout, done.stderr) == (
            0,
            compact({"successful": True, "message": message, "error": ""}),
            "",
        )
        assert agent_processes(agent) == sorted((pid, name) for name, pid in pids.items())

    def test_a_stopped_agent_answers_agentd_is_not_running(self, agent):
        """status with agentd down: exit 255, nothing on stdout, obagent's error JSON on stderr."""
        ctl(agent, "stop")
        done = ctl(agent, "status")
        assert (done.exit_status, done.stdout, done.stderr) == (255, "", failed("UNAVAILABLE", "agentd_not_running"))

    def test_version_answers_the_agents_version(self, agent):
        """version: exit 0, the version as the message."""
        done = ctl(agent, "version")
        assert (done.exit_status, done.stdout, done.stderr) == (
            0,
            compact({"successful": True, "message": VERSION, "error": ""}),
            "",
        )

    def test_status_if_cli_is_status_or_exit_127(self, agent):
        """The CLI-checking status answers as status; without the CLI it exits 127 silently (AgentError)."""
        assert control(agent).status(deadline(), require_cli=True) == status(agent)
        agent.remove_cli()
        done = agent.runner.run(STATUS_IF_CLI.render(f"{agent.home}/bin/ocp_agentctl"), deadline=deadline())
        assert (done.exit_status, done.stdout, done.stderr) == (127, "", "")
        with pytest.raises(AgentError, match="agent CLI .* is missing or not executable"):
            control(agent).status(deadline(), require_cli=True)

    def test_an_agentd_pid_file_naming_another_process_is_no_agent(self, agent):
        """run/ocp_agentd.pid names a live process that is not agentd (a reused pid): status says not running,
        stop leaves that process alone, and start fails as obagent's does (its agentd writes the pid file
        exclusively): agentd_exited_quickly, the stranger untouched; without the stale file start works."""
        ctl(agent, "stop")
        other = agent.stranger()
        agent.write_pid_file(AGENTD, f"{other}\n")
        assert ctl(agent, "status").exit_status == 255
        assert ctl(agent, "stop").stdout == OK and other in control(agent).start_times({other}, deadline())
        done = ctl(agent, "start")
        assert (done.exit_status, done.stderr) == (255, failed("INTERNAL", "agentd_exited_quickly"))
        assert other in control(agent).start_times({other}, deadline()) and agent_processes(agent) == []
        agent.write_pid_file(AGENTD, "")
        assert ctl(agent, "start").stdout == OK
        assert status(agent).ready and pid_files(agent)[AGENTD] != other

    @pytest.mark.parametrize("content", ["", "junk\n", "0\n", "-1\n"], ids=["empty", "junk", "zero", "negative"])
    def test_an_agentd_pid_file_without_a_pid_is_no_agent(self, agent, content):
        """run/ocp_agentd.pid holds no live pid: status says not running."""
        agent.write_pid_file(AGENTD, content)
        assert ctl(agent, "status").exit_status == 255

    def test_only_the_first_line_of_a_pid_file_counts_blanks_aside(self, agent):
        """A pid file is read as sh's ``read -r`` reads it: its first line, blanks around it dropped."""
        pid = pid_files(agent)[AGENTD]
        agent.write_pid_file(AGENTD, f"  {pid}\t\nsomething else\n")
        assert status(agent).pids[AGENTD] == pid


class TestStopAndStart:
    def test_stop_ends_every_process_and_removes_the_pid_files(self, agent):
        """stop: ok; no process of the agent is left, no pid file; a second stop is ok too."""
        done = ctl(agent, "stop")
        assert (done.exit_status, done.stdout, done.stderr) == (0, OK, "")
        assert agent.processes() == [] and pid_files(agent) == {}
        assert [agent.pid_file(name) for name in PROCESSES] == [None] * 3
        assert ctl(agent, "stop").stdout == OK

    def test_start_returns_once_ready_with_every_pid_new(self, agent):
        """start: ok, and status is ready at once with three new pids, which the pid files hold; a second start is
        a no-op."""
        before = pid_files(agent)
        ctl(agent, "stop")
        done = ctl(agent, "start")
        assert (done.exit_status, done.stdout, done.stderr) == (0, OK, "")
        after = status(agent)
        assert after.ready and after.pids == pid_files(agent)
        assert all(after.pids[name] != before[name] for name in PROCESSES)
        assert ctl(agent, "start").stdout == OK and status(agent) == after

    def test_restart_gives_every_process_a_new_pid(self, agent):
        """restart: ok, ready, three new pids (the sandbox's restart is stop then start)."""
        before = pid_files(agent)
        done = ctl(agent, "restart")
        assert (done.exit_status, done.stdout, done.stderr) == (0, OK, "")
        after = status(agent)
        assert after.ready and all(after.pids[name] != before[name] for name in PROCESSES)

    def test_start_fail_fails_the_start_of_a_stopped_agent(self, agent):
        """Fault start_fail: start of a running agent is still a no-op; of a stopped one, agentd_exited_quickly."""
        agent.set_fault("start_fail")
        assert ctl(agent, "start").stdout == OK
        ctl(agent, "stop")
        done = ctl(agent, "start")
        assert (done.exit_status, done.stdout, done.stderr) == (255, "", failed("INTERNAL", "agentd_exited_quickly"))
        assert agent.processes() == []

    def test_an_agentd_that_cannot_start_says_why_in_its_log(self, agent):
        """Fault agentd_fails (#20): start fails with agentd_exited_quickly, and agentd's own log, as the failed
        subtask reads it (``agent_logs.read_tails``), ends with its reason, the password in it masked."""
        ctl(agent, "stop")
        agent.set_fault("agentd_fails", "load config conf/ocp_agent.yaml failed: password=hunter2 is refused")
        done = ctl(agent, "start")
        assert (done.exit_status, done.stdout, done.stderr) == (255, "", failed("INTERNAL", "agentd_exited_quickly"))
        text = agent_logs.read_tails(agent.runner, agent.home, deadline())
        assert f"==> {agent.home}/log/agentd.log (changed " in text
        assert "ocp_agentd: load config conf/ocp_agent.yaml failed: password=*** is refused" in text
        assert "hunter2" not in text

    def test_a_hung_stop_is_killed_at_the_deadline_and_leaves_the_agent_as_it_was(self, agent):
        """Fault stop_hang: the stop prints ``stopping ocp_agentd (pid N)`` and blocks; at the deadline it is
        killed (CommandTimeout with that output); the agent is untouched and nothing of the stop is left."""
        agent.set_fault("stop_hang")
        before, pids = sorted(agent.processes()), pid_files(agent)
        with pytest.raises(CommandTimeout) as raised:
            control(agent).stop_all(deadline(1.0))
        assert f"stopping ocp_agentd (pid {pids[AGENTD]})" in raised.value.output
        assert f"{MARK}\n" in raised.value.output
        assert sorted(agent.processes()) == before

    def test_a_flooding_stop_prints_its_flood_then_stops(self, agent):
        """Fault flood (N bytes): stop first prints N x's and a newline, then stops as usual."""
        agent.set_fault("flood", "5000")
        done = ctl(agent, "stop")
        assert (done.exit_status, done.stdout) == (0, "x" * 5000 + "\n" + OK)
        assert agent.processes() == []

    @waits_for_the_agent
    def test_services_that_ignore_sigterm_fail_the_stop_and_need_sigkill(self, agent):
        """Fault service_ignore_term: stop gives up (wait_for_exit_timeout) with all three running and the pid
        files kept; SIGTERM changes nothing, SIGKILL ends them; then status says not running."""
        pids = restart_with(agent, "service_ignore_term")
        done = ctl(agent, "stop")
        assert (done.exit_status, done.stdout, done.stderr) == (
            255,
            "",
            failed("DEADLINE_EXCEEDED", "wait_for_exit_timeout"),
        )
        agent_control = control(agent)
        assert agent_control.live_processes(set(pids.values()), deadline()) == {p: n for n, p in pids.items()}
        assert pid_files(agent) == pids and status(agent).ready
        agent_control.signal(set(pids.values()), "TERM", deadline())
        time.sleep(0.2)
        assert len(agent_control.live_processes(set(pids.values()), deadline())) == 3
        agent_control.signal(set(pids.values()), "KILL", deadline())
        eventually(lambda: not agent_control.live_processes(set(pids.values()), deadline()))
        assert not status(agent).running

    def test_a_killed_agentd_leaves_its_services_to_the_next_agentd(self, agent):
        """agentd SIGKILLed: its services live on; status says not running; stop is ok and leaves them (their
        identities still read from the pid files); start's new agentd ends them (dangling) and starts three new
        processes: exactly one of each."""
        old = pid_files(agent)
        agent.kill(old[AGENTD], "KILL")
        agent_control = control(agent)
        eventually(lambda: AGENTD not in agent_control.live_processes({old[AGENTD]}, deadline()))
        assert not status(agent).running
        identities, stopped = agent_control.stop_all(deadline())
        assert stopped.stdout == OK
        assert {name: pid for name, (pid, _) in identities.items()} == old
        assert all(identities[name][1] for name in SERVICES)  # agentd's: `-`, or its zombie's while unreaped
        assert agent_control.live_processes(set(old.values()), deadline()) == {old[n]: n for n in SERVICES}
        assert ctl(agent, "start").stdout == OK
        new = status(agent)
        assert new.ready and all(new.pids[name] != old[name] for name in PROCESSES)
        assert eventually(lambda: agent_processes(agent) == sorted((p, n) for n, p in new.pids.items()))

    def test_sigterm_to_agentd_stops_the_whole_agent(self, agent):
        """SIGTERM to a running agentd is a clean stop: it ends its services, removes the pid files and exits."""
        pids = pid_files(agent)
        control(agent).signal({pids[AGENTD]}, "TERM", deadline())
        eventually(lambda: agent.processes() == [])
        assert pid_files(agent) == {} and not status(agent).running


class TestServices:
    def test_service_stop_then_start_gives_that_service_alone_a_new_pid(self, agent):
        """service stop NAME: ok, status shows it stopped (pid 0, not ready) and agentd does not respawn it;
        service start NAME: ok, it runs again with a new pid; the others keep theirs."""
        before = pid_files(agent)
        done = ctl(agent, "service", "stop", POS_PROXY)
        assert (done.exit_status, done.stdout, done.stderr) == (0, OK, "")
        message = json.loads(ctl(agent, "status").stdout)["message"]
        assert message["ready"] is False and message["services"][POS_PROXY] == {"state": "stopped", "pid": 0}
        time.sleep(0.1)
        assert POS_PROXY not in status(agent).pids
        assert ctl(agent, "service", "start", POS_PROXY).stdout == OK
        after = status(agent)
        assert after.ready and after.pids[POS_PROXY] != before[POS_PROXY]
        others = [name for name in PROCESSES if name != POS_PROXY]
        assert [after.pids[name] for name in others] == [before[name] for name in others]

    def test_service_commands_already_done_are_no_ops(self, agent):
        """service start of a running service keeps its pid; service stop of a stopped one is ok."""
        before = status(agent)
        assert ctl(agent, "service", "start", POS_PROXY).stdout == OK and status(agent) == before
        ctl(agent, "service", "stop", POS_PROXY)
        assert ctl(agent, "service", "stop", POS_PROXY).stdout == OK

    def test_a_killed_service_is_respawned_with_a_new_pid(self, agent):
        """A service that dies while agentd runs is started again by agentd, with a new pid."""
        before = pid_files(agent)
        agent.kill(before["ocp_monagent"], "KILL")
        after = eventually(
            lambda: (s := status(agent)).pids.get("ocp_monagent") not in (None, before["ocp_monagent"]) and s
        )
        assert after.pids[AGENTD] == before[AGENTD] and after.pids[POS_PROXY] == before[POS_PROXY]

    @pytest.mark.parametrize(
        "args",
        [("bogus",), ("status", "now"), ("service", "restart", POS_PROXY), ("service", "stop")],
        ids=["unknown", "extra", "restart", "no-name"],
    )
    def test_bad_arguments_are_a_usage_error(self, agent, args):
        """Anything but status|start|stop|restart|version|service start|stop NAME: exit 1, the usage on stderr."""
        done = ctl(agent, *args)
        assert (done.exit_status, done.stdout, done.stderr) == (1, "", USAGE)

    def test_an_unknown_service_is_refused(self, agent):
        """service stop ocp_agentd: exit 255, service_not_found (agentd is no service)."""
        done = ctl(agent, "service", "stop", AGENTD)
        assert (done.exit_status, done.stdout, done.stderr) == (255, "", failed("NOT_FOUND", "service_not_found"))

    def test_service_commands_need_agentd(self, agent):
        """service start NAME with agentd down: exit 255, agentd_not_running."""
        ctl(agent, "stop")
        done = ctl(agent, "service", "start", POS_PROXY)
        assert (done.exit_status, done.stdout, done.stderr) == (255, "", failed("UNAVAILABLE", "agentd_not_running"))

    def test_start_does_not_bring_back_a_stopped_service(self, agent):
        """start with agentd running is a no-op even when a service was stopped: it stays stopped."""
        ctl(agent, "service", "stop", POS_PROXY)
        assert ctl(agent, "start").stdout == OK
        assert not status(agent).ready and POS_PROXY not in status(agent).pids

    @waits_for_the_agent
    def test_a_service_that_ignores_sigterm_fails_service_stop(self, agent):
        """Fault service_ignore_term: service stop gives up (wait_for_service_exit_timeout); it still runs."""
        pids = restart_with(agent, "service_ignore_term")
        done = ctl(agent, "service", "stop", POS_PROXY)
        assert (done.exit_status, done.stdout, done.stderr) == (
            255,
            "",
            failed("DEADLINE_EXCEEDED", "wait_for_service_exit_timeout"),
        )
        assert status(agent).pids[POS_PROXY] == pids[POS_PROXY]


class TestScripts:
    def test_stop_all_reads_each_processes_identity_then_stops(self, agent):
        """STOP_ALL: name, pid and start time of each pid file's process (the start times START_TIMES reads),
        then the stop's own answer."""
        pids = pid_files(agent)
        agent_control = control(agent)
        starts = agent_control.start_times(set(pids.values()), deadline())
        identities, stopped = agent_control.stop_all(deadline())
        assert identities == {name: (pid, starts[pid]) for name, pid in pids.items()}
        assert (stopped.exit_status, stopped.stdout) == (0, OK)

    def test_stop_all_skips_junk_and_marks_gone_processes(self, agent):
        """STOP_ALL with a junk pid file, a dead pid and a live stranger: the junk is skipped, the dead pid has no
        start time (``-``), the stranger's pid file is removed (``stale``) and the stranger left alone."""
        ctl(agent, "stop")
        other = agent.stranger()
        agent.write_pid_file(AGENTD, "junk\n")
        agent.write_pid_file("ocp_mgragent", f"{DEAD}\n")
        agent.write_pid_file("ocp_monagent", f"{other}\n")
        done = agent.runner.run(
            STOP_ALL.render(f"{agent.home}/bin/ocp_agentctl", agent.home, *PROCESSES), deadline=deadline()
        )
        head, clock, tail = done.stdout.partition("clock ")
        assert head + tail.partition("\n")[2] == f"ocp_mgragent {DEAD} -\nstale ocp_monagent {other}\n{MARK}\n{OK}"
        assert clock and tail.partition("\n")[0].isdigit()
        assert agent.pid_file("ocp_monagent") is None and other in control(agent).start_times({other}, deadline())

    def test_start_times_are_read_for_live_processes_only(self, agent):
        """START_TIMES: clock ticks since boot for each live pid, nothing for a dead one; a new process started
        no earlier than the one it replaced."""
        pids = pid_files(agent)
        agent_control = control(agent)
        before = agent_control.start_times({*pids.values(), DEAD}, deadline())
        assert set(before) == set(pids.values()) and all(tick > 0 for tick in before.values())
        ctl(agent, "stop")
        ctl(agent, "start")
        new = pid_files(agent)
        after = agent_control.start_times(set(new.values()), deadline())
        assert all(after[new[name]] >= before[pids[name]] for name in PROCESSES)

    def test_live_names_agent_processes_and_nothing_else(self, agent):
        """LIVE: a line ``pid state comm`` per existing process (a stranger's too), none for a dead pid;
        live_processes keeps the agent's."""
        pids = pid_files(agent)
        other = agent.stranger()
        done = agent.runner.run(LIVE.render(*map(str, sorted([*pids.values(), other, DEAD]))), deadline=deadline())
        lines = {int(line.split()[0]): line.split(None, 2) for line in done.stdout.splitlines()}
        assert set(lines) == {*pids.values(), other} and done.exit_status == 0
        assert {lines[pid][2] for pid in pids.values()} == set(PROCESSES)
        live = control(agent).live_processes({*pids.values(), other, DEAD}, deadline())
        assert live == {pid: name for name, pid in pids.items()}

    def test_check_stopped_after_a_stop_finds_nothing(self, agent):
        """LIVE_THEN_STATUS after a stop: none of the old pids lives, and status says not running (exit 1)."""
        pids = set(pid_files(agent).values())
        ctl(agent, "stop")
        assert control(agent).check_stopped(pids, deadline()) == ({}, AgentStatus(running=False))

    def test_prepare_probe_reads_the_hosts_disk_memory_and_owner(self, agent):
        """PREPARE_PROBE: free disk and memory (real, > 0), run/ writable, the home's owner an account, then
        status; the sandbox's fault files free_disk_mb/free_memory_mb stand in for the measurements."""
        probe, now = control(agent).prepare_probe(Limits(), deadline())
        assert now.ready and probe.writable and probe.owner not in ("", "UNKNOWN") and probe.simulated == ()
        assert probe.disk_kb and probe.disk_kb > 0 and probe.memory_kb and probe.memory_kb > 0
        agent.set_fault("free_disk_mb", "10")
        agent.set_fault("free_memory_mb", "3")
        probe, _ = control(agent).prepare_probe(Limits(), deadline())
        assert (probe.disk_kb, probe.memory_kb, probe.simulated) == (10240, 3072, ("disk", "memory"))

    def test_prepare_probe_reads_the_agents_version_in_the_same_round_trip(self, agent):
        """#20: PREPARE_PROBE carries `ocp_agentctl version`; a host's own version (the sandbox's setting) is
        what version and status answer, agentd running or not."""
        probe, _ = control(agent).prepare_probe(Limits(), deadline())
        assert probe.version == VERSION
        agent.set_version("4.1.0-20221230")
        probe, now = control(agent).prepare_probe(Limits(), deadline())
        assert probe.version == "4.1.0-20221230" and now.ready
        assert json.loads(ctl(agent, "status").stdout)["message"]["version"] == "4.1.0-20221230"
        ctl(agent, "stop")
        assert control(agent).prepare_probe(Limits(), deadline())[0].version == "4.1.0-20221230"

    def test_health_is_status_and_mgragents_own_answer_on_its_socket(self, agent):
        """HEALTH: status, and ocp_mgragent's GET /api/v1/status on run/ocp_mgragent.<pid>.sock: state running, its
        own pid, a startAt in ns; a restarted mgragent's startAt is after the host clock Stop all read."""
        served = control(agent).wait_until_serving(deadline())
        data = served.serving or {}
        assert served.problem() == "" and data["state"] == "running" and data["version"] == VERSION
        assert data["pid"] == pid_files(agent)[POS_PROXY] and data["ports"] == [62888]
        assert isinstance(data["startAt"], int) and data["startAt"] > 1_600_000_000 * 10**9
        agent_control = control(agent)
        agent_control.stop_all(deadline())
        assert agent_control.clock and agent_control.clock * 10**9 >= data["startAt"] - 10**9
        now = agent_control.start_then_health(deadline())
        again = agent_control.wait_until_serving(deadline(), since=agent_control.clock, first=now)
        assert again.serving and again.serving["pid"] != data["pid"]

    def test_a_silent_mgragent_is_ready_but_not_healthy(self, agent):
        """Fault mgragent_mute: after a restart status says ready, yet mgragent never answers: no health."""
        restart_with(agent, "mgragent_mute")
        health = control(agent).health(deadline())
        assert health.status.ready and health.serving is None
        assert "does not answer on its unix socket" in health.problem()

    def test_signal_is_quiet_about_gone_processes(self, agent):
        """SIGNAL to a pid that is gone: exit 0, no output."""
        done = agent.runner.run(SIGNAL.render("TERM", str(DEAD)), deadline=deadline())
        assert (done.exit_status, done.stdout, done.stderr) == (0, "", "")

    def test_a_missing_cli_is_exit_127_not_found(self, agent):
        """The CLI is gone: every command that runs it exits 127 with the shell's ``not found``."""
        ctl_path = f"{agent.home}/bin/ocp_agentctl"
        agent.remove_cli()
        done = ctl(agent, "status")
        assert (done.exit_status, done.stdout, done.stderr) == (127, "", f"/bin/sh: 1: {ctl_path}: not found\n")
        done = agent.runner.run(LIVE_THEN_STATUS.render(ctl_path), deadline=deadline())
        assert (done.exit_status, done.stdout, done.stderr) == (
            127,
            f"{MARK}\n",
            f"/bin/sh: 1: exec: {ctl_path}: not found\n",
        )
        with pytest.raises(AgentError, match="ocp_agentctl start exited 127: .*not found"):
            control(agent).ctl_then_status(("start",), deadline=deadline(), doing="starting")


class TestTheSteps:
    def step(self, agent: AgentDriver, pids: dict | None = None, timeout: int = 30) -> FakeStep:
        host = Host(id=1, name="contract", address="127.0.0.1", agent_home=agent.home)
        return FakeStep(host, agent.runner, timeout=timeout, pids={} if pids is None else pids)

    def test_a_whole_restart_gives_every_process_a_new_pid(self, agent):
        """prepare, restart pos proxy, stop all, start all, finish: every step succeeds, every pid is new."""
        before = pid_files(agent)
        pids: dict = {}
        for run in (work.prepare, work.restart_pos_proxy, work.stop_all, work.start_all, work.finish):
            run(self.step(agent, pids))
        assert pids["before"] == before and pids["after"] == pid_files(agent)
        assert all(pids["after"][name] != before[name] for name in PROCESSES)

    @pytest.mark.parametrize("state", sorted(STATES))
    def test_a_restart_from_each_state_leaves_exactly_one_new_agent(self, agent, state):
        """From each state a host meets in the field, the five steps leave one ocp_agentd, one ocp_mgragent and one
        ocp_monagent, every one new; a stranger named by a stale pid file is never signalled."""
        stranger = STATES[state](agent)
        old = {pid for pid, _ in agent_processes(agent)}
        pids: dict = {}
        for run in (work.prepare, work.restart_pos_proxy, work.stop_all, work.start_all, work.finish):
            run(self.step(agent, pids))
        now = agent_processes(agent)
        assert sorted(name for _, name in now) == sorted(PROCESSES), now
        assert not old & {pid for pid, _ in now}
        if stranger is not None:
            assert stranger in control(agent).start_times({stranger}, deadline()), "the stranger was signalled"

    @waits_for_the_agent
    def test_stop_all_ends_services_that_ignore_sigterm_with_sigkill(self, agent):
        """Stop all on services that ignore SIGTERM: the stop fails, TERM does nothing, KILL ends them all."""
        restart_with(agent, "service_ignore_term")
        pids: dict = {}
        work.prepare(self.step(agent, pids))
        step = self.step(agent, pids, timeout=4)  # 1 s kept back for the signals: 0.5 s for TERM, 0.5 s for KILL
        work.stop_all(step)
        assert "sending SIGKILL" in step.log.text and agent_processes(agent) == []
