"""OpenAPI links, generated from the route table (#22): what a 200 answer hands to the next call, so a client (and
schemathesis' stateful phase) can go from a host list to a restart, from a restart to its task, from a task to its
subtasks' logs and operations.

A route's answer provides values when its response model is one of ``PROVIDERS``; a link goes to every other route
whose path uses the provider's key parameter and whose path parameters the answer provides all of. A route whose
body is a batch request (hostIds) is linked from every answer that provides a host id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from flows.models import Envelope, HostAgentProcessPage, TaskInstance, TaskPage, WrappedTaskInstance

from .models import HostPage


@dataclass(frozen=True)
class Provider:
    """What a 200 answer of this model provides: path parameter -> JSON pointer into the body; ``key`` must be
    among the target's path parameters (a task page leads to tasks, not to every route that takes a host id)."""

    key: str
    values: dict[str, str]


_TASK = Provider("task_id", {"task_id": "/data/id", "subtask_id": "/data/subtasks/0/id"})
PROVIDERS: dict[Any, Provider] = {
    Envelope[TaskInstance]: _TASK,
    Envelope[WrappedTaskInstance]: _TASK,
    Envelope[TaskPage]: Provider("task_id", {"task_id": "/data/contents/0/id"}),
    Envelope[HostPage]: Provider("host_id", {"host_id": "/data/contents/0/id"}),
    Envelope[HostAgentProcessPage]: Provider(
        "process", {"host_id": "/data/contents/0/hostId", "process": "/data/contents/0/id"}
    ),
}
# The batch routes take their hosts in the body; their request body schema is written by hand (routers/restart.py).
_BATCH_BODY = re.compile(r"/compute/hosts/batch\w+Agents$")


def add_links(schema: dict, routes: list[BaseRoute]) -> None:
    """Add ``links`` to the 200 answer of every providing operation in ``schema`` (made from ``routes``)."""
    operations = [
        (route, method.lower()) for route in routes if isinstance(route, APIRoute) for method in route.methods
    ]
    for source, source_method in operations:
        provider = PROVIDERS.get(source.response_model)
        if provider is None:
            continue
        links = {}
        for target, _ in operations:
            if target is source:
                continue
            link = _link(provider, target)
            if link is not None:
                links[target.unique_id] = {"operationId": target.unique_id, **link}
        if links:
            answer = schema["paths"][source.path_format][source_method]["responses"]["200"]
            answer["links"] = links


def _link(provider: Provider, target: APIRoute) -> dict | None:
    params = re.findall(r"{(\w+)}", target.path_format)
    if provider.key in params and all(p in provider.values for p in params):
        return {"parameters": {p: "$response.body#" + provider.values[p] for p in params}}
    host = provider.values.get("host_id")
    if host is not None and not params and _BATCH_BODY.search(target.path_format):
        return {"requestBody": {"hostIds": ["$response.body#" + host]}}
    return None
