"""The launch seam: how the API starts the flow run for a task it has just recorded.

- ``embedded`` (default): the flow runs in a thread of the API process.
- ``deployment``: a flow run of the Prefect deployment ``OCP_RESTART_DEPLOYMENT`` (default
  ``batch-restart-agents/batch-restart``) is created for a worker to pick up; needs a real Prefect server.
  The other operations' tasks go to the deployment of the same name of their own flow (``restart-agent/...``,
  ``stop-agent/...``, ``batch-stop-agents/...``), as ``ocp-restart deploy`` registers them.

Either way the flow is the task's template's (``flows/agent_ops.py`` FLOWS), whether the task is new or was
reopened by an operation (retry, rollback, ...).
Chosen by ``OCP_RESTART_LAUNCHER`` or ``ocp-restart serve --launcher``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from flows.options import RestartOptions
from flows.prefect_run import TAG_PREFIX
from flows.settings import Settings

log = logging.getLogger(__name__)


class Launcher(Protocol):
    def launch(
        self, task_id: int, host_ids: list[int], options: RestartOptions, *, template: str = "batch_restart"
    ) -> None: ...

    def shutdown(self, reason: str, grace: float) -> None: ...


class EmbeddedLauncher:
    """Runs each flow in a daemon thread of this process, at most ``OCP_RESTART_MAX_RUNS`` (default 8) at once.

    A task waiting for a slot keeps its lease alive. A flow run that cannot start (e.g. the Prefect API answers
    503 under load) is retried with backoff; if it never starts, the task is FAILED with the reason in its log
    instead of waiting for its lease to lapse.
    """

    START_ATTEMPTS = 4

    def __init__(self, inventory: str, store_url: str, *, max_runs: int, lease_seconds: float) -> None:
        self.inventory, self.store_url, self.lease_seconds = inventory, store_url, lease_seconds
        self.slots = threading.BoundedSemaphore(max_runs)
        self.threads: dict[int, threading.Thread] = {}
        self.closed: str | None = None

    def shutdown(self, reason: str, grace: float) -> None:
        """Stop taking runs; let running remote commands finish within ``grace`` seconds, then kill them; wait
        until every run has recorded how it ended (interrupted subtasks FAILED with ``reason``)."""
        from flows.run import stop_runs

        self.closed = reason
        stop_runs(reason, grace)
        for thread in list(self.threads.values()):
            thread.join(timeout=30)

    def launch(
        self, task_id: int, host_ids: list[int], options: RestartOptions, *, template: str = "batch_restart"
    ) -> None:
        if self.closed:
            raise RuntimeError(self.closed)
        thread = threading.Thread(
            target=self._run, args=(task_id, host_ids, options, template), name=f"ocp-task-{task_id}", daemon=True
        )
        self.threads[task_id] = thread
        thread.start()

    def _run(self, task_id: int, host_ids: list[int], options: RestartOptions, template: str) -> None:
        from flows.agent_ops import run_operation
        from flows.lease import launch_grace
        from flows.store import TaskStore

        try:
            # The task is kept from lapsing while it waits for a slot and while Prefect creates the flow run (slow
            # under load); once the flow runs, it claims the task and renews the lease itself.
            with TaskStore(self.store_url) as store, launch_grace(store, task_id, self.lease_seconds), self.slots:
                for attempt in range(1, self.START_ATTEMPTS + 1):
                    try:
                        run_operation(
                            template, task_id=task_id, host_ids=host_ids, inventory=self.inventory, options=options
                        )
                        return
                    except Exception as exc:
                        if _started(store, task_id):
                            raise  # the flow ran: its own records say what happened
                        if attempt == self.START_ATTEMPTS:
                            store.abort_task(
                                task_id,
                                f"the flow run could not start after {attempt} attempts: "
                                f"{type(exc).__name__}: {str(exc)[:300]}",
                            )
                            raise
                        log.warning("task %s: the flow run did not start (%s); retrying", task_id, exc)
                        time.sleep(2.0 * attempt)
        except BaseException:  # the store has the details; the API process must live on
            log.exception("flow run for task %s ended with an exception", task_id)
        finally:
            self.threads.pop(task_id, None)


def _started(store, task_id: int) -> bool:
    """Whether a flow run has touched the task (a subtask started, or the task already ended)."""
    record = store.load(task_id)
    return (
        record.task.status.value != "RUNNING" or record.task.runner != "" or any(s.start_time for s in record.subtasks)
    )


class DeploymentLauncher:
    """Creates a flow run of a Prefect deployment; a worker (or ``flow.serve``) executes it."""

    def __init__(self, inventory: str, deployment: str) -> None:
        self.inventory, self.deployment = inventory, deployment

    def shutdown(self, reason: str, grace: float) -> None:
        """Nothing runs here: workers run the flows."""

    def launch(
        self, task_id: int, host_ids: list[int], options: RestartOptions, *, template: str = "batch_restart"
    ) -> None:
        from prefect.deployments import run_deployment

        from flows.agent_ops import flow_parameters

        # The task travels as the run's tag, not as a parameter; the store's URL not at all (it can hold a
        # password): the worker resolves it from its own settings.
        run_deployment(
            deployment_for(self.deployment, template),
            parameters={
                **flow_parameters(template, host_ids),
                "inventory": self.inventory,
                "options": options.model_dump(mode="json"),
            },
            flow_run_name=f"ocp-task-{task_id}",
            tags=[f"{TAG_PREFIX}{task_id}", "ocp-agent"],
            timeout=0,  # return at once; progress is in the task store
            _sync=True,  # called from the API's event loop: force Prefect's sync implementation
        )


def deployment_for(deployment: str, template: str) -> str:
    """The deployment that runs ``template``'s tasks: ``deployment`` (``FLOW/NAME``, the batch restart's) with
    the flow of the template: ``stop-agent/NAME`` for a stop."""
    from flows.plan import template_of

    if template == "batch_restart":
        return deployment
    _, _, name = deployment.rpartition("/")
    return f"{template_of(template).flow_name}/{name}"


def make_launcher(config: Settings) -> Launcher:
    """The launcher ``config.launcher`` names, for the inventory and store of ``config``."""
    inventory = str(config.inventory_path)
    if config.launcher == "embedded":
        return EmbeddedLauncher(
            inventory, config.store_url, max_runs=config.max_runs, lease_seconds=config.lease_seconds
        )
    return DeploymentLauncher(inventory, config.deployment)
