"""The agent's version (#20 point 6): read in Prepare's one round trip, recorded per host, compared per batch."""

from __future__ import annotations

import pytest

from deployments.sandbox.fake_agent import FakeAgent
from flows.outcome import VERSION_ALERT, version_mismatch
from flows.store import TaskStore
from steps import work
from steps.agent import parse_version
from steps.testing import FakeRunner, FakeStep


@pytest.mark.parametrize(
    ("line", "version"),
    [
        ('version {"successful":true,"message":"4.2.1-20230928","error":""}', "4.2.1-20230928"),
        ("version ", None),  # the CLI printed nothing (an old agent without `version`)
        ('version {"successful":false,"message":null,"error":"x"}', None),
        ('version {"successful":true,"message":{"v":1},"error":""}', None),
        ('version {"successful":true,"message":"4.2\\u0007","error":""}', None),  # not printable
        ("version not json", None),
        ("disk 100", None),
    ],
)
def test_the_version_line_is_read_or_refused(line, version):
    """Only a printable string message of 1-64 ASCII characters is a version."""
    assert parse_version(line) == version


def test_prepare_reads_logs_and_records_the_version_in_its_one_round_trip():
    """Prepare: still one command; the version in its log and kept for the batch."""
    agent = FakeAgent()
    agent.version = "4.1.0-20221230"
    runner = FakeRunner(agent)
    step = FakeStep.on(agent)
    step.connection = runner
    work.prepare(step)
    assert len(runner.commands) == 1
    assert "agent version 4.1.0-20221230 (ocp_agentctl version)" in step.log.text
    assert step.version == "4.1.0-20221230"


def test_an_agent_without_a_version_is_a_warning_not_a_failure():
    """A CLI that answers `version` with nothing: Prepare warns and goes on, nothing recorded."""
    agent = FakeAgent()
    agent.version = ""
    step = FakeStep.on(agent)
    work.prepare(step)
    assert ("WARN", "the agent's version is unknown: `ocp_agentctl version` gave no version") in step.log.lines
    assert step.version is None


def test_a_mixed_batch_is_named_with_ocps_alert_and_each_versions_hosts():
    """host_agent_version_not_same, the most common version first; one version (or none) says nothing."""
    assert version_mismatch({}) == "" and version_mismatch({1: "4.2.1", 2: "4.2.1"}) == ""
    assert version_mismatch({3: "4.1.0", 1: "4.2.1", 2: "4.2.1"}) == (
        f"{VERSION_ALERT}: the hosts run different agent versions: 4.2.1 on host(s) 1, 2; 4.1.0 on host(s) 3"
    )


def test_the_store_keeps_a_version_per_task_and_host_beside_the_pids(tmp_path):
    """save_version/versions per task; the pid snapshots (last_pids) are not disturbed by it."""
    with TaskStore(f"sqlite:///{tmp_path / 'tasks.db'}") as store:
        store.save_snapshot(7, 1001, {"ocp_agentd": 10}, phase="before")
        store.save_version(7, 1001, "4.2.1")
        store.save_version(7, 1002, "4.1.0")
        store.save_version(7, 1002, "4.1.1")  # Prepare retried: the newest read counts
        store.save_version(8, 1001, "9.9.9")
        assert store.versions(7) == {1001: "4.2.1", 1002: "4.1.1"}
        sighting = store.last_pids(1001)
        assert sighting is not None and (sighting.task_id, sighting.pids) == (7, {"ocp_agentd": 10})
