"""The launch seam: how the API starts the flow run for a task it has just recorded.

- ``embedded`` (default): the flow runs in a thread of the API process.
- ``deployment``: a flow run of the Prefect deployment ``OCP_RESTART_DEPLOYMENT`` (default
  ``batch-restart-agents/batch-restart``) is created for a worker to pick up; needs a real Prefect server.
Chosen by ``OCP_RESTART_LAUNCHER`` or ``ocp-restart serve --launcher``.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Protocol

from flows.options import RestartOptions

log = logging.getLogger(__name__)
DEFAULT_DEPLOYMENT = "batch-restart-agents/batch-restart"


class Launcher(Protocol):
    def launch(self, task_id: int, host_ids: list[int], options: RestartOptions) -> None: ...


class EmbeddedLauncher:
    """Runs each flow in a daemon thread of this process."""

    def __init__(self, inventory: str, store_url: str | None) -> None:
        self.inventory, self.store_url = inventory, store_url
        self.threads: dict[int, threading.Thread] = {}

    def launch(self, task_id: int, host_ids: list[int], options: RestartOptions) -> None:
        thread = threading.Thread(
            target=self._run, args=(task_id, host_ids, options), name=f"ocp-task-{task_id}", daemon=True
        )
        self.threads[task_id] = thread
        thread.start()

    def _run(self, task_id: int, host_ids: list[int], options: RestartOptions) -> None:
        from flows.restart import batch_restart_agents

        try:
            batch_restart_agents(
                host_ids=host_ids, inventory=self.inventory, options=options, task_id=task_id, store_url=self.store_url
            )
        except BaseException:  # the store has the details; the API process must live on
            log.exception("flow run for task %s ended with an exception", task_id)
        finally:
            self.threads.pop(task_id, None)


class DeploymentLauncher:
    """Creates a flow run of a Prefect deployment; a worker (or ``flow.serve``) executes it."""

    def __init__(self, inventory: str, store_url: str | None, deployment: str | None = None) -> None:
        self.inventory, self.store_url = inventory, store_url
        self.deployment = deployment or os.environ.get("OCP_RESTART_DEPLOYMENT", DEFAULT_DEPLOYMENT)

    def launch(self, task_id: int, host_ids: list[int], options: RestartOptions) -> None:
        from prefect.deployments import run_deployment

        run_deployment(
            self.deployment,
            parameters={
                "host_ids": host_ids, "inventory": self.inventory, "options": options.model_dump(mode="json"),
                "task_id": task_id, "store_url": self.store_url,
            },
            timeout=0,  # return at once; progress is in the task store
            _sync=True,  # called from the API's event loop: force Prefect's sync implementation
        )


def make_launcher(kind: str, inventory: str, store_url: str | None) -> Launcher:
    if kind == "embedded":
        return EmbeddedLauncher(inventory, store_url)
    if kind == "deployment":
        return DeploymentLauncher(inventory, store_url)
    raise ValueError(f"launcher must be 'embedded' or 'deployment', got {kind!r}")
