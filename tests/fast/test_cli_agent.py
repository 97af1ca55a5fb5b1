"""The CLI's extras: --version, ``tasks``, ``agent``, ``process`` — parsing, and ``tasks`` on a real store."""

from __future__ import annotations

import json

import pytest

from deployments.cli import build_parser
from deployments.cli_agent import cmd_tasks
from flows.plan import build_plan
from flows.settings import Settings
from flows.store import TaskStore


@pytest.fixture
def parser(tmp_path):
    return build_parser(Settings(home=tmp_path))


def test_version_names_the_package(parser, capsys):
    with pytest.raises(SystemExit) as done:
        parser.parse_args(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("ocp-restart ")


def test_tasks_takes_the_apis_filters(parser):
    args = parser.parse_args(["tasks", "--status", "failed,RUNNING", "--name", "batch", "--host-id", "1001"])
    assert (args.status, args.name, args.host_id, args.page, args.size, args.json) == (
        ["FAILED", "RUNNING"],
        "batch",
        1001,
        1,
        20,
        False,
    )


@pytest.mark.parametrize("argv", [["tasks", "--status", "DONE"], ["tasks", "--host-id", "0"], ["agent", "x"]])
def test_bad_values_are_usage_errors(parser, argv):
    with pytest.raises(SystemExit) as refused:
        parser.parse_args(argv)
    assert refused.value.code == 2


def test_agent_and_process_commands(parser):
    assert parser.parse_args(["agent", "1001", "--json"]).host_id == 1001
    args = parser.parse_args(["process", "restart", "1001", "ocp_monagent"])
    assert (args.action, args.host_id, args.process) == ("restart", 1001, "ocp_monagent")
    assert parser.parse_args(["process", "list", "1001"]).process is None
    with pytest.raises(SystemExit):
        parser.parse_args(["process", "kill", "1001", "ocp_monagent"])


def test_tasks_lists_the_stores_tasks_newest_first(tmp_path, parser, capsys):
    """--json prints OCP's page of BasicTaskInstance; filters apply."""
    config = Settings(home=tmp_path)

    def main(argv: list[str]) -> int:
        return cmd_tasks(parser.parse_args(argv), config)

    with TaskStore(f"sqlite:///{tmp_path / 'tasks.db'}") as store:
        first = store.create_task(build_plan([1]), creator="alice", executor="x")
        second = store.create_task(build_plan([2]), creator="bob", executor="x")
    assert main(["tasks", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [t["id"] for t in listed["contents"]] == [second, first] and listed["page"]["totalElements"] == 2
    assert main(["tasks", "--json", "--host-id", "1", "--size", "1"]) == 0
    assert [t["id"] for t in json.loads(capsys.readouterr().out)["contents"]] == [first]
    assert main(["tasks"]) == 0
    assert "alice" in capsys.readouterr().out
