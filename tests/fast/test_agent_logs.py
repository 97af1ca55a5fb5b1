"""The agent's own log lines in a failed subtask's log (#20 point 5): masked, capped, read in one command."""

from __future__ import annotations

import time

import pytest

from deployments.sandbox.fake_agent import FakeAgent
from steps import agent_logs, work
from steps.agent_logs import TAIL, LogTail, cap, mask_secrets, parse_tails, read_or_why
from steps.errors import AgentError
from steps.testing import FakeRunner, FakeStep, Hang


@pytest.mark.parametrize(
    ("line", "masked"),
    [
        ("Authorization: Basic b2NwOnNlY3JldA==", "Authorization: ***"),
        ('{"Authorization":"OCP-HMACSHA256 ak:sig"}', '{"Authorization":***'),
        ("GET / with bearer eyJhbGciOiJIUzI1NiJ9.e30.x", "GET / with bearer ***"),
        ("password=hunter2 user=admin", "password=*** user=admin"),
        ("db_password: 'hunter 2', next", "db_password: ***, next"),
        ('{"accessKeySecret":"abc","user":"u"}', '{"accessKeySecret":***,"user":"u"}'),
        ("http.auth.token=t0k3n;level=info", "http.auth.token=***;level=info"),
        ("api_key = AKIA123 end", "api_key = *** end"),
        ("dial mysql://root:s3cr3t@10.0.0.1:2881/oceanbase", "dial mysql://root:***@10.0.0.1:2881/oceanbase"),
        ("exec obclient --password=s3cr3t -h x", "exec obclient --password=*** -h x"),
        ("ocp_agentd: started, pid 42", "ocp_agentd: started, pid 42"),
    ],
)
def test_secrets_are_masked(line, masked):
    """Authorization headers, bearer/basic credentials, URL passwords, secret-looking keys' values, flags."""
    assert mask_secrets(line) == masked


def test_the_cap_keeps_each_files_newest_lines_within_a_fair_share():
    """4 KiB over all files: a small file keeps all its lines, the big ones share the rest, newest lines kept."""
    small = LogTail("agentd.log", 1, ("ocp_agentd: cannot bind",))
    big = LogTail("mgragent.log", 2, tuple(f"line {i} " + "x" * 300 for i in range(20)))
    bigger = LogTail("monagent.log", 3, tuple(f"line {i} " + "y" * 300 for i in range(20)))
    capped = cap([small, big, bigger])
    assert sum(len(line.encode()) + 1 for t in capped for line in t.lines) <= agent_logs.TAIL_BYTES
    assert capped[0] == small
    assert capped[1].lines[-1] == big.lines[-1] and capped[2].lines[-1] == bigger.lines[-1]
    assert abs(len(capped[1].lines) - len(capped[2].lines)) <= 1 and len(capped[1].lines) >= 5


def test_one_line_longer_than_the_budget_keeps_its_start():
    """A single huge line is cut at its end (its secrets were masked on the whole line first)."""
    (only,) = cap([LogTail("agentd.log", 1, ("token=abc " + "z" * 9000,))], budget=100)
    assert len(only.lines) == 1 and only.lines[0].startswith("token=abc") and len(only.lines[0].encode()) <= 100


def test_parse_masks_drops_blank_lines_and_orders_by_change():
    """TAIL's output: files oldest change first, blank lines gone, a header for another file read as a line."""
    out = (
        "\n@@ocp-restart@@ mgragent.log 200\nm1\n\n@@ocp-restart@@ evil.log 5\n"
        "\n@@ocp-restart@@ agentd.log 100\npassword=x\n\n@@ocp-restart@@ clock 230\n"
    )
    tails, clock = parse_tails(out, ("agentd.log", "mgragent.log"))
    assert clock == 230
    assert tails == [
        LogTail("agentd.log", 100, ("password=***",)),
        LogTail("mgragent.log", 200, ("m1", "@@ocp-restart@@ evil.log 5")),
    ]


def test_a_failed_start_reads_the_agents_log_in_one_bounded_command():
    """agentd cannot start (fault agentd_fails): Start all fails; one TAIL command, bounded by a few seconds
    even after the node's deadline passed, gives agentd's reason."""
    agent = FakeAgent()
    runner = FakeRunner(agent)
    step = FakeStep.on(agent)
    step.connection = runner
    work.prepare(step)
    work.stop_all(step)
    agent.set_fault("agentd_fails", "open conf/config.yaml: no such file or directory")
    with pytest.raises(AgentError, match="agentd_exited_quickly"):
        work.start_all(step)
    sent = len(runner.commands)
    text = read_or_why(runner, agent.home, deadline=time.monotonic() - 1)
    assert len(runner.commands) == sent + 1 and TAIL.parse(runner.commands[-1]) is not None
    assert text.splitlines()[1:] == [
        f"==> {agent.home}/log/agentd.log (changed 0 s ago) <==",
        "ocp_agentd: open conf/config.yaml: no such file or directory",
    ]


def test_no_recent_log_and_a_failing_read_are_said_not_raised():
    """Nothing changed recently: a line saying so; the read itself timing out: a line saying why."""
    agent = FakeAgent()
    assert "none under /home/admin/ocp_agent/log changed" in read_or_why(FakeRunner(agent), agent.home, 0.0)
    hung = FakeRunner(lambda command: Hang())
    assert read_or_why(hung, agent.home, 0.0).startswith("the agent's own logs could not be read:")
