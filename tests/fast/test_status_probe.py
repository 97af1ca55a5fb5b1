"""``GET /api/status``: OCP's health keyword, no credentials, fast whatever the modules do."""

from __future__ import annotations

import threading
import time
import warnings

import pytest
from test_api_app import FakeLauncher, settings  # noqa: F401  (the fixture)

from deployments.api import create_app
from deployments.api.health import Health
from flows.errors import StoreUnavailableError
from flows.store import TaskStore

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


class DownStore:
    """A store whose database is unreachable."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store

    def __getattr__(self, name):
        return getattr(self.store, name)

    def locks(self):
        raise StoreUnavailableError("the task store sqlite:///x is unavailable: disk I/O error")


@pytest.fixture
def store(tmp_path):
    with TaskStore(f"sqlite:///{tmp_path / 'tasks.db'}") as s:
        yield s


def test_okay_without_credentials(settings, store):  # noqa: F811
    """Every module up: 200 and the available keyword, as bare text."""
    client = TestClient(create_app(settings, launcher=FakeLauncher(), store=store))
    for query in ("", "?includeUnavailableComponent=true"):
        response = client.get("/api/status" + query)
        assert (response.status_code, response.text) == (200, "okay")
        assert response.headers["content-type"].startswith("text/plain")


def test_bad_with_the_store_down_and_its_name_on_request(settings, store):  # noqa: F811
    """The store unreadable: 503 and the unavailable keyword; with includeUnavailableComponent, `bad store`."""
    client = TestClient(create_app(settings, launcher=FakeLauncher(), store=DownStore(store)))  # type: ignore[arg-type]
    assert (client.get("/api/status").status_code, client.get("/api/status").text) == (503, "bad")
    assert client.get("/api/status?includeUnavailableComponent=true").text == "bad store"


def test_the_keywords_come_from_the_settings(settings, store):  # noqa: F811
    tuned = settings.model_copy(update={"status_ok": "UP", "status_bad": "DOWN"})
    assert TestClient(create_app(tuned, launcher=FakeLauncher(), store=store)).get("/api/status").text == "UP"
    down = TestClient(create_app(tuned, launcher=FakeLauncher(), store=DownStore(store)))  # type: ignore[arg-type]
    assert down.get("/api/status?includeUnavailableComponent=true").text == "DOWN store"


def test_the_deployment_launcher_adds_prefect_as_a_module(settings, store, monkeypatch):  # noqa: F811
    """Flows run as Prefect deployments: a Prefect API that does not answer is a module down."""
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # the discard port: nothing listens
    deployed = settings.model_copy(update={"launcher": "deployment"})
    client = TestClient(create_app(deployed, launcher=FakeLauncher(), store=store))
    assert client.get("/api/status?includeUnavailableComponent=true").text == "bad prefect"


def test_a_hung_check_answers_bad_in_time_and_starts_no_second_run():
    """A check that never returns: `bad` after the timeout, every time, with one thread stuck, not one a probe."""
    release, runs = threading.Event(), []

    def hangs():
        runs.append(1)
        release.wait(10)

    health = Health({"store": hangs, "ok": lambda: None}, timeout=0.2)
    try:
        for _ in range(3):
            started = time.monotonic()
            assert health.down() == ["store"]
            assert time.monotonic() - started < 1.0
        assert runs == [1]
    finally:
        release.set()
