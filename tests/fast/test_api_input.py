"""Hostile and odd inputs the fuzzing of #22 found, each answered with OCP's error envelope and nothing done."""

from __future__ import annotations

import json
import warnings

import bcrypt
import pytest

from deployments.api import create_app
from flows.settings import Settings

with warnings.catch_warnings():  # starlette asks for httpx2, which this project does not install
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

INVENTORY = '[[hosts]]\nid = 1001\nname = "h1"\naddress = "127.0.0.2"\n'
AUTH = ("admin", "admin-pass-1")


class FakeLauncher:
    def __init__(self) -> None:
        self.launched: list[int] = []

    def launch(self, task_id, host_ids, options) -> None:
        self.launched.append(task_id)

    def shutdown(self, reason, grace) -> None:
        pass


@pytest.fixture
def api(tmp_path):
    (tmp_path / "inventory.toml").write_text(INVENTORY)
    digest = bcrypt.hashpw(AUTH[1].encode(), bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "users.toml").write_text(f'[users.admin]\npassword_hash = "{digest}"\nroles = ["ADMIN"]\n')
    settings = Settings(home=tmp_path, inventory=tmp_path / "inventory.toml", users=tmp_path / "users.toml")
    launcher = FakeLauncher()
    client = TestClient(create_app(settings, launcher=launcher), raise_server_exceptions=False)
    client.auth = AUTH
    client.launched = launcher.launched
    return client


def restart(api, body: bytes):
    return api.post(
        "/api/v2/compute/hosts/batchRestartAgents", content=body, headers={"Content-Type": "application/json"}
    )


class TestBatchRestartBody:
    @pytest.mark.parametrize("host_id", ["1001\n", "1001\r", " 1001", "1001 ", "١٠٠١", "+1001"])
    def test_a_host_id_string_must_be_decimal_digits_only(self, api, host_id):
        """Regression (#22): "1001\\n" was accepted (a `$` matched before the newline) and a restart ran."""
        response = restart(api, json.dumps({"hostIds": [host_id]}).encode())
        assert response.status_code == 400 and response.json()["error"]["code"] == 1001, response.text
        assert api.launched == []

    def test_json_nested_deeper_than_python_recurses_is_malformed_input(self, api):
        """Regression (#22): 10,000 nested arrays answered 500 (RecursionError); it is bad input, 400 / 1003."""
        response = restart(api, b'{"hostIds": ' + b"[" * 10_000 + b"]" * 10_000 + b"}")
        assert response.status_code == 400 and response.json()["error"] == {
            "code": 1003,
            "message": "Malformed JSON request",
        }
        assert api.launched == []


class TestQueryIntegers:
    @pytest.mark.parametrize("query", ["size=5.0", "page=1.0", "size=1e1", "size=%205", "size=0x10"])
    def test_a_paging_integer_is_decimal_digits(self, api, query):
        """Regression (#22): size=5.0 and page=1.0 were taken as integers; Spring refuses them."""
        response = api.get(f"/api/v2/tasks/instances?{query}")
        assert response.status_code == 400 and response.json()["error"]["code"] == 1001, response.text

    @pytest.mark.parametrize("query", ["size=abc&size=5", "size=5&size=abc", "size=5&size=6", "page=1&page=1"])
    def test_a_one_value_parameter_given_twice_is_refused_whatever_the_order(self, api, query):
        """Regression (#22): with a repeated parameter the last one won (size=abc&size=5 -> 200)."""
        response = api.get(f"/api/v2/tasks/instances?{query}")
        assert response.status_code == 400, response.text
        assert "size" in response.json()["error"]["message"] or "page" in response.json()["error"]["message"]

    def test_list_parameters_may_repeat_and_unknown_ones_are_ignored(self, api):
        """OCP's StringArray parameters (status, sort) repeat; a parameter the route does not know is ignored."""
        response = api.get("/api/v2/tasks/instances?status=RUNNING&status=FAILED&sort=id&sort=name&x=1&x=2&size=-3")
        assert response.status_code == 200, response.text


class TestBodyLimits:
    def test_a_body_declared_too_big_is_refused_before_it_is_read(self, api):
        """Regression (#22): with Basic auth a 10 MB body was read and parsed; now 413 from its Content-Length."""
        response = restart(api, b"[" + b" " * (2 << 20) + b"]")
        assert response.status_code == 413 and response.json()["error"]["code"] == 1003
        assert "at most 1048576 bytes" in response.json()["error"]["message"]

    def test_a_chunked_body_is_cut_off_once_it_is_too_big(self, api):
        """A body without Content-Length (chunked) is refused as soon as more than the limit has arrived."""

        def chunks():
            for _ in range(40):
                yield b" " * 65536

        response = api.post(
            "/api/v2/compute/hosts/batchRestartAgents", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 413 and "so far" in response.json()["error"]["message"]
        assert api.launched == []

    def test_a_body_that_never_ends_times_out(self):
        """Regression (#22): a chunked body that never ended held its connection with no timeout: now 408."""
        import asyncio

        import httpx
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import PlainTextResponse
        from starlette.routing import Route

        from deployments.api.envelope import ApiFailure, failure
        from deployments.api.limits import BodyLimits

        async def echo(request: Request):
            return PlainTextResponse(str(len(await request.body())))

        async def refuse(request: Request, exc: ApiFailure):
            return failure(request, exc.status, exc.code, exc.message)

        app = BodyLimits(
            Starlette(routes=[Route("/", echo, methods=["POST"])], exception_handlers={ApiFailure: refuse}), seconds=0.3
        )

        async def stalls():
            yield b"{"
            await asyncio.sleep(3600)

        async def post():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                return await client.post("/", content=stalls())

        response = asyncio.run(asyncio.wait_for(post(), 10))
        assert response.status_code == 408, response.text
        assert response.json()["error"]["message"] == "The request body did not arrive within 0.3 s"
