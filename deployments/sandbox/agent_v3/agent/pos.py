#!/usr/bin/env python3
"""pos_proxy -- the sandbox's simulated command channel of the older OCP agent: a TCP listener on
conf/pos_proxy_address:conf/pos_proxy_port (62888 in the field; the sandbox gives each host a free port of its own
address) that answers each connection with one line. faults/pos_proxy_mute: it runs but never listens."""

# percent formatting, as the agent of its era wrote it
# ruff: noqa: UP031

import os
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "libs"))
import agentlib as lib  # noqa: E402

lib.set_comm(lib.POS_PROXY)
if lib.fault("pos_proxy_mute"):
    while True:
        time.sleep(3600)
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((lib.conf("pos_proxy_address", "0.0.0.0"), int(lib.conf("pos_proxy_port", "62888"))))
server.listen(16)
lib.log(lib.POS_PROXY, "pos_proxy %s listening on %s (pid %d)" % (lib.version(), server.getsockname(), os.getpid()))
while True:
    conn, _ = server.accept()
    try:
        conn.sendall(b'{"successful":true,"data":"pos_proxy %s"}\n' % lib.version().encode())
    finally:
        conn.close()
