"""Shared pieces of the benchmark: results, measured subprocesses (wall, CPU, peak RSS), the machine's CPU,
agent readiness between measurements, and stage spans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # prefect, ansible-playbook, py-spy of this interpreter
STAGES = ("prepare", "pos_proxy", "stop", "start", "finish")
_TICK = os.sysconf("SC_CLK_TCK")
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass
class Result:
    """One measurement. Times in seconds; RSS in MB (2**20 bytes)."""

    name: str
    wall: float
    ok: bool
    note: str = ""
    stages: dict[str, float] = field(default_factory=dict)  # stage -> first begin .. last end over its hosts
    startup: float | None = None  # launch -> the first stage begins
    gaps: float | None = None  # sum of the pauses between stages (barriers, scheduling)
    tail: float | None = None  # the last stage ends -> the process exits (or the result is seen)
    rss_mb: float | None = None  # peak RSS (VmHWM) of the measured main process
    tree_rss_mb: float | None = None  # peak of the summed RSS of the measured process tree (sampled)
    cpu_s: float | None = None  # CPU seconds of the measured process tree (user + system)
    machine_cpu_s: float | None = None  # busy CPU seconds of the whole machine (sshd, agents, everything)
    restarted: int = 0  # hosts whose three agent processes all have new pids afterwards
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


# -- the machine's CPU ---------------------------------------------------------------------------------------


def machine_busy_seconds() -> float:
    """Busy CPU seconds of all cores since boot (/proc/stat: everything but idle and iowait)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / _TICK


def process_table() -> dict[int, tuple[int, str, float]]:
    """pid -> (ppid, command name, CPU seconds including the children it reaped: utime+stime+cutime+cstime)."""
    table: dict[int, tuple[int, str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                head, rest = fh.read().rsplit(")", 1)
        except OSError:
            continue
        fields = rest.split()
        table[int(entry)] = (int(fields[1]), head.split("(", 1)[1], sum(int(x) for x in fields[11:15]) / _TICK)
    return table


def _subtree(table: dict[int, tuple[int, str, float]], root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    tree, frontier = {root}, [root]
    while frontier:
        for child in children.get(frontier.pop(), []):
            if child not in tree:
                tree.add(child)
                frontier.append(child)
    return tree


class MachineCpu:
    """Busy CPU of the whole machine over a block, split into ours (this process and its descendants: sandbox
    sshd and what runs under it, our CLI / servers, Ansible; a finished child counts for the parent that reaped
    it) and foreign (everything else: other users of the machine, kernel threads), the latter by command name."""

    def __enter__(self) -> MachineCpu:
        self._busy, self._table = machine_busy_seconds(), process_table()
        return self

    def __exit__(self, *exc: object) -> None:
        self.busy = machine_busy_seconds() - self._busy
        start, end, me = self._table, process_table(), os.getpid()
        ours_start, ours_end = _subtree(start, me), _subtree(end, me)
        self.ours = sum(end[p][2] for p in ours_end) - sum(start[p][2] for p in ours_start)
        foreign: dict[str, float] = {}
        for pid in (set(start) | set(end)) - ours_start - ours_end:
            before, after = start.get(pid), end.get(pid)
            comm = (after or before)[1]
            foreign[comm] = foreign.get(comm, 0.0) + (after[2] if after else 0.0) - (before[2] if before else 0.0)
        self.foreign = max(0.0, self.busy - self.ours)
        self.foreign_by_comm = {
            c: round(v, 2) for c, v in sorted(foreign.items(), key=lambda kv: -kv[1])[:8] if v >= 0.1
        }

    def record(self, result: Result) -> None:
        result.machine_cpu_s = round(self.busy, 2)
        result.extra.update(
            ours_tree_cpu_s=round(self.ours, 2),
            foreign_cpu_s=round(self.foreign, 2),
            foreign_by_comm=self.foreign_by_comm,
        )


QUIET_TIMEOUT = 90.0  # wait_quiet's default limit; bench.paths lowers it to finish in time on a shared machine


def wait_quiet(max_cores: float = 0.4, window: float = 2.0, timeout: float | None = None) -> float:
    """Wait until the whole machine uses less than ``max_cores`` over ``window`` seconds (e.g. a Prefect
    server still writing the last run's events, or someone else's job), at most ``timeout`` (default
    QUIET_TIMEOUT) seconds; returns the seconds waited."""
    timeout = QUIET_TIMEOUT if timeout is None else timeout
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        busy = machine_busy_seconds()
        time.sleep(window)
        if (machine_busy_seconds() - busy) / window < max_cores:
            break
    return round(time.monotonic() - started, 1)


def idle_after(pid: int, max_cores: float = 0.05, window: float = 1.0, timeout: float = 120.0) -> tuple[float, float]:
    """(seconds, CPU seconds) that process ``pid`` keeps working after a run until it is idle."""
    started, cpu0 = time.monotonic(), process_cpu_seconds(pid)
    while time.monotonic() - started < timeout:
        cpu = process_cpu_seconds(pid)
        time.sleep(window)
        if (process_cpu_seconds(pid) - cpu) / window < max_cores:
            break
    return round(time.monotonic() - started - window, 1), round(process_cpu_seconds(pid) - cpu0, 2)


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one live process (its threads included)."""
    with open(f"/proc/{pid}/stat") as fh:
        rest = fh.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / _TICK


def status_kb(pid: int, key: str) -> int | None:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM); None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def descendants(root: int) -> set[int]:
    """``root`` and every process below it (one scan of /proc)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parent[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        current = frontier.pop()
        for pid, ppid in parent.items():
            if ppid == current and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    return tree


class RssSampler:
    """Samples the summed RSS of a process tree (rescanned every second, RSS read every 0.25 s) and the root's
    VmHWM. Cheap enough not to disturb a CPU-bound run (a /proc scan per second)."""

    def __init__(self, root: int, interval: float = 0.25, rescan: float = 1.0) -> None:
        self.root, self.interval, self.rescan = root, interval, rescan
        self.tree_peak_kb = 0
        self.root_hwm_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        tree, scanned = {self.root}, 0.0
        while not self._stop.is_set():
            if time.monotonic() - scanned > self.rescan:
                tree, scanned = descendants(self.root), time.monotonic()
            total = sum(status_kb(pid, "VmRSS") or 0 for pid in tree)
            self.tree_peak_kb = max(self.tree_peak_kb, total)
            self.root_hwm_kb = max(self.root_hwm_kb, status_kb(self.root, "VmHWM") or 0)
            self._stop.wait(self.interval)


# -- measured subprocesses -----------------------------------------------------------------------------------


@dataclass
class Proc:
    """A finished, measured subprocess."""

    returncode: int
    wall: float
    launched: float  # epoch seconds
    ended: float  # epoch seconds
    cpu_s: float  # the process and the descendants it waited for (wait4)
    rss_mb: float  # the process's own peak (VmHWM, sampled; wait4's ru_maxrss would include our own RSS at fork)
    tree_rss_mb: float
    machine_cpu_s: float
    stdout: str
    stderr: str
    machine: MachineCpu | None = None


def run_measured(
    argv: list[str], env: dict[str, str], *, log_dir: Path, label: str, timeout: float = 1800.0, cwd: Path = ROOT
) -> Proc:
    """Run ``argv`` to the end; wall time, CPU and peak RSS from wait4 and /proc sampling. Output goes to
    ``log_dir/label.{out,err}`` and is returned too. Killed (by its pid, and its own process group) on timeout."""
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / f"{label}.out", log_dir / f"{label}.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err, MachineCpu() as machine:
        launched, t0 = time.time(), time.monotonic()
        proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
        )
        killer = threading.Timer(timeout, _kill_group, args=(proc.pid,))
        killer.start()
        with RssSampler(proc.pid) as sampler:
            _, status, usage = os.wait4(proc.pid, 0)
        killer.cancel()
        wall, ended = time.monotonic() - t0, time.time()
    proc.returncode = os.waitstatus_to_exitcode(status)
    _kill_group(proc.pid)  # leftovers of its own session (none expected)
    return Proc(
        returncode=proc.returncode,
        wall=wall,
        launched=launched,
        ended=ended,
        cpu_s=usage.ru_utime + usage.ru_stime,
        rss_mb=sampler.root_hwm_kb / 1024,
        tree_rss_mb=sampler.tree_peak_kb / 1024,
        machine_cpu_s=machine.busy,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
        machine=machine,
    )


def _kill_group(pgid: int) -> None:
    """Kill the process group of a process we started with start_new_session (its pgid is its pid)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM a process we started (and its own group), SIGKILL after ``grace``."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    _kill_group(proc.pid)
    if proc.poll() is None:
        proc.wait(timeout=5)


def base_env(**extra: str) -> dict[str, str]:
    """This environment without Prefect/ocp-restart settings that would leak in, plus offline defaults."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "OCP_RESTART_")) and k not in ("ANSIBLE_CONFIG",)
    }
    env.update(DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


# -- the sandbox's agents ------------------------------------------------------------------------------------


def agent_pids(sandbox) -> dict[int, dict[str, tuple[int, str] | None]]:
    """host id -> process name -> (pid, start time) of each agent process (None: not running)."""
    return {h.id: {name: _identity(pid) for name, pid in h.agent_pids().items()} for h in sandbox.hosts}


def _identity(pid: int | None) -> tuple[int, str] | None:
    """(pid, start time in clock ticks): a pid alone repeats within a 1,000-host run (pid_max 32768 wraps), which
    once counted a restarted host as not restarted."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            return pid, f.read().rpartition(") ")[2].split()[19]
    except (OSError, IndexError):
        return None


def restarted_hosts(before: dict, after: dict) -> int:
    """Hosts whose every agent process runs, each a process other than before (pid and start time)."""
    count = 0
    for host_id, old in before.items():
        new = after.get(host_id, {})
        if all(new.get(name) is not None and new.get(name) != pid for name, pid in old.items()):
            count += 1
    return count


def ensure_ready(sandbox, *, timeout: float = 60.0) -> int:
    """Make every agent run (start it locally where a process is missing); wait; then wait until the machine
    is quiet (wait_quiet). Returns how many hosts needed a start."""
    fixed = 0
    for host in sandbox.hosts:
        if None in host.agent_pids().values():
            host.agentctl("stop")
            host.agentctl("start")
            fixed += 1
    deadline = time.monotonic() + timeout
    while any(None in pids.values() for pids in agent_pids(sandbox).values()):
        if time.monotonic() > deadline:
            raise RuntimeError("sandbox agents did not all come back")
        time.sleep(0.2)
    wait_quiet()
    return fixed


# -- stage spans ---------------------------------------------------------------------------------------------


def spans_to_result(result: Result, spans: dict[str, tuple[float, float]], launched: float, ended: float) -> None:
    """Fill stages, startup, gaps and tail from per-stage (first begin, last end) epoch times."""
    ordered = [spans[s] for s in STAGES if s in spans]
    if not ordered:
        return
    result.stages = {s: round(spans[s][1] - spans[s][0], 3) for s in STAGES if s in spans}
    result.startup = round(ordered[0][0] - launched, 3)
    result.gaps = round(sum(nxt[0] - prev[1] for prev, nxt in zip(ordered, ordered[1:])), 3)
    result.tail = round(ended - ordered[-1][1], 3)


def mb(kb: float | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)
