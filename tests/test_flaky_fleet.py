"""A flaky fleet (#22): of many real sshd hosts, some drop the SSH connection in the middle of Stop all and some
hang in it. The batch ends within the nodes' deadlines, exactly those hosts FAILED with the reason, and a retry
touches only them.

CI runs 30 hosts (3 drop + 3 hang); the issue's 100 (5 + 5):
``OCP_RESTART_FLAKY_HOSTS=100 OCP_RESTART_FLAKY_PER_KIND=5 .venv/bin/python -m pytest tests/test_flaky_fleet.py -s``.
"""

from __future__ import annotations

import json
import os
import re
import time

import pytest
from conftest import cli

from flows.settings import Settings

pytestmark = pytest.mark.usefixtures("prefect_api")

N_HOSTS = int(os.environ.get("OCP_RESTART_FLAKY_HOSTS", "30"))
N_FLAKY = int(os.environ.get("OCP_RESTART_FLAKY_PER_KIND", "3"))  # hosts that drop, and as many that hang
STOP_ALL_SECONDS = 6  # the Stop all node's deadline: a hung stop is killed at it
STOP, START = "Stop all OCP agent processes", "Start all OCP agent processes"


@pytest.fixture(scope="module")
def fleet():
    """N_HOSTS sandbox hosts, N_FLAKY of which drop their connection in Stop all and N_FLAKY hang in it."""
    from deployments.sandbox import Sandbox

    with Sandbox(N_HOSTS) as box:
        ids = [h.id for h in box.hosts]
        # Spread over the fleet, not the first hosts only, alternating: drop, hang, drop, ...
        step = N_HOSTS // (2 * N_FLAKY)
        drops = ids[0 : 2 * N_FLAKY * step : 2 * step][:N_FLAKY]
        hangs = ids[step : 2 * N_FLAKY * step : 2 * step][:N_FLAKY]
        box.drops, box.hangs = drops, hangs  # type: ignore[attr-defined]
        yield box


def set_faults(box, on: bool) -> None:
    for host_id in box.drops:
        (box.host(host_id).set_fault if on else box.host(host_id).clear_fault)("stop_drop")
    for host_id in box.hangs:
        (box.host(host_id).set_fault if on else box.host(host_id).clear_fault)("stop_hang")


def run(box, *extra: str) -> tuple[dict, float, str]:
    """``ocp-restart run`` on the whole fleet with a short Stop all deadline; (task instance, seconds, stderr)."""
    ids = ",".join(str(h.id) for h in box.hosts)
    started = time.monotonic()
    done = cli(
        "run",
        "--inventory",
        str(box.inventory_path),
        "--host-ids",
        ids,
        "--timeout",
        f"stop_all={STOP_ALL_SECONDS}",
        "--json",
        *extra,
    )
    assert done.stdout, done.stderr
    return json.loads(done.stdout), time.monotonic() - started, done.stderr


def by_host(instance: dict, name: str) -> dict[int, dict]:
    hosts = [int(h) for h in instance["context"]["listMap"]["host_ids"]]
    return {hosts[s["parallelIdx"]]: s for s in instance["subtasks"] if s["name"] == name}


def logs(instance: dict) -> dict[int, str]:
    from flows.store import TaskStore

    with TaskStore(Settings().store_url) as store:
        return {s["id"]: store.log(s["id"]) for s in instance["subtasks"]}


def audit_commands(box) -> dict[int, list[str]]:
    """Each host's agent CLI commands so far (its own audit log: 'stop', 'start', 'service ...')."""
    return {h.id: [what for _, edge, what in h.audit() if edge == "begin"] for h in box.hosts}


def check_failures(box, instance: dict) -> None:
    """Exactly the flaky hosts' Stop all FAILED, each with its reason in the subtask log."""
    stops = by_host(instance, STOP)
    failed = {h for h, s in stops.items() if s["status"] == "FAILED"}
    text = logs(instance)
    others = [s for s in instance["subtasks"] if s["status"] == "FAILED" and s["name"] != STOP]
    assert not others, [(s["name"], s["parallelIdx"], text[s["id"]][-3000:]) for s in others[:3]]
    assert failed == set(box.drops) | set(box.hangs), failed
    for host_id in box.drops:
        assert "connection lost while running" in text[stops[host_id]["id"]], text[stops[host_id]["id"]]
    for host_id in box.hangs:
        log = text[stops[host_id]["id"]]
        assert "did not finish within" in log and "killed its process group" in log, log
        assert "stopping ocp_agentd" in log, log  # the output it gave before the deadline


def test_without_a_threshold_the_batch_stops_before_start_all_and_retry_reruns_only_what_failed(fleet, home):
    """#22: 10% of the hosts drop the connection or hang in Stop all: the batch ends within Stop all's deadline,
    exactly those FAILED with the reason (and named on stderr), no Start all begun anywhere; once the faults are
    gone a retry stops only the failed hosts again (the rest are only started) and ends SUCCESSFUL."""
    set_faults(fleet, True)
    instance, seconds, stderr = run(fleet)
    assert instance["status"] == "FAILED"
    check_failures(fleet, instance)
    assert all(s["status"] == "PENDING" for s in by_host(instance, START).values())
    ran = [s for s in instance["subtasks"] if s["status"] != "PENDING"]
    assert seconds < sum({s["name"]: s["timeout"] for s in ran}.values()), seconds  # within the deadlines that ran
    flaky = set(fleet.drops) | set(fleet.hangs)
    assert all(f"sandbox-{h}" in stderr for h in sorted(flaky)[:10]), stderr  # the report names them (10 at most)
    text = logs(instance)
    hung = [
        re.search(r"did not finish within ([0-9.]+) s", text[by_host(instance, STOP)[h]["id"]]) for h in fleet.hangs
    ]
    set_faults(fleet, False)
    before = audit_commands(fleet)
    started = time.monotonic()
    done = cli("retry", str(instance["id"]), "--json")
    retried = json.loads(done.stdout)
    assert retried["status"] == "SUCCESSFUL", done.stderr
    after = audit_commands(fleet)
    for host in fleet.hosts:
        new = after[host.id][len(before[host.id]) :]
        assert new == (["stop", "start"] if host.id in flaky else ["start"]), (host.id, new)
        assert all(host.agent_pids().values()), host
    print(
        f"\nflaky fleet, no threshold: {N_HOSTS} hosts, {N_FLAKY} drop + {N_FLAKY} hang: FAILED in {seconds:.1f} s "
        f"(Stop all deadline {STOP_ALL_SECONDS} s; hung stops killed after {[float(m[1]) for m in hung if m]} s), "
        f"retry SUCCESSFUL in {time.monotonic() - started:.1f} s"
    )


def test_with_max_failed_hosts_exactly_the_flaky_hosts_fail_and_the_rest_succeed(fleet, home):
    """#22: with --max-failed-hosts at the number of flaky hosts, exactly they are FAILED (isolated, the reason
    in each log), every other host restarted (Finish SUCCESSFUL, new pids), the task SUCCESSFUL; an isolated host's
    agent was left running, not silently stopped; a retry after the faults are cleared runs commands on the
    isolated hosts only and ends with every subtask SUCCESSFUL."""
    set_faults(fleet, True)
    pids = {h.id: h.agent_pids() for h in fleet.hosts}
    instance, seconds, _ = run(fleet, "--max-failed-hosts", str(2 * N_FLAKY))
    set_faults(fleet, False)
    assert instance["status"] == "SUCCESSFUL"
    check_failures(fleet, instance)
    flaky = set(fleet.drops) | set(fleet.hangs)
    finishes = by_host(instance, "Finish OCP agent operation")
    assert {h for h, s in finishes.items() if s["status"] == "SUCCESSFUL"} == {h.id for h in fleet.hosts} - flaky
    for host in fleet.hosts:
        now = host.agent_pids()
        assert all(now.values()), host  # running everywhere: restarted, or left as it was
        same = now["ocp_agentd"] == pids[host.id]["ocp_agentd"]
        assert same == (host.id in flaky), (host, pids[host.id], now)
    before = audit_commands(fleet)
    started = time.monotonic()
    done = cli("retry", str(instance["id"]), "--json")
    retried = json.loads(done.stdout)
    assert retried["status"] == "SUCCESSFUL", done.stderr
    assert all(s["status"] == "SUCCESSFUL" for s in retried["subtasks"]), "an isolated host's step did not run"
    after = audit_commands(fleet)
    touched = {h for h in after if after[h] != before[h]}
    assert touched == flaky, touched  # the retry ran commands on the isolated hosts only
    assert all(after[h][len(before[h]) :] == ["stop", "start"] for h in flaky)
    print(
        f"\nflaky fleet, --max-failed-hosts {2 * N_FLAKY}: {N_HOSTS} hosts: task {instance['status']} in "
        f"{seconds:.1f} s, {N_HOSTS - len(flaky)} restarted, {len(flaky)} FAILED and left running; retry touched "
        f"{len(touched)} hosts, SUCCESSFUL in {time.monotonic() - started:.1f} s"
    )
