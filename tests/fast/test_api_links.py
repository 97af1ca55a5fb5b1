"""The OpenAPI description's links (#22), generated from the route table: from each task-creating POST to its task,
subtasks, logs and operations, from the host list to the host's operations; every link resolves."""

from __future__ import annotations

import re

import bcrypt
import pytest

from deployments.api import create_app
from flows.settings import Settings

TASK_CREATORS = [
    f"{prefix}/compute/hosts/{route}"
    for prefix in ("", "/api/v2")
    for route in ("batchRestartAgents", "batchStopAgents", "{host_id}/agent/restart", "{host_id}/agent/stop")
]
TASK_ROUTES = {
    ("get", "/api/v2/tasks/instances/{task_id}"),
    ("get", "/api/v2/tasks/instances/{task_id}/subtasks/{subtask_id}/log"),
    ("post", "/api/v2/tasks/instances/{task_id}/retry"),
    ("post", "/api/v2/tasks/instances/{task_id}/rollback"),
    ("post", "/api/v2/tasks/instances/{task_id}/subtasks/{subtask_id}/retry"),
    ("post", "/api/v2/tasks/instances/{task_id}/subtasks/{subtask_id}/skip"),
    ("post", "/api/v2/tasks/instances/{task_id}/subtasks/{subtask_id}/cancel"),
}


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    base = tmp_path_factory.mktemp("links")
    (base / "inventory.toml").write_text('[[hosts]]\nid = 1001\nname = "h1"\naddress = "127.0.0.2"\n')
    digest = bcrypt.hashpw(b"admin-pass-1", bcrypt.gensalt(rounds=4)).decode()
    (base / "users.toml").write_text(f'[users.admin]\npassword_hash = "{digest}"\nroles = ["ADMIN"]\n')
    settings = Settings(home=base, inventory=base / "inventory.toml", users=base / "users.toml")
    return create_app(settings).openapi()


def operations(schema: dict) -> dict[str, tuple[str, str, dict]]:
    """operationId -> (method, path, operation)."""
    return {
        op["operationId"]: (method, path, op) for path, item in schema["paths"].items() for method, op in item.items()
    }


@pytest.mark.parametrize("path", TASK_CREATORS)
def test_every_task_creating_post_links_to_its_task_and_the_task_operations(schema, path):
    """A restart's or stop's 200 leads to GET task, its subtask log, retry, rollback, retry/skip/cancel a subtask."""
    links = schema["paths"][path]["post"]["responses"]["200"]["links"]
    by_id = operations(schema)
    targets = {(by_id[link["operationId"]][0], by_id[link["operationId"]][1]) for link in links.values()}
    assert targets == TASK_ROUTES
    for link in links.values():
        assert link["parameters"]["task_id"] == "$response.body#/data/id"


def test_every_link_names_an_operation_and_gives_each_of_its_path_parameters(schema):
    """No dangling link: the target exists and every {parameter} of its path has a value (schemathesis refuses
    a schema whose links do not resolve)."""
    by_id = operations(schema)
    count = 0
    for _, path, op in by_id.values():
        for link in op["responses"].get("200", {}).get("links", {}).values():
            _, target_path, _ = by_id[link["operationId"]]
            assert set(re.findall(r"{(\w+)}", target_path)) == set(link.get("parameters", {})), (path, target_path)
            count += 1
    assert count > 100


def test_the_host_list_leads_to_restarts_and_the_batch_bodies(schema):
    """From the host list to a host's restart (its id in the path) and to a batch restart (its id in the body)."""
    links = schema["paths"]["/api/v2/compute/hosts"]["get"]["responses"]["200"]["links"]
    by_id = operations(schema)
    by_path = {by_id[name][1]: link for name, link in links.items()}
    assert by_path["/api/v2/compute/hosts/{host_id}/agent/restart"]["parameters"] == {
        "host_id": "$response.body#/data/contents/0/id"
    }
    assert by_path["/api/v2/compute/hosts/batchRestartAgents"]["requestBody"] == {
        "hostIds": ["$response.body#/data/contents/0/id"]
    }
