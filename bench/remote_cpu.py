"""CPU that each step's commands cost on the host, ours against the floor's, with N other processes on the machine.

    python3 -m bench.remote_cpu [--others 3000] [--repeat 5]

At 1,000 sandbox hosts the machine is CPU-bound and every host's commands share one kernel and one /proc (3,000+
agent processes): a command's CPU is wall time there. This runs one sandbox agent home on this machine (no sshd,
/bin/sh as a session runs it), starts ``--others`` idle processes named and placed like other hosts' agents, and
measures the CPU (user + system of every process the step's commands fork, as their parent reaps them) of each of
our five steps (``steps/work.py``) and of the floor's commands for the same stage (``bench.floor.COMMANDS``).
The agent's daemons are not in either figure (they are not the commands' children).
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from deployments.sandbox.agent_home import AgentHome
from deployments.sandbox.local import LocalRunner
from steps import work
from steps.inventory import Host
from steps.testing import FakeStep

from .floor import COMMANDS

STAGES = ("prepare", "pos_proxy", "stop", "start", "finish")
STEPS = dict(zip(STAGES, (work.prepare, work.restart_pos_proxy, work.stop_all, work.start_all, work.finish)))


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def start_others(count: int, root: Path) -> list[subprocess.Popen]:
    """``count`` idle processes whose command lines look like other hosts' agents (``HOME/bin/ocp_*``)."""
    names = ("ocp_agentd", "ocp_mgragent", "ocp_monagent")
    return [
        subprocess.Popen(
            ["/bin/bash", "-c", f'exec -a "{root}/h{i // 3}/bin/{names[i % 3]}" sleep 3600'],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        for i in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--others", type=int, default=3000, help="idle processes on the machine (3,000 ~ 1,000 hosts)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ocp-remote-cpu-") as tmp:
        others = start_others(args.others, Path(tmp) / "others")
        home = AgentHome(Path(tmp) / "ocp_agent").install()
        try:
            runner = LocalRunner()
            assert runner.run(f"{home.ctl} start", deadline=time.monotonic() + 30).ok
            ours = {stage: 0.0 for stage in STAGES}
            floor = {stage: 0.0 for stage in STAGES}
            host = Host(id=1, name="local", address="10.0.0.1", agent_home=str(home.path))
            for _ in range(args.repeat):
                pids: dict = {}
                for stage in STAGES:
                    step = FakeStep(host, runner, timeout=60, pids=pids)
                    before = children_cpu()
                    STEPS[stage](step)
                    ours[stage] += children_cpu() - before
                for stage in STAGES:
                    before = children_cpu()
                    for template, _must in COMMANDS[stage]:
                        runner.run(template.format(ctl=home.ctl), deadline=time.monotonic() + 60)
                    floor[stage] += children_cpu() - before
            print(f"CPU ms per host and stage, {args.others} other processes on the machine, mean of {args.repeat}")
            print(f"{'stage':<10} {'ours':>8} {'floor':>8} {'ours - floor':>13}")
            for stage in STAGES:
                o, f = ours[stage] / args.repeat * 1000, floor[stage] / args.repeat * 1000
                print(f"{stage:<10} {o:8.1f} {f:8.1f} {o - f:13.1f}")
            o, f = sum(ours.values()) / args.repeat * 1000, sum(floor.values()) / args.repeat * 1000
            print(f"{'all':<10} {o:8.1f} {f:8.1f} {o - f:13.1f}")
        finally:
            home.terminate()
            for proc in others:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


if __name__ == "__main__":
    main()
