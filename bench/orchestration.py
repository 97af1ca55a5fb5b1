"""What our orchestration costs per DAG node, without SSH: the real flow on FakeAgent hosts, in this process.

    python3 -m bench.orchestration --hosts 100,1000 [--repeat 3] [--profile DIR]

Starts a ``prefect server start`` configured as our CLI's local server (``LEAN_SERVICES``,
``RECORDER_BATCHING``), then per N
runs ``flows.restart.restart_agents`` in this process on N hosts whose connections are the sandbox's
FakeAgent (answering our commands at once, no sshd, no network) instead of SSH sessions: the flow, its Prefect
task runs, the task store (SQLite), the lease, the subtask logs, the artifacts — everything but SSH. Prints the
wall time and this process's CPU per subtask (and the Prefect server's, during the run and after it). With
``--profile DIR``, py-spy records this process during each run (speedscope files, summarized with
``python3 -m bench.profile summarize FILE``).

The seam is ``flows.run.SSHSession``, replaced here (a benchmark, not a test) by ``FakeSession``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from .common import BIN, idle_after, process_cpu_seconds, wait_quiet


class FakeSession:
    """An SSHSession's surface over a FakeAgent: connected at once, every command answered in memory."""

    def __init__(self, host, *, accept_new_host_key: bool = False) -> None:
        from deployments.sandbox.fake_agent import FakeAgent
        from steps.testing import FakeRunner

        self.host = host
        self._runner = FakeRunner(FakeAgent(host.agent_home), label=host.label)
        self.connected = False

    def connect(self, *, deadline: float) -> list[str]:
        self.connected = True
        return []

    def run(self, command: str, *, deadline: float, stop=None):
        return self._runner.run(command, deadline=deadline, stop=stop)

    def close(self) -> None:
        self.connected = False


def write_inventory(path: Path, n: int) -> list[int]:
    ids = list(range(1001, 1001 + n))
    path.write_text(
        '[defaults]\nuser = "bench"\n'
        + "".join(
            f'[[hosts]]\nid = {i}\nname = "fake-{i}"\naddress = "127.0.0.1"\nssh_port = {20000 + i - 1000}\n'
            for i in ids
        )
    )
    return ids


def main(argv: list[str] | None = None) -> int:
    from deployments.local_prefect import LEAN_SERVICES, RECORDER_BATCHING

    from .ours import PrefectServer
    from .prefect_floor import _free_port

    p = argparse.ArgumentParser(prog="python3 -m bench.orchestration", description=__doc__.split("\n\n")[0])
    p.add_argument("--hosts", default="100")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--workers", type=int, default=32)
    p.add_argument("--profile", type=Path, help="py-spy this process during each run; speedscope files here")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ocp-orchestration-"))
    server = PrefectServer(work / "server", _free_port(), settings={**LEAN_SERVICES, **RECORDER_BATCHING}).start()
    os.environ.update(
        PREFECT_API_URL=server.api_url,
        PREFECT_HOME=str(work / "client"),
        PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="WARNING",
        DO_NOT_TRACK="1",
        OCP_RESTART_HOME=str(work / "home"),
    )
    os.environ.pop("OCP_RESTART_STORE_URL", None)
    import flows.run
    from flows.options import RestartOptions
    from flows.restart import restart_agents

    flows.run.SSHSession = FakeSession
    try:
        inventory = work / "inventory.toml"
        write_inventory(inventory, 1)
        restart_agents(host_ids=[1001], inventory=str(inventory))  # imports, client start-up: not measured
        for n in (int(x) for x in args.hosts.split(",")):
            ids = write_inventory(inventory, n)
            rows = []
            for attempt in range(args.repeat):
                wait_quiet()
                spy = None
                if args.profile:
                    args.profile.mkdir(parents=True, exist_ok=True)
                    out = args.profile / f"orchestration-{n}-{attempt}.speedscope.json"
                    spy = subprocess.Popen(
                        [
                            str(BIN / "py-spy"),
                            "record",
                            "--pid",
                            str(os.getpid()),
                            "--format",
                            "speedscope",
                            "--rate",
                            "50",
                            "--gil",
                            "-o",
                            str(out),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    time.sleep(1.0)
                mine, theirs = process_cpu_seconds(os.getpid()), process_cpu_seconds(server.proc.pid)
                started = time.monotonic()
                instance = restart_agents(
                    host_ids=ids, inventory=str(inventory), options=RestartOptions(max_workers=args.workers)
                )
                wall = time.monotonic() - started
                mine = process_cpu_seconds(os.getpid()) - mine
                theirs = process_cpu_seconds(server.proc.pid) - theirs
                if spy is not None:
                    spy.send_signal(2)
                    spy.wait(timeout=120)
                backlog_s, backlog_cpu = idle_after(server.proc.pid)
                subtasks = len(instance["subtasks"])
                assert instance["status"] == "SUCCESSFUL", instance["status"]
                rows.append((wall, mine, theirs, backlog_s, backlog_cpu, subtasks))
                print(
                    f"  N={n}: {subtasks} subtasks in {wall:.2f} s; this process {mine:.1f} CPU-s "
                    f"({1000 * mine / subtasks:.1f} ms per subtask); Prefect server {theirs:.1f} CPU-s during "
                    f"({1000 * theirs / subtasks:.1f} ms per subtask), then {backlog_cpu:.1f} CPU-s over "
                    f"{backlog_s:.0f} s",
                    flush=True,
                )
            wall, mine, theirs, backlog_s, backlog_cpu, subtasks = sorted(rows)[len(rows) // 2]
            print(
                f"N={n} median of {len(rows)}: {wall:.2f} s, this process {1000 * mine / subtasks:.1f} ms CPU per "
                f"subtask, Prefect server {1000 * theirs / subtasks:.1f} during + {1000 * backlog_cpu / subtasks:.1f}"
                f" after; walls {[round(r[0], 2) for r in rows]}"
                + (f", spread {statistics.pstdev(r[0] for r in rows):.2f} s" if len(rows) > 1 else ""),
                flush=True,
            )
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
