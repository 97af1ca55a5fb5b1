"""K real sshd "hosts" on loopback, each with a simulated OCP agent (see README.md beside this file)."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

import tomli_w

from . import procs, sshd
from .agent_home import CLEAN_ENV as _CLEAN_ENV
from .agent_home import AgentHome
from .agent_home import seconds_text as _seconds
from .agent_home_v3 import AgentHomeV3
from .sshd import SandboxError
from .users import LoginUser, login_user

_live: set[Sandbox] = set()
#: A host's generation setting: the agent it runs ("4": Go obagent, "3": the older Python agent) and whether the
#: inventory says so ("3", "4") or leaves it to Prepare's detection ("auto:3", "auto:4"; the default "auto:4").
GENERATION_SETTINGS = ("4", "3", "auto:4", "auto:3")
AGENT_START_WAVE = 100  # agents started at once when a sandbox comes up
_live_lock = threading.Lock()


def _address(index: int) -> str:
    """127.0.0.2 .. 127.0.0.250, then 127.0.1.2 .. 127.0.1.250, ..."""
    return f"127.0.{index // 249}.{2 + index % 249}"


class SandboxHost:
    """One simulated host: an sshd on ``address:port`` and an agent home at ``agent_home``."""

    def __init__(self, sandbox: Sandbox, index: int, host_id: int, generation: str = "auto:4") -> None:
        self._sandbox = sandbox
        self.id = host_id
        self.name = f"sandbox-{host_id}"
        self.address = _address(index)
        self.port = 0
        self.dir = sandbox.base_dir / "hosts" / self.name
        self.agent_home = self.dir / "ocp_agent"
        self.generation = generation[-1]  # what it runs: "4" or "3"
        self.declared = "auto" if generation.startswith("auto") else generation  # what the inventory says
        self.home: AgentHome  # its faults, delays and processes
        if self.generation == "3":  # its pos_proxy on a free port of its own address (hosts share this machine)
            port = sshd.free_port(self.address)
            self.home = AgentHomeV3(self.agent_home, own=sandbox._own, address=self.address, port=port)
        else:
            self.home = AgentHome(self.agent_home, own=sandbox._own)
        self._sshd: subprocess.Popen | None = None
        self._frozen: list[int] = []

    def __repr__(self) -> str:
        return f"SandboxHost({self.name} {self.address}:{self.port} {self.agent_home})"

    # --- paths -----------------------------------------------------------------------------------------
    @property
    def host_key(self) -> Path:
        return self.dir / "ssh_host_ed25519_key"

    @property
    def sshd_config(self) -> Path:
        return self.dir / "sshd_config"

    @property
    def sshd_log(self) -> Path:
        return self.dir / "sshd.log"

    @property
    def ctl(self) -> Path:
        return self.home.ctl

    @property
    def sshd_pid(self) -> int | None:
        """The listening sshd's pid while the host is up."""
        return self._sshd.pid if self._sshd is not None and self._sshd.poll() is None else None

    # --- faults and delays -----------------------------------------------------------------------------
    def set_fault(self, name: str, value: str = "1") -> None:
        """Switch a fault on: writes {agent_home}/faults/{name}. Known: ``agent_home.FAULTS`` (see README.md)."""
        self.home.set_fault(name, value)

    def clear_fault(self, name: str) -> None:
        self.home.clear_fault(name)

    def set_version(self, version: str) -> None:
        """This host's agent version from now on (see ``AgentHome.set_version``): a mixed-version batch."""
        self.home.set_version(version)

    def set_delays(
        self, *, stop_seconds: float | None = None, start_seconds: float | None = None, wait_seconds: int | None = None
    ) -> None:
        """Change conf/stop_seconds / conf/start_seconds (read by the agent at each stop / start), or
        conf/wait_seconds (how long its CLI waits before giving up; obagent's 10 s)."""
        self.home.set_delays(stop_seconds=stop_seconds, start_seconds=start_seconds, wait_seconds=wait_seconds)

    # --- sshd ------------------------------------------------------------------------------------------
    def down(self, *, freeze: bool = False) -> None:
        """Take the host off the network; the agent keeps running.

        Default: kill its sshd listener and every sshd session process (open connections drop, new ones are
        refused). ``freeze=True``: SIGSTOP them instead (like a partition: connects/commands hang until up()).
        """
        if self._sshd is None or self._frozen:
            return
        listener = self._sshd
        sessions = procs.descendants([listener.pid], name="sshd")
        if freeze:
            self._frozen = [listener.pid, *sessions]
            procs.signal_pids(self._frozen, signal.SIGSTOP)
            return
        procs.signal_pids([listener.pid, *sessions], signal.SIGKILL)
        listener.wait()
        self._sshd = None

    def up(self) -> None:
        """Bring the host back: same address, port and host key."""
        if self._frozen:
            procs.signal_pids(self._frozen, signal.SIGCONT)
            self._frozen = []
            return
        if self.sshd_pid is not None:
            return
        self._start_sshd(keep_port=True)

    @property
    def is_up(self) -> bool:
        return self.sshd_pid is not None and not self._frozen

    def replace_host_key(self) -> None:
        """New host key, sshd restarted with it; known_hosts is NOT updated (for host-key mismatch tests)."""
        self.up()
        self.down()
        sshd.keygen([self.host_key], comment=self.name)
        self._start_sshd(keep_port=True)

    def _start_sshd(self, *, keep_port: bool) -> None:
        attempts = 1 if keep_port else 5
        for _ in range(attempts):
            if not keep_port or not self.port:
                self.port = sshd.free_port(self.address)
            proc = sshd.spawn(self.sshd_config, self.port, self.sshd_log)
            if sshd.wait_listening(proc, self.address, self.port):
                self._sshd = proc
                return
            proc.kill()
            proc.wait()
        log = self.sshd_log.read_text(errors="replace")[-2000:] if self.sshd_log.exists() else ""
        raise SandboxError(f"sshd for {self.name} did not listen on {self.address}:{self.port}: {log.strip()}")

    # --- the agent -------------------------------------------------------------------------------------
    def audit(self) -> list[tuple[float, str, str]]:
        """The agent CLI's own record on this host: (epoch seconds, 'begin'|'end', command) per stop/start/service."""
        return self.home.audit()

    def agent_pids(self) -> dict[str, int | None]:
        """{process: pid} from run/*.pid; None when the file is missing or the process is gone (zombie = gone)."""
        return self.home.pids()

    def processes(self) -> list[tuple[int, str]]:
        """(pid, comm) of every live process of the login user that belongs to this agent home.

        Rule (procs.marked_processes): /proc/PID/environ has OCP_SANDBOX_HOME=<agent_home> (set by
        ocp_agentctl for everything it starts), or an argument of /proc/PID/cmdline starts with <agent_home>/bin/.
        """
        return self.home.processes(uid=self._sandbox.login.uid)

    def start_duplicate(self, name: str) -> int:
        """A second ``name`` (a service; on the older agent an exporter or a worker) of this host's agent, started
        by hand beside the one its pid file names, as the login user; its pid."""
        return self.home.start_duplicate(name, as_user=self._sandbox._as_user([]))

    def agentctl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run ``ocp_agentctl ARGS`` (the older generation: ``python3 ocp_agent_ctl.py ARGS`` in the agent home)
        locally as the login user (not over SSH); text output."""
        if isinstance(self.home, AgentHomeV3):
            return self.home.run_ctl(*args, as_user=self._sandbox._as_user([]), timeout=timeout)
        return subprocess.run(
            self._sandbox._as_user([str(self.ctl), *args]),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_CLEAN_ENV,
            stdin=subprocess.DEVNULL,
        )


class Sandbox:
    """K sshd hosts on 127.0.0.x with a simulated OCP agent each. A context manager: starts everything in
    __enter__ (or start()), stops every process it started, by pid, in __exit__ (or stop())."""

    def __init__(
        self,
        n_hosts: int,
        base_dir: str | Path | None = None,
        *,
        first_host_id: int = 1001,
        stop_seconds: float = 0.0,
        start_seconds: float = 0.0,
        generations: Mapping[int, str] | None = None,
    ) -> None:
        """``generations``: host id -> one of GENERATION_SETTINGS (the rest "auto:4": the current agent, the
        inventory silent)."""
        if n_hosts < 1 or n_hosts > 10_000:
            raise ValueError(f"n_hosts must be 1..10000, got {n_hosts}")
        self.generations = dict(generations or {})
        for host_id, setting in self.generations.items():
            if setting not in GENERATION_SETTINGS:
                raise ValueError(f"host {host_id}: generation must be one of {GENERATION_SETTINGS}, got {setting!r}")
        self.n_hosts = n_hosts
        self.first_host_id = first_host_id
        self.stop_seconds = _seconds(stop_seconds)
        self.start_seconds = _seconds(start_seconds)
        self._own_dir = base_dir is None
        self._base_arg = None if base_dir is None else Path(base_dir).resolve()
        self.base_dir: Path = self._base_arg or Path("/nonexistent")
        self.hosts: list[SandboxHost] = []
        self.login: LoginUser | None = None
        self.user = ""
        self.key_file = Path()
        self.known_hosts = Path()
        self.authorized_keys = Path()
        self.inventory_path = Path()
        self._started = False
        self._stopped = False

    # --- public ----------------------------------------------------------------------------------------
    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def host(self, host_id: int) -> SandboxHost:
        for h in self.hosts:
            if h.id == host_id:
                return h
        raise KeyError(f"no sandbox host with id {host_id}")

    def start(self) -> Sandbox:
        if self._started:
            raise RuntimeError("a Sandbox starts once")
        self._started = True
        with _live_lock:
            _live.add(self)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every agent process (TERM, then KILL) and every sshd this sandbox started; remove its temp dir.
        Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        with _live_lock:
            _live.discard(self)
        homes = [str(h.agent_home) for h in self.hosts]
        uid = self.login.uid if self.login else None
        for round_ in range(5):  # agentd's TERM handler may spawn a sleep after a scan: scan again
            listeners = [h._sshd.pid for h in self.hosts if h._sshd is not None and h._sshd.poll() is None]
            victims = set(listeners) | set(procs.descendants(listeners))
            if homes:
                for found in procs.marked_processes(homes, uid=uid).values():
                    victims.update(pid for pid, _ in found)
            if not victims:
                break
            procs.terminate(victims, grace=1.0 if round_ == 0 else 0.2)
        for h in self.hosts:
            if h._sshd is not None:
                h._sshd.kill() if h._sshd.poll() is None else None
                h._sshd.wait()
                h._sshd = None
            h._frozen = []
        if self._own_dir and self.base_dir.exists():
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def refresh_known_hosts(self) -> None:
        """Rewrite known_hosts with every host's current key (e.g. after replace_host_key())."""
        lines = [f"[{h.address}]:{h.port} {sshd.public_key(h.host_key)}\n" for h in self.hosts]
        self.known_hosts.write_text("".join(lines))
        self.known_hosts.chmod(0o644)

    # --- internals -------------------------------------------------------------------------------------
    def _as_user(self, argv: list[str]) -> list[str]:
        assert self.login is not None
        if self.login.is_self:
            return argv
        runuser = shutil.which("runuser", path="/usr/sbin:/usr/bin:/sbin:/bin") or "runuser"
        return [runuser, "-u", self.login.name, "--", *argv]

    def _own(self, path: Path) -> None:
        if self.login is not None and not self.login.is_self:
            os.chown(path, self.login.uid, self.login.gid, follow_symlinks=False)

    def _start(self) -> None:
        self.login = login_user()
        self.user = self.login.name
        if self._own_dir:
            self.base_dir = Path(tempfile.mkdtemp(prefix="ocp-sandbox-"))
        else:
            self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(self.base_dir.stat().st_mode | 0o755)
        if not self.login.can_traverse(self.base_dir):
            raise SandboxError(
                f"user {self.user} cannot reach {self.base_dir}: a parent directory lacks the x bit "
                "for it; use a base_dir under /tmp or leave it None"
            )
        client = self.base_dir / "client"
        client.mkdir(mode=0o755, exist_ok=True)
        self.key_file = client / "id_ed25519"
        self.known_hosts = client / "known_hosts"
        self.authorized_keys = client / "authorized_keys"
        self.inventory_path = self.base_dir / "inventory.toml"
        self.hosts = [
            SandboxHost(self, i, self.first_host_id + i, self.generations.get(self.first_host_id + i, "auto:4"))
            for i in range(self.n_hosts)
        ]
        for h in self.hosts:
            h.dir.mkdir(parents=True, exist_ok=True)
            h.dir.chmod(0o755)
            self._install_agent(h)
        sshd.keygen([self.key_file, *(h.host_key for h in self.hosts)])
        self.key_file.chmod(0o600)
        self.authorized_keys.write_text(sshd.public_key(self.key_file) + " ocp-sandbox\n")
        self.authorized_keys.chmod(0o644)
        for h in self.hosts:
            sshd.write_config(
                h.sshd_config,
                address=h.address,
                host_key=h.host_key,
                pid_file=h.dir / "sshd.pid",
                authorized_keys=self.authorized_keys,
                user=self.user,
            )
        self._start_all_sshd()
        self.refresh_known_hosts()
        self._write_inventory()
        self._start_agents()

    def _install_agent(self, h: SandboxHost) -> None:
        h.home.install(stop_seconds=float(self.stop_seconds), start_seconds=float(self.start_seconds))

    def _start_all_sshd(self) -> None:
        pending = []
        for h in self.hosts:
            h.port = sshd.free_port(h.address)
            pending.append((h, sshd.spawn(h.sshd_config, h.port, h.sshd_log)))
        for h, proc in pending:
            if sshd.wait_listening(proc, h.address, h.port):
                h._sshd = proc
            else:  # e.g. the port was taken in between: try again with new ports
                proc.kill()
                proc.wait()
                h._start_sshd(keep_port=False)

    def _start_agents(self) -> None:
        """Start every host's agent, AGENT_START_WAVE at a time: 1,000 at once on 2 cores once left one agent
        past its own wait_for_ready_timeout and the whole sandbox failed to come up (#20's 1,000-host bench)."""
        errors = []
        for first in range(0, len(self.hosts), AGENT_START_WAVE):
            errors += self._start_agents_of(self.hosts[first : first + AGENT_START_WAVE])
        if errors:
            raise SandboxError("agent start failed: " + "; ".join(errors[:5]))

    def _start_agents_of(self, hosts: list) -> list[str]:
        timeout = 15.0 + float(self.start_seconds)
        running = [
            (
                h,
                subprocess.Popen(
                    self._as_user(
                        h.home.ctl_argv("start", "ocp_agent")
                        if isinstance(h.home, AgentHomeV3)
                        else [str(h.ctl), "start"]
                    ),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=_CLEAN_ENV,
                    cwd=h.agent_home if isinstance(h.home, AgentHomeV3) else "/",
                ),
            )
            for h in hosts
        ]
        errors = []
        for h, proc in running:
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            if proc.returncode != 0:
                errors.append(f"{h.name}: exit {proc.returncode}: {(out + err).strip()}")
        return errors

    def _write_inventory(self) -> None:
        inventory = {
            "defaults": {"user": self.user, "key_file": str(self.key_file), "known_hosts": str(self.known_hosts)},
            "hosts": [
                {
                    "id": h.id,
                    "name": h.name,
                    "address": h.address,
                    "ssh_port": h.port,
                    "agent_home": str(h.agent_home),
                    **({} if h.declared == "auto" else {"agent_generation": h.declared}),
                }
                for h in self.hosts
            ],
        }
        self.inventory_path.write_text(tomli_w.dumps(inventory))
        self.inventory_path.chmod(0o644)


@atexit.register
def _stop_leftover_sandboxes() -> None:
    """A sandbox not stopped by its owner (a crashed test run) is still torn down at interpreter exit."""
    with _live_lock:
        left = list(_live)
    for sandbox in left:
        try:
            sandbox.stop()
        except Exception:
            pass
