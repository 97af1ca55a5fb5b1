"""The sandbox agent where 1,000 hosts share one machine: its waits go by what a process is, not by its pid alone
(32,768 pids wrap within seconds there). The sandbox's shell agent, real /bin/sh."""

from __future__ import annotations

import subprocess
import time

import shell_agent

from deployments.sandbox.local import LocalRunner

serving_home = shell_agent.serving_home  # a started shell agent (the fixture)


def test_service_stop_is_not_held_by_a_stranger_that_got_the_services_pid(serving_home):
    """A service's pid now held by another long-lived program does not keep `service stop` waiting until
    wait_for_service_exit_timeout: the 1,000-host floor failed so (bench 2026-12-05, twice)."""
    stranger = subprocess.Popen(["perl", "-e", '$SIG{TERM} = "IGNORE"; sleep 60'], stdin=subprocess.DEVNULL)
    try:
        time.sleep(0.2)  # its TERM handler is set
        (serving_home.run_dir / "ocp_monagent.pid").write_text(f"{stranger.pid}\n")
        started = time.monotonic()
        done = LocalRunner().run(f"{serving_home.ctl} service stop ocp_monagent", deadline=time.monotonic() + 20)
        assert done.exit_status == 0 and time.monotonic() - started < 1.5, done
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()
