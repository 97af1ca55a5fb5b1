"""A client of a running ``ocp-restart serve``: what ``ocp-restart run --server URL`` uses.

Handing a restart to a server that is already up skips this process's Prefect import and flow-run start-up
(~2 s of a 10-host run) and lets the server, which already knows the hosts, run it. It speaks the same OCP API
as any other client; credentials come from ``--user``/``$OCP_RESTART_USER`` and ``$OCP_RESTART_PASSWORD``,
else from ``~/.netrc``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx

from flows.errors import ServerError

RESTART_PATH = "/api/v2/compute/hosts/batchRestartAgents"
# A subtask's fields in batchRestartAgents' answer (the seed's shape), in its order.
SUBMITTED_SUBTASK = (
    "id",
    "name",
    "className",
    "description",
    "nodeType",
    "operation",
    "parallelIdx",
    "prohibitRollback",
    "runTime",
    "seriesId",
    "status",
    "timeout",
    "upstreams",
    "downstreams",
)


class RemoteServer:
    """One ocp-restart server. A context manager that closes its connection."""

    def __init__(self, url: str, user: str | None = None, password: str | None = None, timeout: float = 30.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ServerError(f"the server URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        auth = httpx.BasicAuth(user, password or "") if user else None  # None: httpx reads ~/.netrc
        self._client = httpx.Client(base_url=self.url, auth=auth, timeout=timeout, trust_env=True)
        self._contexts: dict[int, dict] = {}  # task id -> the context its POST answered with
        self._hosts: dict[int, int] = {}  # task id -> the task-level hostId its POST answered with

    def __enter__(self) -> RemoteServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def _call(self, method: str, path: str, **kwargs) -> dict:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ServerError(
                f"the ocp-restart server {self.url} cannot be reached: {exc or type(exc).__name__}"
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or not body.get("successful", False):
            error = body.get("error") or {}
            message = error.get("message") or response.text[:300] or response.reason_phrase
            raise ServerError(
                f"the ocp-restart server {self.url} answered {response.status_code}: {message}",
                response.status_code,
                int(error.get("code") or 1003),
            )
        return body["data"]

    def restart(self, host_ids: list[int], **extensions: int | float | None) -> dict:
        """POST batchRestartAgents; the task instance as recorded (before anything ran)."""
        body = {"hostIds": host_ids, **{k: v for k, v in extensions.items() if v is not None}}
        return self.submit(RESTART_PATH, body)

    def submit(self, path: str, body: dict | None = None) -> dict:
        """POST one of the agent's task operations (``path`` under the server); the task instance as recorded."""
        instance = self._call("POST", path, **({"json": body} if body is not None else {}))
        self._contexts[instance["id"]] = instance["context"]
        if "hostId" in instance:
            self._hosts[instance["id"]] = instance["hostId"]
        return instance

    def task(self, task_id: int) -> dict:
        """The task as it is now, in the shape its POST answered with (what ``run --json`` prints either way)."""
        found = as_submitted(self._call("GET", f"/api/v2/tasks/instances/{task_id}"), self._contexts.get(task_id))
        if task_id in self._hosts:  # a single-host operation's task-level hostId
            found = {"id": found["id"], "hostId": self._hosts[task_id], **found}
        return found

    def host_ids(self) -> list[int]:
        """Every host the server knows, by id."""
        ids, page = [], 1
        while True:
            data = self._call("GET", "/api/v2/compute/hosts", params={"page": page, "size": 100})
            ids += [host["id"] for host in data["contents"]]
            if page * 100 >= data["page"]["totalElements"]:
                return ids
            page += 1

    def follow(self, task_id: int, interval: float) -> Iterator[dict]:
        """The task instance every ``interval`` seconds, until it is no longer RUNNING (the last one included)."""
        while True:
            instance = self.task(task_id)
            yield instance
            if instance["status"] != "RUNNING":
                return
            time.sleep(interval)


def as_submitted(detail: dict, context: dict | None) -> dict:
    """A task detail (OCP's WrappedTaskInstance: ``creator {id, name}``, times, no ``context``) in the shape
    batchRestartAgents answers (the seed's: ``creator`` a string, ``context`` from the POST, subtasks without times)."""
    rollback = "true" if detail.get("prohibitRollback") else "false"
    return {
        "id": detail["id"],
        "name": detail["name"],
        "creator": detail["creator"]["name"],
        "executor": detail["executor"],
        "operation": detail["operation"],
        "startTime": detail["startTime"],
        "status": detail["status"],
        "type": detail["type"],
        "taskDefinitionId": detail.get("taskDefinitionId", -1),
        "context": context
        or {"listMap": {}, "stringMap": {"prohibit_rollback": rollback}, "parallel": False, "parallelIdx": -1},
        "subtasks": [{field: sub[field] for field in SUBMITTED_SUBTASK} for sub in detail["subtasks"]],
    }
