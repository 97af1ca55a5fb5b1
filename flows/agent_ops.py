"""The agent operations next to the batch restart, one Prefect flow each (one task run per DAG node):
``restart_agent`` ("Restart OCP agent"), ``stop_agent`` ("Stop OCP agent"), ``batch_stop_agents`` ("Batch stop
OCP agent"). They share the batch restart's machinery (``flows/restart.py``: ``run_template``, ``run_and_ask``,
``execute``), so each has what it has: the run ends in the task's state, Prefect's Retry is OCP's retry, a Cancel
reaches the hosts, the pause for a decision, artifacts, a typed run form.

    from flows.agent_ops import run_operation
    run_operation("stop", host_ids=[3])            # -> the task instance, whatever its outcome
    run_operation("restart", task_id=12)           # run a recorded task (the launcher, after retry/rollback)
"""

from __future__ import annotations

from typing import Annotated, Any

from prefect import Flow, flow
from pydantic import Field

from steps.inventory import MAX_ID

from .options import RestartOptions
from .plan import BATCH_STOP, RESTART, STOP, template_of
from .restart import batch_restart_agents, run_flow, run_template
from .settings import Settings

Inventory = Annotated[
    str | None,
    Field(
        description="Path of the TOML inventory. Default: the worker's $OCP_RESTART_INVENTORY, "
        "else $OCP_RESTART_HOME/inventory.toml."
    ),
]
_OPTIONS_HELP = (
    "options: Concurrency, per-stage timeouts (only the operation's own stages), host-key policy, asking the "
    "operator on failure."
)


@flow(name="restart-agent", log_prints=False, validate_parameters=True)
def restart_agent(
    host_id: Annotated[int, Field(ge=1, le=MAX_ID, description="The host to restart, by inventory id.")],
    inventory: Inventory = None,
    options: RestartOptions = RestartOptions(),
) -> dict[str, Any]:
    """Restart the OCP agent on one host through OCP's "Restart OCP agent" DAG (Prepare, Restart pos proxy, Stop
    all, Start all, Finish; no Wait node). A stopped agent comes back: Start all starts what is not running."""
    return run_template(RESTART, [host_id], inventory, options, Settings())  # an entry point


@flow(name="stop-agent", log_prints=False, validate_parameters=True)
def stop_agent(
    host_id: Annotated[int, Field(ge=1, le=MAX_ID, description="The host whose agent to stop, by inventory id.")],
    inventory: Inventory = None,
    options: RestartOptions = RestartOptions(),
) -> dict[str, Any]:
    """Stop the OCP agent on one host through OCP's "Stop OCP agent" DAG (Prepare stop, Stop all, Finish). Its
    rollback starts the agent again."""
    return run_template(STOP, [host_id], inventory, options, Settings())  # an entry point


@flow(name="batch-stop-agents", log_prints=False, validate_parameters=True)
def batch_stop_agents(
    host_ids: Annotated[list[int], Field(min_length=1, description="The hosts to stop, by inventory id, in order.")],
    inventory: Inventory = None,
    options: RestartOptions = RestartOptions(),
) -> dict[str, Any]:
    """Stop the OCP agent on ``host_ids`` through OCP's "Batch stop OCP agent" DAG (Prepare stop, Stop all,
    Finish; a Wait node joins the hosts between stages). Rolling batches and a failure threshold apply."""
    return run_template(BATCH_STOP, host_ids, inventory, options, Settings())  # an entry point


for _flow in (restart_agent, stop_agent, batch_stop_agents):
    _flow.__doc__ = f"{_flow.__doc__}\n\n    {_OPTIONS_HELP}\n"

# Each template's flow, by the key the store records (``tasks.template``).
FLOWS: dict[str, Flow[..., Any]] = {
    "batch_restart": batch_restart_agents,
    "restart": restart_agent,
    "stop": stop_agent,
    "batch_stop": batch_stop_agents,
}


def flow_parameters(template: str, host_ids: list[int]) -> dict[str, Any]:
    """The host parameter of ``template``'s flow: ``host_id`` for a single-host operation, else ``host_ids``."""
    return {"host_id": host_ids[0]} if template_of(template).single_host else {"host_ids": list(host_ids)}


def run_operation(
    template: str,
    *,
    host_ids: list[int],
    task_id: int | None = None,
    inventory: str | None = None,
    options: RestartOptions | None = None,
) -> dict[str, Any]:
    """Run ``template``'s flow in this process and return the task instance whatever its outcome (the CLI, the
    API's embedded launcher, Python callers). ``task_id``: run that recorded task."""
    parameters: dict[str, Any] = {**flow_parameters(template, host_ids), "inventory": inventory}
    if options is not None:
        parameters["options"] = options
    return run_flow(FLOWS[template], task_id=task_id, **parameters)
