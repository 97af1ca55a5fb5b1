"""One simulated agent's home on this machine: installed, its faults and delays switched, its processes found.

Every sandbox host has one (``hosts.py``); the agent contract tests install one in a temp dir and drive it with a
``LocalRunner`` (``local.py``), no sshd needed. Layout: ``{home}/{bin,run,log,conf,faults}``; ``bin/`` holds copies
of ``agent/ocp_agentctl`` (sh), ``agent/ocp_agentd`` (bash) and ``agent/ocp_mgragent`` (perl: an HTTP responder on
its unix socket), and a symlink ``ocp_monagent`` -> sleep (``bin/ocp_monagent infinity`` has comm
``ocp_monagent``: a service that costs no CPU).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

from . import procs

AGENT_SOURCE = Path(__file__).resolve().parent / "agent"
AGENT_PROCESSES = ("ocp_agentd", "ocp_mgragent", "ocp_monagent")
SERVICES = ("ocp_mgragent", "ocp_monagent")
#: The fault switches the shell agent knows (files in ``{home}/faults``; see README.md).
FAULTS = (
    "start_fail",
    "stop_hang",
    "stop_drop",
    "flood",
    "service_ignore_term",
    "mgragent_mute",
    "free_disk_mb",
    "free_memory_mb",
    "agentd_fails",
)
CLEAN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C"}
_FAULT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def seconds_text(value: float) -> str:
    """``0.5`` -> ``"0.5"``, ``2.0`` -> ``"2"``: a delay as the agent's conf files hold it."""
    if value < 0:
        raise ValueError(f"seconds must be >= 0, got {value}")
    text = f"{float(value):.3f}".rstrip("0").rstrip(".")
    return text or "0"


class AgentHome:
    """The agent home at ``path``. ``own`` is called on every file this writes (the sandbox hands them to its login
    user when it runs as root)."""

    def __init__(self, path: Path, own: Callable[[Path], None] | None = None) -> None:
        self.path = Path(path)
        self._own = own or (lambda path: None)

    def __repr__(self) -> str:
        return f"AgentHome({self.path})"

    @property
    def ctl(self) -> Path:
        return self.path / "bin" / "ocp_agentctl"

    @property
    def run_dir(self) -> Path:
        return self.path / "run"

    def install(self, *, stop_seconds: float = 0.0, start_seconds: float = 0.0) -> AgentHome:
        """Lay out the home (see the module docstring), the agent not started."""
        for sub in ("bin", "run", "log", "conf", "faults"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        for script in ("ocp_agentctl", "ocp_agentd", "ocp_mgragent"):
            (self.path / "bin" / script).unlink(missing_ok=True)
            shutil.copyfile(AGENT_SOURCE / script, self.path / "bin" / script)
            (self.path / "bin" / script).chmod(0o755)
        sleep = shutil.which("sleep", path=CLEAN_ENV["PATH"]) or "/bin/sleep"
        link = self.path / "bin" / "ocp_monagent"
        link.unlink(missing_ok=True)
        link.symlink_to(sleep)
        (self.path / "conf" / "stop_seconds").write_text(seconds_text(stop_seconds) + "\n")
        (self.path / "conf" / "start_seconds").write_text(seconds_text(start_seconds) + "\n")
        for path in [self.path, *self.path.rglob("*")]:
            self._own(path)
        return self

    # --- faults and delays -----------------------------------------------------------------------------
    def set_fault(self, name: str, value: str = "1") -> None:
        """Switch a fault on: writes {home}/faults/{name}. Known: ``FAULTS`` (see README.md)."""
        path = self._fault_path(name)
        path.write_text(value)
        self._own(path)

    def clear_fault(self, name: str) -> None:
        self._fault_path(name).unlink(missing_ok=True)

    def _fault_path(self, name: str) -> Path:
        if not _FAULT_NAME.fullmatch(name):
            raise ValueError(f"bad fault name {name!r}")
        return self.path / "faults" / name

    def set_version(self, version: str) -> None:
        """The agent's version from now on (conf/version; ``version``, ``status`` and mgragent answer it; a
        running mgragent keeps the one it started with)."""
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", version):
            raise ValueError(f"a version is 1-64 of [A-Za-z0-9._-], got {version!r}")
        path = self.path / "conf" / "version"
        path.write_text(version + "\n")
        self._own(path)

    def set_delays(
        self, *, stop_seconds: float | None = None, start_seconds: float | None = None, wait_seconds: int | None = None
    ) -> None:
        """Change conf/stop_seconds and conf/start_seconds (read by the agent at each stop and start), or
        conf/wait_seconds: how long the CLI waits for agentd or a service before it gives up (obagent's 10 s)."""
        texts = {
            "stop_seconds": None if stop_seconds is None else seconds_text(stop_seconds),
            "start_seconds": None if start_seconds is None else seconds_text(start_seconds),
            "wait_seconds": None if wait_seconds is None else str(int(wait_seconds)),
        }
        for name, text in texts.items():
            if text is not None:
                path = self.path / "conf" / name
                path.write_text(text + "\n")
                self._own(path)

    # --- what runs -------------------------------------------------------------------------------------
    def pids(self) -> dict[str, int | None]:
        """{process: pid} from run/*.pid; None when the file is missing or the process is gone (zombie = gone)."""
        result: dict[str, int | None] = {}
        for name in AGENT_PROCESSES:
            try:
                pid = int((self.run_dir / f"{name}.pid").read_text().strip())
            except (OSError, ValueError):
                pid = None
            result[name] = pid if procs.is_alive(pid) else None
        return result

    def processes(self, uid: int | None = None) -> list[tuple[int, str]]:
        """(pid, comm) of every live process (of ``uid`` when given) that belongs to this home, by the rule of
        ``procs.marked_processes``."""
        return procs.marked_processes([str(self.path)], uid=uid)[str(self.path).rstrip("/")]

    def start_duplicate(self, name: str, as_user: list[str] | None = None) -> int:
        """Start one more ``bin/NAME`` of this home beside the agent's own (as an operator who ran it by hand would),
        detached and not our child, its argv[0] the absolute path as agentd gives it; its pid. ``as_user``: a
        prefix such as ``runuser -u USER --`` when the agent's user is not ours."""
        if name not in SERVICES:
            raise ValueError(f"not a service: {name!r}")
        args = ["infinity"] if name == "ocp_monagent" else []
        return procs.start_detached(
            [str(self.path / "bin" / name), *args], home=str(self.path), env=CLEAN_ENV, as_user=as_user
        )

    def audit(self) -> list[tuple[float, str, str]]:
        """The agent CLI's own record: (epoch seconds, 'begin'|'end', command) per stop/start/service."""
        try:
            lines = (self.path / "log" / "agentctl.log").read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            stamp, edge, what = (line.split(" ", 2) + ["", ""])[:3]
            out.append((float(stamp), edge, what))
        return out

    def terminate(self, uid: int | None = None, grace: float = 1.0) -> None:
        """Stop every process of this home, by pid: TERM, KILL what is left after ``grace`` s, scan again (agentd's
        TERM handler may start a process after a scan)."""
        for round_ in range(5):
            found = [pid for pid, _ in self.processes(uid)]
            if not found:
                return
            procs.terminate(found, grace=grace if round_ == 0 else min(grace, 0.2))


__all__ = ["AGENT_PROCESSES", "AGENT_SOURCE", "CLEAN_ENV", "FAULTS", "SERVICES", "AgentHome", "seconds_text"]
