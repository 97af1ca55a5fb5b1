"""Fuzzing the running API with schemathesis against its own /openapi.json: as ADMIN, as a read-only HOST_VIEWER and
without credentials, every endpoint, every phase — the stateful one follows the OpenAPI links (#22: host list ->
restart -> task -> subtask log, retry, rollback, skip, cancel) — a bounded number of examples. No 5xx; every response
matches its documented status and schema."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FUZZ_SEED, ApiServer

from deployments.auth import add_user
from steps.inventory import load_inventory

pytestmark = pytest.mark.usefixtures("prefect_api")
EXAMPLES = "25"
# OCP answers a valid request whose task's state forbids the operation with 400 (4007, 4009 rollback, 4010 skip), and
# a process operation on ocp_agentd or ocp_mgragent with 400/1003: schemathesis' positive_data_acceptance would call
# those "schema-valid request rejected". Stateful scenarios: host list -> restart -> task -> subtask, up to 10 calls.
CONFIG = """
# Half of the host ids drawn are the sandbox's, so restarts start and the links lead on to real tasks.
[dictionaries.hosts]
values = {hosts}

[parameters]
"path.host_id" = {{ dictionary = "hosts", probability = 0.5 }}
"body.hostIds[*]" = {{ dictionary = "hosts", probability = 0.5 }}

[phases.stateful]
max-steps = 10
generation.max-examples = 80

[[operations]]
include-method = "POST"
include-path-regex = "(/tasks/instances/.*|/agent/processes/.*)"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409"]
"""
ROLES = {"admin": "ADMIN", "viewer": "HOST_VIEWER", "anonymous": None}  # HOST_VIEWER: read-only (deployments/auth)
SEED = FUZZ_SEED  # new on every run (#22); in pytest's header and every failure; OCP_RESTART_FUZZ_SEED=N replays it


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from deployments.sandbox import Sandbox

    base = tmp_path_factory.mktemp("fuzz")
    for role in ROLES.values():
        if role:
            add_user(base / "users.toml", role.lower(), f"{role.lower()}-pass-1", [role])
    with Sandbox(2) as box:
        api = ApiServer(box.inventory_path, base / "users.toml", base).start()
        api.host_ids = sorted(load_inventory(box.inventory_path).hosts)
        try:
            yield api
        finally:
            api.kill()


def schemathesis(config: Path, *args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    return subprocess.run(
        [exe, "--no-color", "--config-file", str(config), "run", *args, "--max-examples", EXAMPLES, "--seed", SEED]
        + ["--checks", "all"],
        capture_output=True,
        text=True,
        timeout=600,
    )


def generated(output: str) -> int:
    match = re.search(r"(\d+) generated", output)
    return int(match.group(1)) if match else 0


def stateful_scenarios(output: str) -> int:
    """How many stateful scenarios ran (0 when the phase was skipped, e.g. for want of links)."""
    section = output.split("Stateful", 1)[-1] if "Stateful" in output else ""
    match = re.search(r"Scenarios:\s+(\d+)", section)
    return int(match.group(1)) if match else 0


@pytest.mark.parametrize("who", list(ROLES))
def test_fuzz_every_endpoint(server, who, tmp_path):
    """schemathesis (every phase, stateful included) finds no server error and no response outside the documented
    statuses and schemas, as each role and without credentials (#22)."""
    role = ROLES[who]
    headers = []
    if role:
        login = f"{role.lower()}:{role.lower()}-pass-1".encode()
        headers = ["-H", "Authorization: Basic " + base64.b64encode(login).decode()]
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.format(hosts=json.dumps(server.host_ids)))
    result = schemathesis(config, server.url + "/openapi.json", *headers)
    replay = f"seed {SEED}: replay with OCP_RESTART_FUZZ_SEED={SEED} pytest tests/test_fuzz.py\n"
    (tmp_path / "schemathesis.out").write_text(result.stdout)
    failures = result.stdout.split("FAILURES", 1)[-1][:8000] if "FAILURES" in result.stdout else ""
    assert result.returncode == 0, replay + failures + result.stdout[-3000:]
    assert generated(result.stdout) > 200, result.stdout[-2000:]
    scenarios = stateful_scenarios(result.stdout)
    assert scenarios > 0, "the stateful phase did not run:\n" + result.stdout[-3000:]
    links = re.search(r"API Links:\s+(\d+ covered / \d+)", result.stdout)
    print(
        f"schemathesis ({who}, seed {SEED}): {generated(result.stdout)} cases, {scenarios} stateful scenarios, "
        f"links {links.group(1) if links else '?'}, no failures"
    )


def test_serve_closes_a_connection_whose_headers_never_end(server):
    """`ocp-restart serve` runs uvicorn with the header deadline (#22): headers that never end are cut within
    HEADER_SECONDS, not held open."""
    import socket
    import time
    from urllib.parse import urlsplit

    from deployments.api.limits import HEADER_SECONDS

    with socket.create_connection(("127.0.0.1", urlsplit(server.url).port)) as conn:
        conn.settimeout(HEADER_SECONDS + 20)
        conn.sendall(b"GET /api/v2/time HTTP/1.1\r\nHost: api\r\n")
        started = time.monotonic()
        assert conn.recv(100) == b""
        assert time.monotonic() - started < HEADER_SECONDS + 5
