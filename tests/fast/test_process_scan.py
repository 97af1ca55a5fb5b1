"""Stop all's scan for the agent's own processes and Prepare's port check stay bounded by the agent (#20): the scan
reads only the processes whose command line names the agent home (one grep), the port check asks `ss -p` only when
something listens on the port. Same answers as the full reads, with grep on the host or without. The sandbox's
shell agent, real /bin/sh."""

from __future__ import annotations

import os
import shutil
import socket
import time

import shell_agent

from deployments.sandbox.agent_home import CLEAN_ENV, AgentHome
from deployments.sandbox.local import LocalRunner
from steps.agent import PROCESSES, AgentControl, Limits

serving_home = shell_agent.serving_home  # a started shell agent (the fixture)


def without(tool: str, tmp_path) -> dict[str, str]:
    """An environment whose PATH is this machine's minus ``tool`` (links to every other program)."""
    bin_dir = tmp_path / f"without-{tool}"
    bin_dir.mkdir()
    for directory in CLEAN_ENV["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            if name != tool and not (bin_dir / name).exists() and shutil.which(name, path=directory):
                os.symlink(os.path.join(directory, name), bin_dir / name)
    return {**CLEAN_ENV, "PATH": str(bin_dir)}


def scan(home: AgentHome, env: dict[str, str] | None = None) -> dict[int, str]:
    agent = AgentControl(LocalRunner(env=env), str(home.path), lambda line: None)
    found, _status = agent.scan_then_status(time.monotonic() + 20)
    return found


def test_the_scan_finds_the_agents_processes_and_a_duplicate(serving_home):
    """Every agent process of the home, the one no pid file names among them; nothing else of the machine."""
    duplicate = serving_home.start_duplicate("ocp_monagent")
    found = scan(serving_home)
    assert found == {pid: name for pid, name in serving_home.processes() if name in PROCESSES}
    assert found[duplicate] == "ocp_monagent" and set(found.values()) == set(PROCESSES)


def test_the_scan_without_grep_gives_the_same_answer(serving_home, tmp_path):
    """A host without grep: every process is read (the slow way), and the answer does not change."""
    serving_home.start_duplicate("ocp_monagent")
    env = without("grep", tmp_path)
    assert shutil.which("grep", path=env["PATH"]) is None
    assert scan(serving_home, env) == scan(serving_home)


def test_the_scan_ignores_another_homes_agent(serving_home, tmp_path):
    """A second agent home on the machine (the sandbox's hosts share one): its processes are not this home's,
    though its path begins with this home's."""
    other = AgentHome(tmp_path / "ocp_agent2").install()  # "…/ocp_agent" is a prefix of "…/ocp_agent2"
    try:
        other.set_delays(wait_seconds=2)
        assert LocalRunner().run(f"{other.ctl} start", deadline=time.monotonic() + 20).ok
        ours = scan(serving_home)
        assert ours and not set(ours) & {pid for pid, _ in other.processes()}
    finally:
        other.terminate()


def test_the_port_check_names_a_foreign_listener(serving_home):
    """Something listens on the agent's port: Prepare's probe names it with its pid (ss -p, asked only now)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        agent = AgentControl(LocalRunner(), str(serving_home.path), lambda line: None)
        probe, status = agent.prepare_probe(Limits(port=port), time.monotonic() + 20)
        problems = probe.problems(Limits(port=port), "10.0.0.11", set(status.pids.values()))
        assert any(f"pid {os.getpid()}" in problem for problem in problems), probe.listeners
    finally:
        listener.close()


def test_an_idle_port_lists_no_listener(serving_home):
    """Nothing on the port: no `listen` line, no problem."""
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]  # free once closed
    agent = AgentControl(LocalRunner(), str(serving_home.path), lambda line: None)
    probe, _ = agent.prepare_probe(Limits(port=port), time.monotonic() + 20)
    assert probe.listeners == ()
