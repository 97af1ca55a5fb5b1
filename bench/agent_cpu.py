"""CPU the sandbox agent itself costs per command: the floor's restart, paid by every way the bench measures.

    python3 -m bench.agent_cpu [--cycles 20]

One sandbox agent home on this machine (no sshd: ``LocalRunner``), its stop and start delays 0. This process is
made the child subreaper (``PR_SET_CHILD_SUBREAPER``), so the agent's detached daemons (agentd, its services and
what they fork) are reparented to it when their parent exits and their CPU is counted when it reaps them; without
that they are the machine init's (the bench's ``process_api`` row: pid 1's children's CPU). Each figure is the CPU
(user + system) of everything the command and the daemons it wakes ran, mean of ``--cycles``; ``stop`` includes
the stopped agentd's whole life (its start, its services', its naps), as a restart pays it.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import tempfile
import time
from pathlib import Path

from deployments.sandbox.agent_home import AgentHome
from deployments.sandbox.local import LocalRunner

from .remote_cpu import children_cpu

PR_SET_CHILD_SUBREAPER = 36
# A restart as the floor drives it (bench.floor.COMMANDS), one command at a time.
CYCLE = (
    "status",
    "service stop ocp_mgragent",
    "service start ocp_mgragent",
    "status",
    "stop",
    "status",
    "start",
    "status",
    "status",
)
SETTLE = 0.3  # mgragent listens 0.2 s after it starts: let the daemons finish what the command woke


def reap() -> None:
    """Reap every exited child, ours or reparented to us."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=20)
    args = parser.parse_args()
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit(f"prctl(PR_SET_CHILD_SUBREAPER) failed: {os.strerror(ctypes.get_errno())}")
    runner = LocalRunner()
    per_command: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="ocp-agent-cpu-") as tmp:
        home = AgentHome(Path(tmp) / "ocp_agent").install()
        try:
            assert runner.run(f"{home.ctl} start", deadline=time.monotonic() + 30).ok
            time.sleep(SETTLE)
            reap()
            started = time.monotonic()
            for _ in range(args.cycles):
                for command in CYCLE:
                    before = children_cpu()
                    runner.run(f"{home.ctl} {command}", deadline=time.monotonic() + 30)
                    time.sleep(SETTLE if command != "status" else 0)
                    reap()
                    per_command[command] = per_command.get(command, 0.0) + children_cpu() - before
            wall = time.monotonic() - started - args.cycles * SETTLE * (len(CYCLE) - CYCLE.count("status"))
        finally:
            home.terminate()
            reap()
    print(f"sandbox agent CPU per command, ms (mean of {args.cycles} restart cycles as the floor runs them)")
    for command in dict.fromkeys(CYCLE):
        count = CYCLE.count(command)
        print(
            f"  {command:28s} {per_command[command] / args.cycles / count * 1000:6.1f}"
            + (f"  (x{count})" if count > 1 else "")
        )
    total = sum(per_command.values()) / args.cycles * 1000
    print(f"  {'one restart cycle':28s} {total:6.1f}   ({wall / args.cycles * 1000:.0f} ms of wall, settling aside)")


if __name__ == "__main__":
    main()
