#!/usr/bin/env python3
"""ocp_agent_ctl.py -- the sandbox's simulated older-generation OCP agent control script.

    cd AGENT_HOME && python ocp_agent_ctl.py start|stop|restart ocp_agent|pos_proxy
    python ocp_agent_ctl.py status | version

``ocp_agent`` is the whole agent (ocp_agentd.py start|stop base); ``pos_proxy`` alone needs a running
ocp_agentd. ``status`` prints ``NAME PID|- running|stopped`` per process; ``version`` the agent's version. Exit 0
when done, 1 when it failed (its reason on stderr), 2 on bad arguments.
"""

# percent formatting, as the agent of its era wrote it
# ruff: noqa: UP031

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "libs"))
import agentlib as lib  # noqa: E402
import ocp_agentd  # noqa: E402

USAGE = "usage: ocp_agent_ctl.py start|stop|restart ocp_agent|pos_proxy | status | version"


def pos_proxy(action):
    if lib.running(lib.AGENTD) is None:
        print("ocp_agentd is not running: start ocp_agent first", file=sys.stderr)
        return 1
    if action in ("stop", "restart"):
        old = lib.stop_child(lib.POS_PROXY)
        print(f"pos_proxy stopped (pid {old})")
    if action in ("start", "restart"):
        if lib.running(lib.POS_PROXY) is None:
            lib.start_child(lib.POS_PROXY)
        give_up = time.time() + lib.wait_seconds()
        while time.time() < give_up:
            pid = lib.running(lib.POS_PROXY)
            if pid and lib.listening(pid):
                print("pos_proxy started (pid %d)" % pid)
                return 0
            time.sleep(0.02)
        print(f"pos_proxy does not listen within {lib.wait_seconds()} s", file=sys.stderr)
        return 1
    return 0


def main(argv):
    lib.log("ocp_agent_ctl", " ".join(argv[1:]))
    if argv[1:] == ["status"]:
        for name in lib.PROCESSES:
            pid = lib.running(name)
            print("{} {} {}".format(name, pid or "-", "running" if pid else "stopped"))
        return 0
    if argv[1:] == ["version"]:
        print(lib.version())
        return 0
    if len(argv) != 3 or argv[1] not in ("start", "stop", "restart") or argv[2] not in ("ocp_agent", "pos_proxy"):
        print(USAGE, file=sys.stderr)
        return 2
    action, target = argv[1], argv[2]
    if target == "pos_proxy":
        return pos_proxy(action)
    if action in ("stop", "restart") and ocp_agentd.stop() != 0:
        return 1
    return ocp_agentd.start() if action in ("start", "restart") else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
