"""Health on a host without curl (#20): HEALTH asks mgragent's unix socket with python3 instead; with neither, it
says so. The sandbox's shell agent, real /bin/sh, a PATH without curl."""

from __future__ import annotations

import os
import shutil
import time

import shell_agent

from deployments.sandbox.agent_home import CLEAN_ENV
from deployments.sandbox.local import LocalRunner
from steps.agent import AgentControl

serving_home = shell_agent.serving_home  # a started shell agent (the fixture)


def path_with(tmp_path, *tools: str) -> dict[str, str]:
    """An environment whose PATH holds only ``tools`` (links to this machine's)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in tools:
        found = shutil.which(tool, path=CLEAN_ENV["PATH"])
        assert found, f"{tool} is not on this machine"
        os.symlink(found, bin_dir / tool)
    return {**CLEAN_ENV, "PATH": str(bin_dir)}


def test_without_curl_python3_asks_mgragent(serving_home, tmp_path):
    """No curl on PATH: the answer is mgragent's own, read by python3; the agent is healthy."""
    runner = LocalRunner(env=path_with(tmp_path, "python3", "tail"))
    health = AgentControl(runner, str(serving_home.path), lambda line: None).health(time.monotonic() + 10)
    assert health.problem() == "", health.answer
    assert health.serving and health.serving["pid"] == health.status.pids["ocp_mgragent"]


def test_without_curl_a_missing_socket_is_pythons_error(serving_home, tmp_path):
    """No curl, and the socket gone: not healthy, the error's last line as the answer."""
    runner = LocalRunner(env=path_with(tmp_path, "python3", "tail"))
    for sock in serving_home.run_dir.glob("ocp_mgragent.*.sock"):
        sock.unlink()
    health = AgentControl(runner, str(serving_home.path), lambda line: None).health(time.monotonic() + 10)
    assert health.serving is None and health.answer.strip().startswith("FileNotFoundError"), health.answer
    assert "does not answer on its unix socket: FileNotFoundError" in health.problem()


def test_without_curl_or_python3_it_says_so(serving_home, tmp_path):
    """Neither tool: not healthy, and the problem says why."""
    runner = LocalRunner(env=path_with(tmp_path, "tail"))
    health = AgentControl(runner, str(serving_home.path), lambda line: None).health(time.monotonic() + 10)
    assert "neither curl nor python3 on the host" in health.problem()
