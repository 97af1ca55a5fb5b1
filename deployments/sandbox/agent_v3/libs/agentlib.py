"""The sandbox's simulated older-generation (Python, OCP <= 3.1) OCP agent: what ocp_agentd.py and
ocp_agent_ctl.py share. Python 3 standard library only.

Processes (pid files run/NAME.pid, logs log/NAME.log): ocp_agentd (the supervisor, this package's daemon),
pos_proxy (agent/pos.py: OCP's command channel, a TCP listener), ocp_exporter and node_exporter, and the workers
obstat2, ob_logtailer and ob_cleaner (bin/NAME -> sleep: they cost nothing). Each process names itself (comm) and
runs by an absolute path under the agent home. Faults are files in faults/: start_fail, stop_hang, pos_proxy_mute.
"""

# percent formatting, as the agent of its era wrote it
# ruff: noqa: UP031

import os
import signal
import subprocess
import sys
import time

HOME = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(HOME, "run")
LOG = os.path.join(HOME, "log")
AGENTD = "ocp_agentd"
POS_PROXY = "pos_proxy"
SLEEPERS = ("ocp_exporter", "node_exporter", "obstat2", "ob_logtailer", "ob_cleaner")
CHILDREN = (POS_PROXY,) + SLEEPERS
PROCESSES = (AGENTD,) + CHILDREN
MARKER = "OCP_SANDBOX_HOME"  # marks every process started from here (the sandbox's teardown finds them)


def conf(name, default):
    try:
        with open(os.path.join(HOME, "conf", name)) as f:
            return f.read().strip() or default
    except OSError:
        return default


def fault(name):
    return os.path.exists(os.path.join(HOME, "faults", name))


def version():
    return conf("version", "3.1.2-20210812221645")


def wait_seconds():
    return float(conf("wait_seconds", "10"))


def log(name, line):
    with open(os.path.join(LOG, name + ".log"), "a") as f:
        f.write("{} {}\n".format(time.strftime("%Y-%m-%d %H:%M:%S"), line))


def set_comm(name):
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(name)
    except OSError:
        pass


def read_pid(name):
    try:
        with open(os.path.join(RUN, name + ".pid")) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def write_pid(name, pid):
    path = os.path.join(RUN, name + ".pid")
    with open(path + ".tmp", "w") as f:
        f.write("%d\n" % pid)
    os.rename(path + ".tmp", path)


def remove_pid(name):
    try:
        os.unlink(os.path.join(RUN, name + ".pid"))
    except OSError:
        pass


def alive(pid):
    """A live process that is not a zombie (any process: the agent's own check is this naive)."""
    if not pid:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rpartition(") ")[2][:1]
    except OSError:
        return False
    return state not in ("Z", "X")


def ours(pid, name):
    """``pid`` is this home's ``name``: its comm and an absolute path under the agent home on its command line."""
    if not alive(pid):
        return False
    try:
        with open("/proc/%d/comm" % pid) as f:
            comm = f.read().strip()
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmdline = f.read().decode(errors="replace")
    except OSError:
        return False
    return comm == name and (HOME + "/") in cmdline


def running(name):
    pid = read_pid(name)
    return pid if pid and ours(pid, name) else None


def env():
    e = dict(os.environ)
    e[MARKER] = HOME
    e["PYTHONPATH"] = os.path.join(HOME, "libs")
    return e


def spawn(argv, name):
    out = open(os.path.join(LOG, name + ".out.log"), "a")
    proc = subprocess.Popen(
        argv, cwd=HOME, env=env(), stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
    )
    out.close()
    return proc


def start_child(name):
    """Start one child detached (pos_proxy by python, the rest as bin/NAME infinity); its pid file once it runs."""
    if name == POS_PROXY:
        proc = spawn([sys.executable, os.path.join(HOME, "agent", "pos.py")], name)
    else:
        proc = spawn([os.path.join(HOME, "bin", name), "infinity"], name)
    write_pid(name, proc.pid)
    log(AGENTD, "started %s (pid %d)" % (name, proc.pid))
    return proc


def listening(pid):
    """The TCP ports ``pid`` listens on (its sockets' inodes in /proc/net/tcp, state 0A)."""
    inodes = set()
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        with open("/proc/net/tcp") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return []
    return [int(p[1].split(":")[1], 16) for p in (line.split() for line in lines) if p[3] == "0A" and p[9] in inodes]


def stop_pid(pid, seconds, name):
    """TERM ``pid`` (this home's ``name``), wait up to ``seconds`` for it to go; True if it went. Gone means no
    longer ``name`` of this home, not no longer a live pid: pids wrap within seconds at 1,000 sandbox hosts."""
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return True
    give_up = time.time() + seconds
    while time.time() < give_up:
        if not ours(pid, name):
            return True
        time.sleep(0.02)
    return not ours(pid, name)


def stop_child(name, seconds=5.0):
    pid = running(name)
    if pid is not None and not stop_pid(pid, seconds, name) and ours(pid, name):
        os.kill(pid, signal.SIGKILL)
    remove_pid(name)
    return pid


def healthy():
    """Every process runs; pos_proxy listens."""
    if not all(running(n) for n in PROCESSES):
        return False
    return bool(listening(running(POS_PROXY)))
