"""One simulated older-generation agent's home (Python, OCP <= 3.1): installed, its faults switched, its processes
found. The counterpart of ``agent_home.AgentHome`` (the current generation), for hosts of the sandbox that run the
agent the seed's DAG was written for (issue #20).

Layout: ``{home}/ocp_agent_ctl.py``, ``{home}/ocp_agentd.py``, ``{home}/libs/agentlib.py``, ``{home}/agent/pos.py``
(pos_proxy), ``{home}/bin/{ocp_exporter,node_exporter,obstat2,ob_logtailer,ob_cleaner}`` -> sleep, and
``run/`` (pid files), ``log/``, ``conf/`` (``version``, ``wait_seconds``, ``pos_proxy_address``,
``pos_proxy_port``), ``faults/`` (``start_fail``, ``stop_hang``, ``pos_proxy_mute``; and Prepare's
``free_disk_mb``/``free_memory_mb`` stand-ins).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from . import procs
from .agent_home import CLEAN_ENV, AgentHome

AGENT_V3_SOURCE = Path(__file__).resolve().parent / "agent_v3"
SLEEPERS = ("ocp_exporter", "node_exporter", "obstat2", "ob_logtailer", "ob_cleaner")
PROCESSES_V3 = ("ocp_agentd", "pos_proxy", *SLEEPERS)
VERSION_V3 = "3.1.2-20210812221645"
FAULTS_V3 = ("start_fail", "stop_hang", "pos_proxy_mute", "free_disk_mb", "free_memory_mb")
_FILES = ("ocp_agent_ctl.py", "ocp_agentd.py", "libs/agentlib.py", "agent/pos.py")


class AgentHomeV3(AgentHome):
    """The older agent's home at ``path``; ``address``/``port``: where its pos_proxy listens."""

    generation = "3"

    def __init__(self, path: Path, own=None, *, address: str = "127.0.0.1", port: int = 62888) -> None:  # type: ignore[no-untyped-def]
        super().__init__(path, own)
        self.address, self.port = address, port

    @property
    def ctl(self) -> Path:
        return self.path / "ocp_agent_ctl.py"

    def install(self, *, stop_seconds: float = 0.0, start_seconds: float = 0.0) -> AgentHomeV3:
        """Lay out the home (see the module docstring), the agent not started. The delays are the current
        generation's knobs; this agent has none."""
        for sub in ("bin", "run", "log", "conf", "faults", "libs", "agent"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        for name in _FILES:
            target = self.path / name
            target.unlink(missing_ok=True)
            shutil.copyfile(AGENT_V3_SOURCE / name, target)
            target.chmod(0o755)
        sleep = shutil.which("sleep", path=CLEAN_ENV["PATH"]) or "/bin/sleep"
        for name in SLEEPERS:
            link = self.path / "bin" / name
            link.unlink(missing_ok=True)
            link.symlink_to(sleep)
        conf = {"version": VERSION_V3, "pos_proxy_address": self.address, "pos_proxy_port": str(self.port)}
        for name, value in conf.items():
            (self.path / "conf" / name).write_text(value + "\n")
        for path in [self.path, *self.path.rglob("*")]:
            self._own(path)
        return self

    def set_delays(
        self, *, stop_seconds: float | None = None, start_seconds: float | None = None, wait_seconds: int | None = None
    ) -> None:
        """Only ``wait_seconds`` (how long the control script waits before it gives up, 10 s when unset)."""
        if wait_seconds is not None:
            path = self.path / "conf" / "wait_seconds"
            path.write_text(f"{int(wait_seconds)}\n")
            self._own(path)

    def pids(self) -> dict[str, int | None]:
        """{process: pid} from run/*.pid; None when the file is missing or the process is gone (zombie = gone)."""
        result: dict[str, int | None] = {}
        for name in PROCESSES_V3:
            try:
                pid = int((self.run_dir / f"{name}.pid").read_text().strip())
            except (OSError, ValueError):
                pid = None
            result[name] = pid if procs.is_alive(pid) else None
        return result

    def start_duplicate(self, name: str, as_user: list[str] | None = None) -> int:
        """Start one more ``bin/NAME infinity`` (an exporter or a worker) of this home beside the agent's own, as
        an operator who ran it by hand would: detached, not our child, run as the agent runs it; its pid.
        ``as_user``: a prefix such as ``runuser -u USER --`` when the agent's user is not ours."""
        if name not in SLEEPERS:
            raise ValueError(f"not an exporter or worker of the older agent: {name!r} (one of {', '.join(SLEEPERS)})")
        program = str(self.path / "bin" / name)
        return procs.start_detached([program, "infinity"], home=str(self.path), env=CLEAN_ENV, as_user=as_user)

    def ctl_argv(self, *args: str) -> list[str]:
        """``python3 {home}/ocp_agent_ctl.py ARGS`` (run it with cwd = the agent home, as operators do)."""
        return [shutil.which("python3", path=CLEAN_ENV["PATH"]) or "python3", str(self.ctl), *args]

    def run_ctl(
        self, *args: str, as_user: list[str] | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*(as_user or []), *self.ctl_argv(*args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=CLEAN_ENV,
            cwd=self.path,
            stdin=subprocess.DEVNULL,
        )


__all__ = ["AGENT_V3_SOURCE", "FAULTS_V3", "PROCESSES_V3", "SLEEPERS", "VERSION_V3", "AgentHomeV3"]
