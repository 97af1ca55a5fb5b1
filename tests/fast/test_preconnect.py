"""Connections opened while the CLI's Prefect server starts (#23): a failed one is no error, only no connection."""

from __future__ import annotations

import socket
import time

from flows import preconnect
from steps.inventory import parse_inventory


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once this socket is closed


def _hosts(port: int):
    raw = {
        "defaults": {"user": "u", "key_file": "/nonexistent/key", "known_hosts": "/nonexistent/known_hosts"},
        "hosts": [
            {"id": 1, "name": "a", "address": "127.0.0.1", "ssh_port": port, "agent_home": "/opt/agent"},
            {"id": 2, "name": "b", "address": "127.0.0.1", "ssh_port": port, "agent_home": "/opt/agent"},
        ],
    }
    return parse_inventory(raw, "test").hosts


def test_a_host_that_refuses_the_connection_gives_none_and_the_step_connects_itself():
    """#23: a connection that failed ahead is dropped silently: take() gives None (the step then connects and
    reports its own error), once per host, and a run with nothing offered gets None too."""
    hosts = _hosts(_closed_port())
    connections = preconnect.Preconnect(
        list(hosts.values()), accept_new_host_keys=False, deadline=time.monotonic() + 5, workers=4
    )
    preconnect.offer(4242, connections)
    try:
        assert preconnect.take(4242, hosts[1], time.monotonic() + 5) is None
        assert preconnect.take(4242, hosts[1], time.monotonic() + 5) is None  # handed out once
        assert preconnect.take(4343, hosts[2], time.monotonic() + 5) is None  # another task: nothing offered
    finally:
        preconnect.withdraw(4242)
    assert preconnect.take(4242, hosts[2], time.monotonic() + 5) is None  # withdrawn
