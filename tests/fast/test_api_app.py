"""The API app in-process (no server, no hosts): routes tested alone through ``app.dependency_overrides``, state
from the one Settings object, and lapsed leases reaped in the background instead of by reads."""

from __future__ import annotations

import threading
import time
import warnings

import bcrypt
import pytest

from deployments.api import create_app, current_user, get_store
from deployments.auth import User
from flows.models import SubtaskStatus, TaskStatus
from flows.plan import build_plan
from flows.settings import Settings
from flows.store import TaskStore

with warnings.catch_warnings():  # starlette asks for httpx2, which this project does not install
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

INVENTORY = """
[[hosts]]
id = 1001
name = "h1"
address = "127.0.0.2"

[[hosts]]
id = 1002
name = "h2"
address = "127.0.0.3"
"""


class FakeLauncher:
    """Records what it was asked to launch; runs nothing."""

    def __init__(self) -> None:
        self.launched: list[int] = []

    def launch(self, task_id, host_ids, options, *, template="batch_restart") -> None:
        self.launched.append(task_id)

    def shutdown(self, reason, grace) -> None:
        pass


class SpyStore:
    """A TaskStore that records which of its methods were called."""

    def __init__(self, store: TaskStore) -> None:
        self.store, self.called = store, []

    def __getattr__(self, name):
        self.called.append(name)
        return getattr(self.store, name)


@pytest.fixture
def settings(tmp_path) -> Settings:
    """Settings as a caller builds them: a home, an inventory, a users file (the environment has no say here)."""
    (tmp_path / "inventory.toml").write_text(INVENTORY)
    digest = bcrypt.hashpw(b"admin-pass-1", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "users.toml").write_text(f'[users.admin]\npassword_hash = "{digest}"\nroles = ["ADMIN"]\n')
    return Settings(
        home=tmp_path,
        inventory=tmp_path / "inventory.toml",
        users=tmp_path / "users.toml",
        executor="10.0.0.1",
        login_limit=3,
        trusted_proxies="10.9.0.0/16",
    )


@pytest.fixture
def store(tmp_path):
    with TaskStore(f"sqlite:///{tmp_path / 'tasks.db'}") as s:
        yield s


def task_by(store: TaskStore, creator: str, hosts: list[int]) -> int:
    return store.create_task(build_plan(hosts), creator=creator, executor="10.0.0.1")


def poll(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.02)


class TestDependencyOverrides:
    def test_a_route_runs_as_an_overridden_user_on_an_overridden_store(self, settings, store):
        """GET a task as a user without TASK:READ (no credentials sent): their own task 200, another's 404."""
        mine, theirs = task_by(store, "carol", [1001]), task_by(store, "dave", [1002])
        app = create_app(settings, launcher=FakeLauncher())
        app.dependency_overrides[current_user] = lambda: User("carol", ("PROFILE",))
        app.dependency_overrides[get_store] = lambda: store
        client = TestClient(app)
        own = client.get(f"/api/v2/tasks/instances/{mine}")
        assert own.status_code == 200 and own.json()["data"]["creator"]["name"] == "carol"
        other = client.get(f"/api/v2/tasks/instances/{theirs}")
        assert other.status_code == 404 and other.json()["error"]["code"] == 4001  # as a missing task (#22)
        listed = client.get("/api/v2/tasks/instances").json()["data"]["contents"]
        assert [task["id"] for task in listed] == [mine]

    def test_roles_still_apply_to_an_overridden_user(self, settings):
        """require(HOST:READ) checks the overriding user's roles: a task manager gets 403 on hosts."""
        app = create_app(settings, launcher=FakeLauncher())
        app.dependency_overrides[current_user] = lambda: User("tm", ("TASK_MANAGER",))
        response = TestClient(app).get("/api/v2/compute/hosts")
        assert response.status_code == 403 and "HOST:READ is needed" in response.json()["error"]["message"]

    def test_without_an_override_credentials_are_checked(self, settings):
        """The real current_user: no credentials 401 with the challenge; a good password 200."""
        client = TestClient(create_app(settings, launcher=FakeLauncher()))
        refused = client.get("/api/v2/compute/hosts")
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic")
        assert client.get("/api/v2/compute/hosts", auth=("admin", "admin-pass-1")).status_code == 200

    def test_an_unexpected_error_is_a_500_envelope_naming_only_its_type(self, settings):
        """A store failing in a way nobody foresaw: OCP's error envelope, 500 / 1003, no message or traceback."""

        class Broken:
            def load(self, task_id):
                raise RuntimeError("secret details")

        app = create_app(settings, launcher=FakeLauncher())
        app.dependency_overrides[current_user] = lambda: User("admin", ("ADMIN",))
        app.dependency_overrides[get_store] = lambda: Broken()
        response = TestClient(app, raise_server_exceptions=False).get("/api/v2/tasks/instances/1")
        body = response.json()
        assert response.status_code == 500 and body["successful"] is False and body["server"] == "10.0.0.1"
        assert body["error"] == {"code": 1003, "message": "Unhandled exception, type=RuntimeError"}


class TestSettings:
    def test_the_app_takes_its_limits_from_the_settings_given(self, settings, monkeypatch):
        """Login limit and trusted proxies come from the Settings passed in, not from the environment."""
        monkeypatch.setenv("OCP_RESTART_LOGIN_LIMIT", "99")
        monkeypatch.setenv("OCP_RESTART_TRUSTED_PROXIES", "")
        state = create_app(settings, launcher=FakeLauncher()).state.api
        assert state.throttle.limit == 3 and [str(n) for n in state.trusted_proxies] == ["10.9.0.0/16"]
        assert state.server == "10.0.0.1" and sorted(state.inventory.hosts) == [1001, 1002]

    def test_a_fourth_bad_password_is_throttled_at_the_given_limit(self, settings):
        """login_limit=3: three 401s counting down RateLimit-Remaining, then 429 with Retry-After."""
        client = TestClient(create_app(settings, launcher=FakeLauncher()))
        answers = [client.get("/api/v2/info", auth=("admin", "wrong-pass")) for _ in range(4)]
        assert [a.status_code for a in answers] == [401, 401, 401, 429]
        assert [a.headers["RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
        assert int(answers[3].headers["Retry-After"]) > 0


class TestReadsNeverWrite:
    @pytest.mark.parametrize(
        "path",
        [
            "/api/v2/tasks/instances/{task}",
            "/api/v2/tasks/instances",
            "/api/v2/compute/hosts",
            "/api/v2/compute/hosts/1001",
            "/api/v2/compute/hosts/1001/agent",
            "/compute/hosts/1001/agent/processes",
            "/api/v2/tasks/instances/{task}/subtasks/{subtask}/log",
        ],
    )
    def test_a_get_does_not_reap(self, settings, store, path):
        """No GET calls reap_expired (or any other write) on the store: a read is a read transaction."""
        task = task_by(store, "admin", [1001])
        spy = SpyStore(store)
        app = create_app(settings, launcher=FakeLauncher())
        app.dependency_overrides[current_user] = lambda: User("admin", ("ADMIN",))
        app.dependency_overrides[get_store] = lambda: spy
        subtask = store.load(task).subtasks[0].id
        response = TestClient(app).get(path.format(task=task, subtask=subtask))
        assert response.status_code == 200, response.text
        readers = {
            "load",
            "load_many",
            "task_ids",
            "locks",
            "host_agent_statuses",
            "host_agent_status",
            "last_pids",
            "log",
        }
        assert spy.called and set(spy.called) <= readers


class TestLeaseReaper:
    def test_the_server_reaps_a_lapsed_lease_without_any_request(self, settings, store):
        """A task whose runner stopped renewing its lease is FAILED by the server's background loop, hosts freed."""
        task = task_by(store, "admin", [1001])
        assert store.renew_lease(task, -1.0, "gone-runner", claim=True)  # its runner vanished a second ago
        app = create_app(settings, launcher=FakeLauncher(), store=store, reap_seconds=0.05)
        with TestClient(app):
            poll(lambda: store.load(task).task.status is TaskStatus.FAILED, 5, "the lapsed task is reaped")
        record = store.load(task)
        assert store.locks() == {}
        assert any(sub.status is SubtaskStatus.FAILED for sub in record.subtasks)

    def test_the_loop_stops_with_the_server(self, settings, store):
        """Leaving the lifespan stops the reaper thread; a task lapsing afterwards stays RUNNING."""
        app = create_app(settings, launcher=FakeLauncher(), store=store, reap_seconds=0.05)
        with TestClient(app):
            assert any(t.name == "lease-reaper" for t in threading.enumerate())
        assert not any(t.name == "lease-reaper" for t in threading.enumerate())
        task = task_by(store, "admin", [1002])
        store.renew_lease(task, -1.0, "gone-runner", claim=True)
        time.sleep(0.2)
        assert store.load(task).task.status is TaskStatus.RUNNING

    def test_a_failing_store_is_logged_once_and_tried_again(self, caplog):
        """The store down for a while: one warning, the loop goes on, its recovery is logged."""
        from deployments.api.reaper import reap_until

        stop, calls = threading.Event(), []

        class Flaky:
            def reap_expired(self):
                calls.append(1)
                if len(calls) == 5:
                    stop.set()
                if len(calls) < 4:
                    raise ConnectionError("the store is down")
                return []

        with caplog.at_level("WARNING", logger="deployments.api.reaper"):
            reap_until(stop, Flaky(), 0.001)
        assert len(calls) == 5
        messages = [r.getMessage() for r in caplog.records]
        assert len(messages) == 2 and "the store is down" in messages[0] and "works again" in messages[1]
