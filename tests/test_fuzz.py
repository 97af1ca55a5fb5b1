"""Fuzzing the running API with schemathesis against its own /openapi.json: with credentials and without,
every endpoint, a bounded number of examples. No 5xx; every response matches its documented status and schema."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FUZZ_SEED, ApiServer

from deployments.auth import add_user

pytestmark = pytest.mark.usefixtures("prefect_api")
EXAMPLES = "25"
SEED = FUZZ_SEED  # new on every run (#22); in pytest's header and every failure; OCP_RESTART_FUZZ_SEED=N replays it


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from deployments.sandbox import Sandbox

    base = tmp_path_factory.mktemp("fuzz")
    add_user(base / "users.toml", "fuzzer", "fuzzer-pass-1", ["ADMIN"])
    with Sandbox(2) as box:
        api = ApiServer(box.inventory_path, base / "users.toml", base).start()
        try:
            yield api
        finally:
            api.kill()


def schemathesis(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    return subprocess.run(
        [exe, "run", *args, "--max-examples", EXAMPLES, "--seed", SEED, "--checks", "all"],
        capture_output=True,
        text=True,
        timeout=600,
    )


def generated(output: str) -> int:
    match = re.search(r"(\d+) generated", output)
    return int(match.group(1)) if match else 0


@pytest.mark.parametrize("credentials", [pytest.param(True, id="admin"), pytest.param(False, id="anonymous")])
def test_fuzz_every_endpoint(server, credentials):
    """schemathesis finds no server error and no response outside the documented statuses and schemas."""
    headers = []
    if credentials:
        headers = ["-H", "Authorization: Basic " + base64.b64encode(b"fuzzer:fuzzer-pass-1").decode()]
    result = schemathesis(server.url + "/openapi.json", *headers)
    replay = f"seed {SEED}: replay with OCP_RESTART_FUZZ_SEED={SEED} pytest tests/test_fuzz.py\n"
    assert result.returncode == 0, replay + result.stdout[-6000:]
    assert generated(result.stdout) > 200, result.stdout[-2000:]
    who = "admin" if credentials else "anonymous"
    print(f"schemathesis ({who}, seed {SEED}): {generated(result.stdout)} examples, no failures")
