"""Ansible on the same sandbox hosts: five plays (one per stage, so each play is a barrier) of ``raw`` tasks
with the floor's commands, ``forks`` = our concurrency, host-key checking on against the sandbox's known_hosts.

Modes (``ssh_args`` of the ssh connection plugin; the control sockets live in a fresh directory per bench):
- ``cold``: Ansible's defaults (``ControlMaster=auto ControlPersist=60s``) with no master alive yet: the first
  play opens one connection per host, later plays reuse it. This is what a first run in a window costs.
- ``warm``: run again right after ``cold``: every master is still alive, no SSH handshake at all.
- ``nocp``: ``ControlMaster=no``: a new SSH connection for every command (9 per host).
Per-stage times come from a tiny callback plugin (bench/ansible_callback) that stamps each play's start.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from .common import BIN, STAGES, Result, agent_pids, base_env, restarted_hosts, run_measured, spans_to_result
from .floor import COMMANDS

CALLBACKS = Path(__file__).resolve().parent / "ansible_callback"
SSH_ARGS = {
    "cold": "-C -o ControlMaster=auto -o ControlPersist=60s",
    "warm": "-C -o ControlMaster=auto -o ControlPersist=60s",
    "nocp": "-o ControlMaster=no",
}


def ansible_version() -> str:
    out = subprocess.run([str(BIN / "ansible-playbook"), "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "not installed"


class AnsibleBench:
    """Inventory, playbook and config for one sandbox, in ``work_dir``."""

    def __init__(self, sandbox, work_dir: Path, forks: int) -> None:
        self.sandbox, self.forks = sandbox, forks
        self.dir = Path(tempfile.mkdtemp(prefix="ansible-", dir=work_dir))
        self.control_dir = Path(tempfile.mkdtemp(prefix="bcp-", dir="/tmp"))  # short: unix socket path limit
        self.inventory = self.dir / "inventory.ini"
        self.playbook = self.dir / "restart.yml"
        self._write_inventory()
        self._write_playbook()

    def _write_inventory(self) -> None:
        sb = self.sandbox
        lines = ["[sandbox]"]
        lines += [f"{h.name} ansible_host={h.address} ansible_port={h.port} agent_ctl={h.ctl}" for h in sb.hosts]
        lines += [
            "",
            "[sandbox:vars]",
            f"ansible_user={sb.user}",
            f"ansible_ssh_private_key_file={sb.key_file}",
            f"ansible_ssh_common_args='-o UserKnownHostsFile={sb.known_hosts} -o StrictHostKeyChecking=yes'",
        ]
        self.inventory.write_text("\n".join(lines) + "\n")

    def _write_playbook(self) -> None:
        plays = []
        for stage in STAGES:
            tasks = []
            for template, must_succeed in COMMANDS[stage]:
                command = template.format(ctl="{{ agent_ctl }}")
                tasks.append({"name": command, "raw": command if must_succeed else f"! {command}"})
            plays.append({"name": stage, "hosts": "sandbox", "gather_facts": False, "tasks": tasks})
        self.playbook.write_text(json.dumps(plays, indent=1))  # JSON is YAML

    def _config(self, mode: str) -> Path:
        cfg = self.dir / f"ansible-{mode}.cfg"
        cfg.write_text(
            "\n".join(
                [
                    "[defaults]",
                    f"forks = {self.forks}",
                    "host_key_checking = True",
                    "gathering = explicit",
                    "retry_files_enabled = False",
                    f"callback_plugins = {CALLBACKS}",
                    "callbacks_enabled = bench_timer",
                    "",
                    "[ssh_connection]",
                    f"ssh_args = {SSH_ARGS[mode]}",
                    f"control_path_dir = {self.control_dir}",
                    "pipelining = False",
                    "",
                ]
            )
        )
        return cfg

    def run(self, mode: str) -> Result:
        if mode == "cold":
            self.exit_masters()  # a cold run starts with no ControlPersist master alive
        times = self.dir / f"times-{mode}.jsonl"
        times.unlink(missing_ok=True)
        env = base_env(
            ANSIBLE_CONFIG=str(self._config(mode)),
            ANSIBLE_HOME=str(self.dir / "home"),
            ANSIBLE_LOCAL_TEMP=str(self.dir / "tmp"),
            BENCH_ANSIBLE_TIMES=str(times),
            ANSIBLE_NOCOLOR="1",
        )
        before = agent_pids(self.sandbox)
        proc = run_measured(
            [str(BIN / "ansible-playbook"), "-i", str(self.inventory), str(self.playbook)],
            env,
            log_dir=self.dir,
            label=f"playbook-{mode}",
        )
        result = Result(
            name=f"ansible {mode}",
            wall=round(proc.wall, 3),
            ok=proc.returncode == 0,
            note="" if proc.returncode == 0 else _recap(proc.stdout),
            rss_mb=round(proc.rss_mb, 1),
            tree_rss_mb=round(proc.tree_rss_mb, 1),
            cpu_s=round(proc.cpu_s, 2),
            extra={"forks": self.forks, "ssh_args": SSH_ARGS[mode], "exit_code": proc.returncode},
        )
        proc.machine.record(result)
        result.restarted = restarted_hosts(before, agent_pids(self.sandbox))
        spans_to_result(result, _play_spans(times), proc.launched, proc.ended)
        return result

    def exit_masters(self) -> None:
        """Ask every ControlPersist master we left to exit (ssh -O exit on its socket)."""
        for sock in self.control_dir.iterdir():
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "bench"], capture_output=True, timeout=10)
            sock.unlink(missing_ok=True)

    def close(self) -> None:
        self.exit_masters()
        self.control_dir.rmdir()


def _play_spans(times: Path) -> dict[str, tuple[float, float]]:
    """Stage k = play k starts .. play k+1 starts (the last one: the run's end)."""
    if not times.exists():
        return {}
    events = [json.loads(line) for line in times.read_text().splitlines() if line.strip()]
    starts = [(e["name"], e["t"]) for e in events if e["event"] == "play"]
    end = next((e["t"] for e in events if e["event"] == "end"), None)
    spans = {}
    for i, (name, t) in enumerate(starts):
        nxt = starts[i + 1][1] if i + 1 < len(starts) else end
        if nxt is not None:
            spans[name] = (t, nxt)
    return spans


def _recap(stdout: str) -> str:
    lines = stdout.splitlines()
    failed = [line for line in lines if line.startswith(("fatal:", "failed:"))]
    return (failed[0] if failed else "\n".join(lines[-3:]))[:300]
