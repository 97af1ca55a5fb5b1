"""The sandbox agent where 1,000 hosts share one machine: its waits go by what a process is, not by its pid alone
(32,768 pids wrap within seconds there). The sandbox's shell agent, real /bin/sh."""

from __future__ import annotations

import subprocess
import time

import shell_agent

from deployments.sandbox.local import LocalRunner
from steps.agent import AgentControl

serving_home = shell_agent.serving_home  # a started shell agent (the fixture)


def stranger():
    """A live process that is not the agent and ignores SIGTERM (its handler set before it is returned)."""
    proc = subprocess.Popen(["perl", "-e", '$SIG{TERM} = "IGNORE"; sleep 60'], stdin=subprocess.DEVNULL)
    time.sleep(0.2)
    return proc


def ctl(home, command: str):
    return LocalRunner().run(f"{home.ctl} {command}", deadline=time.monotonic() + 20)


def test_service_stop_is_not_held_by_a_stranger_that_got_the_services_pid(serving_home):
    """A service's pid now held by another long-lived program does not keep `service stop` waiting until
    wait_for_service_exit_timeout: the 1,000-host floor failed so (bench 2026-12-05, twice)."""
    other = stranger()
    try:
        (serving_home.run_dir / "ocp_monagent.pid").write_text(f"{other.pid}\n")
        started = time.monotonic()
        done = ctl(serving_home, "service stop ocp_monagent")
        assert done.exit_status == 0 and time.monotonic() - started < 1.5, done
        assert other.poll() is None  # never signalled
    finally:
        other.kill()
        other.wait()


def test_service_start_starts_the_service_when_its_pid_is_another_processs_now(serving_home):
    """A stopped service whose pid file names another live process (its pid reused) is started by `service start`,
    which answered ok at once before, with no service running: Restart pos proxy then waited out its deadline for
    a new ocp_mgragent at 1,000 hosts (bench 2026-12-05)."""
    assert ctl(serving_home, "service stop ocp_monagent").ok
    other = stranger()
    try:
        (serving_home.run_dir / "ocp_monagent.pid").write_text(f"{other.pid}\n")
        assert ctl(serving_home, "service start ocp_monagent").ok
        status = AgentControl(LocalRunner(), str(serving_home.path), lambda line: None).status(time.monotonic() + 10)
        assert status.ready and status.pids["ocp_monagent"] not in (None, other.pid), status
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_sandbox_finds_the_descendants_of_many_roots_in_one_scan(monkeypatch):
    """A 1,000-host sandbox's stop asks for the descendants of 1,000 sshd roots: one scan of the process table, not
    one per root (its stop took minutes, 2026-12-06); the tree and the name filter are psutil's own."""
    import psutil

    from deployments.sandbox import procs

    tree = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 31 & sh -c 'sleep 32; true' & wait"])
    time.sleep(0.5)
    scans = []
    real_iter = psutil.process_iter
    monkeypatch.setattr(psutil, "process_iter", lambda *a, **k: scans.append(1) or real_iter(*a, **k))
    try:
        roots = [tree.pid, *range(2_000_000, 2_000_200)]  # 200 roots that are no process
        found = procs.descendants(roots)
        sleeps = procs.descendants(roots, name="sleep")
        expected = sorted(c.pid for c in psutil.Process(tree.pid).children(recursive=True))
        assert (sorted(found), len(scans)) == (expected, 2), f"expected {expected} in 2 scans, got {found} in {scans}"
        assert len(sleeps) == 3 and set(sleeps) < set(found), f"expected the 3 sleeps among {found}, got {sleeps}"
    finally:
        for child in psutil.Process(tree.pid).children(recursive=True):
            child.kill()
        tree.kill()
        tree.wait()
