#!/usr/bin/env python3
"""ocp_agentd.py -- the sandbox's simulated older-generation OCP agent supervisor.

    cd AGENT_HOME && PYTHONPATH=libs ./ocp_agentd.py start|stop base

``start base`` starts the daemon (``run base``: it names itself ocp_agentd, writes run/ocp_agentd.pid, starts
pos_proxy, the exporters and the workers with a pid file each) and waits until they run and pos_proxy listens;
``stop base`` TERMs the daemon (which stops its processes) and, if no daemon runs, the processes the pid files name
that are this home's. A pid file naming any live process counts as a running agent (the naive check of its era).
"""

# percent formatting, as the agent of its era wrote it
# ruff: noqa: UP031

import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "libs"))
import agentlib as lib  # noqa: E402


def start():
    pid = lib.read_pid(lib.AGENTD)
    if pid and lib.alive(pid):
        print("ocp_agentd is already running (pid %d)" % pid)
        return 0
    if lib.fault("start_fail"):
        lib.log(lib.AGENTD, "start failed: simulated (faults/start_fail)")
        print("ocp_agentd failed to start: see log/ocp_agentd.log", file=sys.stderr)
        return 1
    lib.remove_pid(lib.AGENTD)
    lib.spawn([sys.executable, os.path.abspath(__file__), "run", "base"], lib.AGENTD)
    give_up = time.time() + lib.wait_seconds()
    while time.time() < give_up:
        if lib.healthy():
            print("ocp_agentd started (pid %d)" % lib.running(lib.AGENTD))
            return 0
        time.sleep(0.05)
    print(f"ocp_agentd did not come up within {lib.wait_seconds()} s: see log/ocp_agentd.log", file=sys.stderr)
    return 1


def stop():
    if lib.fault("stop_hang"):
        print(f"stopping ocp_agentd (pid {lib.read_pid(lib.AGENTD)})", flush=True)
        while True:
            time.sleep(3600)
    pid = lib.running(lib.AGENTD)
    if pid is not None:
        if not lib.stop_pid(pid, lib.wait_seconds(), lib.AGENTD):
            print("ocp_agentd (pid %d) did not stop within %s s" % (pid, lib.wait_seconds()), file=sys.stderr)
            return 1
    for name in lib.CHILDREN:  # a dead daemon's processes
        lib.stop_child(name)
    lib.remove_pid(lib.AGENTD)
    print("ocp_agentd stopped")
    return 0


def run():
    lib.set_comm(lib.AGENTD)
    lib.write_pid(lib.AGENTD, os.getpid())
    lib.log(lib.AGENTD, "ocp_agentd %s started (pid %d)" % (lib.version(), os.getpid()))
    children = {name: lib.start_child(name) for name in lib.CHILDREN}

    def terminate(signum, frame):
        for name in lib.CHILDREN:
            lib.stop_child(name)
        lib.remove_pid(lib.AGENTD)
        lib.log(lib.AGENTD, "ocp_agentd stopped")
        os._exit(0)

    signal.signal(signal.SIGTERM, terminate)
    while True:  # reap what ends (not respawned: a dead pos_proxy stays dead until restarted)
        try:
            os.wait()
        except ChildProcessError:
            signal.pause()
        except InterruptedError:
            pass
        children.clear()


def main(argv):
    if len(argv) != 3 or argv[2] != "base" or argv[1] not in ("start", "stop", "run"):
        print("usage: ocp_agentd.py start|stop base", file=sys.stderr)
        return 2
    return {"start": start, "stop": stop, "run": run}[argv[1]]()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
