"""The sandbox itself: real sshd hosts on loopback, a simulated OCP agent, real paramiko. No mocks."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import stat
import time
import tomllib
from pathlib import Path

import paramiko
import pytest

from deployments.sandbox import Sandbox, SandboxHost
from deployments.sandbox.procs import is_alive  # noqa: E402


@pytest.fixture
def sandbox():
    with Sandbox(3) as sb:
        yield sb


def connect(sb: Sandbox, host: SandboxHost, timeout: float = 5.0) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(sb.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        host.address,
        port=host.port,
        username=sb.user,
        key_filename=str(sb.key_file),
        look_for_keys=False,
        allow_agent=False,
        timeout=timeout,
        banner_timeout=timeout,
        auth_timeout=timeout,
    )
    return client


def run(client: paramiko.SSHClient, command: str, timeout: float = 15.0) -> tuple[int | None, str, str]:
    """Exit status (None if still running at the deadline), stdout, stderr: read against an overall deadline."""
    chan = client.get_transport().open_session()
    chan.exec_command(command)
    out, err = b"", b""
    deadline = time.monotonic() + timeout
    while True:
        while chan.recv_ready():
            out += chan.recv(65536)
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)
        if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
            status = chan.recv_exit_status()
            break
        if time.monotonic() > deadline:
            status = None
            break
        time.sleep(0.005)
    chan.close()
    return status, out.decode(), err.decode()


def ctl(host: SandboxHost, *args: str) -> str:
    return shlex.join([str(host.ctl), *args])


def status_pids(message: dict) -> dict[str, int]:
    return {"ocp_agentd": message["pid"], **{k: v["pid"] for k, v in message["services"].items()}}


def wait_for(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_three_hosts_come_up(sandbox):
    """Three hosts get distinct loopback addresses and ports, a 0600 key, known_hosts lines and an inventory."""
    assert [h.id for h in sandbox.hosts] == [1001, 1002, 1003]
    assert [h.address for h in sandbox.hosts] == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert stat.S_IMODE(sandbox.key_file.stat().st_mode) == 0o600
    inventory = tomllib.loads(sandbox.inventory_path.read_text())
    assert inventory["defaults"] == {
        "user": sandbox.user,
        "key_file": str(sandbox.key_file),
        "known_hosts": str(sandbox.known_hosts),
    }
    assert inventory["hosts"] == [
        {"id": h.id, "name": h.name, "address": h.address, "ssh_port": h.port, "agent_home": str(h.agent_home)}
        for h in sandbox.hosts
    ]
    lines = sandbox.known_hosts.read_text().splitlines()
    assert [line.split()[:2] for line in lines] == [[f"[{h.address}]:{h.port}", "ssh-ed25519"] for h in sandbox.hosts]
    for h in sandbox.hosts:
        assert sandbox.host(h.id) is h
        assert all(h.agent_pids().values())


def test_status_over_ssh_matches_pid_files(sandbox):
    """paramiko (RejectPolicy + known_hosts) runs `ocp_agentctl status`: ready, with the pid files' three pids."""
    for h in sandbox.hosts:
        with connect(sandbox, h) as client:
            status, out, err = run(client, ctl(h, "status"))
        assert status == 0, err
        doc = json.loads(out)
        assert doc["successful"] is True
        assert doc["message"]["state"] == "running" and doc["message"]["ready"] is True
        assert status_pids(doc["message"]) == h.agent_pids()
        assert {pid for pid, _ in h.processes()} >= set(h.agent_pids().values())


def test_stop_then_start_over_ssh_gives_new_pids(sandbox):
    """`stop` then `start` over SSH: status fails in between, start returns promptly, every pid is new."""
    h = sandbox.hosts[0]
    before = h.agent_pids()
    with connect(sandbox, h) as client:
        assert run(client, ctl(h, "stop")) == (0, '{"successful":true,"message":"ok","error":""}', "")
        assert h.agent_pids() == dict.fromkeys(before)
        status, out, err = run(client, ctl(h, "status"))
        assert status == 255 and out == ""
        assert json.loads(err) == {
            "successful": False,
            "message": None,
            "error": "Module=agent, kind=UNAVAILABLE, code=agentd_not_running; ",
        }
        t0 = time.monotonic()
        status, out, _ = run(client, ctl(h, "start"), timeout=10)
        assert time.monotonic() - t0 < 3.0
        assert status == 0 and json.loads(out) == {"successful": True, "message": "ok", "error": ""}
        status, out, _ = run(client, ctl(h, "status"))
    after = status_pids(json.loads(out)["message"])
    assert after == h.agent_pids()
    assert all(after[name] and after[name] != before[name] for name in before)
    assert not any(is_alive(pid) for pid in before.values())


def test_killed_service_is_respawned(sandbox):
    """Killing ocp_mgragent makes ocp_agentd respawn it with a new pid."""
    h = sandbox.hosts[1]
    before = h.agent_pids()
    os.kill(before["ocp_mgragent"], signal.SIGKILL)
    new = wait_for(lambda: (p := h.agent_pids()["ocp_mgragent"]) not in (None, before["ocp_mgragent"]) and p)
    assert new != before["ocp_mgragent"]
    assert h.agent_pids()["ocp_agentd"] == before["ocp_agentd"]
    assert h.agent_pids()["ocp_monagent"] == before["ocp_monagent"]


def test_service_stop_start_restarts_only_that_service(sandbox):
    """`service stop/start ocp_mgragent` gives mgragent a new pid; agentd keeps its pid; bad names are refused."""
    h = sandbox.hosts[2]
    before = h.agent_pids()
    with connect(sandbox, h) as client:
        assert run(client, ctl(h, "service", "stop", "ocp_mgragent"))[0] == 0
        status, out, _ = run(client, ctl(h, "status"))
        message = json.loads(out)["message"]
        assert status == 0 and message["ready"] is False
        assert message["services"]["ocp_mgragent"] == {"state": "stopped", "pid": 0}
        time.sleep(0.1)
        assert h.agent_pids()["ocp_mgragent"] is None  # not respawned while stopped
        assert run(client, ctl(h, "service", "start", "ocp_mgragent"))[0] == 0
        status, out, err = run(client, ctl(h, "service", "stop", "ocp_agentd"))
        assert status == 255 and json.loads(err)["successful"] is False
        status, out, err = run(client, ctl(h, "bogus"))
        assert status == 1 and err.startswith("usage: ocp_agentctl ")  # an argument error: exit 1
    after = h.agent_pids()
    assert after["ocp_agentd"] == before["ocp_agentd"] and after["ocp_monagent"] == before["ocp_monagent"]
    assert after["ocp_mgragent"] not in (None, before["ocp_mgragent"])


def test_stop_hang_blocks(sandbox):
    """Fault stop_hang: `stop` prints a progress line and is still running after 2 s; agentd is untouched."""
    h = sandbox.hosts[0]
    before = h.agent_pids()
    h.set_fault("stop_hang")
    with connect(sandbox, h) as client:
        status, out, _ = run(client, ctl(h, "stop"), timeout=2.0)
    assert status is None
    assert out == f"stopping ocp_agentd (pid {before['ocp_agentd']})\n"
    assert h.agent_pids() == before
    assert "sleep" in {comm for _, comm in h.processes() if _ not in before.values()}


def test_start_fail(sandbox):
    """Fault start_fail: `start` of a stopped agent exits 255 with the agentd_exited_quickly JSON error."""
    h = sandbox.hosts[0]
    h.set_fault("start_fail")
    with connect(sandbox, h) as client:
        assert run(client, ctl(h, "start"))[0] == 0  # already running: a no-op success
        assert run(client, ctl(h, "stop"))[0] == 0
        status, out, err = run(client, ctl(h, "start"))
        assert (status, out) == (255, "")
        assert json.loads(err) == {
            "successful": False,
            "message": None,
            "error": "Module=agent, kind=INTERNAL, code=agentd_exited_quickly; ",
        }
        h.clear_fault("start_fail")
        assert run(client, ctl(h, "start"))[0] == 0
    assert all(h.agent_pids().values())


def test_delays_slow_down_stop_and_start():
    """stop_seconds / start_seconds delay agentd's stop and start; status is not ready while it starts."""
    with Sandbox(1, stop_seconds=0.4, start_seconds=0.4) as sb:
        h = sb.hosts[0]
        t0 = time.monotonic()
        assert h.agentctl("stop").returncode == 0
        t1 = time.monotonic()
        assert h.agentctl("start").returncode == 0
        t2 = time.monotonic()
        assert 0.4 <= t1 - t0 < 2.0 and 0.4 <= t2 - t1 < 2.0
        h.set_delays(stop_seconds=0, start_seconds=0)
        t0 = time.monotonic()
        assert h.agentctl("stop").returncode == 0 and h.agentctl("start").returncode == 0
        assert time.monotonic() - t0 < 0.4


def test_down_and_up(sandbox):
    """down() refuses connections while the agent keeps running; up() serves again on the same port; freeze hangs."""
    h = sandbox.hosts[1]
    before, port = h.agent_pids(), h.port
    client = connect(sandbox, h)
    h.down()
    with pytest.raises((paramiko.SSHException, OSError, EOFError)):
        run(client, "true", timeout=2)  # the open connection dropped
    client.close()
    with pytest.raises((paramiko.SSHException, OSError)):
        connect(sandbox, h, timeout=2)
    assert h.agent_pids() == before
    h.up()
    assert h.port == port
    with connect(sandbox, h) as client:
        assert run(client, "true") == (0, "", "")
    h.down(freeze=True)
    t0 = time.monotonic()
    with pytest.raises((paramiko.SSHException, OSError, EOFError)):
        connect(sandbox, h, timeout=0.5)  # TCP connects, but no banner: a hang, not a refusal
    assert time.monotonic() - t0 >= 0.4
    h.up()
    with connect(sandbox, h) as client:
        assert run(client, "true") == (0, "", "")


def test_replace_host_key_is_rejected(sandbox):
    """replace_host_key() makes paramiko raise BadHostKeyException against the old known_hosts."""
    h = sandbox.hosts[2]
    h.replace_host_key()
    with pytest.raises(paramiko.BadHostKeyException):
        connect(sandbox, h)
    sandbox.refresh_known_hosts()
    with connect(sandbox, h) as client:
        assert run(client, "true")[0] == 0


def test_exit_leaves_no_process_behind():
    """__exit__ kills every agent process, every sshd (and session) and a hung `stop`, and removes the temp dir."""
    seen: set[int] = set()
    with Sandbox(3) as sb:
        h = sb.hosts[0]
        h.set_fault("stop_hang")
        client = connect(sb, h)
        assert run(client, ctl(h, "stop"), timeout=0.5)[0] is None
        for host in sb.hosts:
            seen.update(pid for pid in host.agent_pids().values() if pid)
            seen.update(pid for pid, _ in host.processes())
            seen.add(host.sshd_pid)
        base = sb.base_dir
    client.close()
    assert len(seen) >= 3 * 5
    assert [pid for pid in seen if is_alive(pid)] == []
    assert not base.exists()


def test_idle_agents_use_no_cpu():
    """Idle agents (5 hosts) burn no CPU: their processes' utime+stime does not grow over 1 s."""

    def cpu_ticks(pids):
        total = 0
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])
        return total

    with Sandbox(5) as sb:
        pids = [pid for h in sb.hosts for pid, _ in h.processes()] + [h.sshd_pid for h in sb.hosts]
        first = cpu_ticks(pids)
        time.sleep(1.0)
        assert cpu_ticks(pids) - first <= 1  # clock ticks (1/100 s)


def test_host_refuses_unknown_key(sandbox):
    """A host not in known_hosts is refused by RejectPolicy; a wrong client key is refused by sshd."""
    h = sandbox.hosts[0]
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.SSHException):
        client.connect(
            h.address,
            port=h.port,
            username=sandbox.user,
            key_filename=str(sandbox.key_file),
            look_for_keys=False,
            allow_agent=False,
            timeout=5,
        )
    client.close()
    other = paramiko.Ed25519Key.from_private_key_file(str(h.host_key)) if os.access(h.host_key, os.R_OK) else None
    if other is not None:
        client = paramiko.SSHClient()
        client.load_host_keys(str(sandbox.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        with pytest.raises(paramiko.AuthenticationException):
            client.connect(
                h.address,
                port=h.port,
                username=sandbox.user,
                pkey=other,
                look_for_keys=False,
                allow_agent=False,
                timeout=5,
            )
        client.close()
    with socket.create_connection((h.address, h.port), timeout=2) as s:
        assert s.recv(64).startswith(b"SSH-2.0-OpenSSH")
