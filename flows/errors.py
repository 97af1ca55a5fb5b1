"""Every exception this project raises, in one place (``steps/errors.py`` holds the host layer's classes).

    OcpRestartError                 base; carries OCP's error ``code`` and an HTTP status
    ├── RequestError                400 / 1001  a request value is invalid (names the field)
    ├── UnknownHostError            404 / 7005  host ids not in the inventory
    ├── UnknownTaskError            404 / 4001  no such task instance
    ├── UnknownSubtaskError         404 / 4001  no such subtask in that task
    ├── TaskStateError              400 / 4007  the task's state forbids the operation (4009 rollback, 4010 skip)
    ├── HostBusyError               409 / 20021 another O&M task (or a process operation) holds the host
    ├── UnknownProcessError         404 / 1002  no agent process of that id or alias on the host
    ├── ProcessNotOperableError     400 / 1003  a basic agent process (ocp_agentd, ocp_mgragent): not alone
    ├── AgentStateError             400 / 7019  the agent's state does not allow it (e.g. agentd is down)
    ├── StoreUnavailableError       503 / 1003  the task store cannot be read or written (nothing half-written)
    │   └── StoreVersionError                   its schema is newer than this code's: upgrade ocp-restart
    ├── StaleWriteError             409 / 1003  a guarded store write found another state or runner: refused
    ├── InventoryError                          the inventory file is missing or invalid (names file, host, field)
    ├── PlanError                               a DAG that breaks the plan's invariants
    ├── ServerError                             an ocp-restart server (``run --server``) refused a request or
    │                                           could not be reached; keeps the HTTP status (0: unreachable)
    └── StepError                               a step failed on a host; the subtask becomes FAILED
        ├── SSHError
        │   ├── ConnectError                    host unreachable (TCP, handshake)
        │   ├── HostKeyError                    host key unknown or changed: nothing is executed
        │   ├── AuthenticationError             the host refused our key
        │   └── CommandTimeout                  a command overran its deadline; its process group was killed
        ├── AgentError                          the agent CLI refused, or the agent is not in the expected state
        ├── SubtaskCancelled                    an operator cancelled the running subtask; its command was killed
        └── Fenced                              the runner lost its lease (lapsed or taken over): it stops acting

The host layer raises (and ``steps/errors.py`` defines) OcpRestartError, UnknownHostError, InventoryError and
StepError with everything under it; the rest are defined here. All are importable from here.
"""

from __future__ import annotations

from steps.errors import (
    AgentError,
    AuthenticationError,
    CommandTimeout,
    ConnectError,
    Fenced,
    HostKeyError,
    InventoryError,
    OcpRestartError,
    SSHError,
    StepError,
    SubtaskCancelled,
    UnknownHostError,
)


class RequestError(OcpRestartError):
    code, http_status = 1001, 400


class UnknownTaskError(OcpRestartError):
    code, http_status = 4001, 404

    def __init__(self, task_id: int) -> None:
        super().__init__(f"The task {task_id} does not exist")
        self.task_id = task_id


class UnknownSubtaskError(OcpRestartError):
    code, http_status = 4001, 404

    def __init__(self, task_id: int, subtask_id: int) -> None:
        super().__init__(f"The subtask {subtask_id} does not exist in task {task_id}")


class TaskStateError(OcpRestartError):
    """An operation the current state does not allow (OCP 4007; 4009 for rollback, 4010 for skip)."""

    code, http_status = 4007, 400

    def __init__(self, message: str, code: int = 4007) -> None:
        super().__init__(message)
        self.code = code


class HostBusyError(OcpRestartError):
    code, http_status = 20021, 409

    def __init__(self, host_id: int, task_id: int) -> None:
        # A process operation holds a host with minus its id (flows/store/processes.py).
        holder = f"TaskId: {task_id}" if task_id >= 0 else f"process operation {-task_id}"
        super().__init__(f"An O&M task ({holder}) is already in progress on the host {host_id}")
        self.host_id, self.task_id = host_id, task_id


class UnknownProcessError(OcpRestartError):
    code, http_status = 1002, 404

    def __init__(self, host_id: int, process: str) -> None:
        super().__init__(
            f"No record of the specified type HostAgentProcess exists. Parameter: agentProcessId={process} "
            f"(host {host_id})"
        )


class ProcessNotOperableError(OcpRestartError):
    """OCP's sample has the basic processes ``operable: false``; an operation on one is an invalid request."""

    code, http_status = 1003, 400

    def __init__(self, host_id: int, alias: str, *, older: bool = False) -> None:
        what = (
            "a process of the older (Python) OCP agent, whose control script starts and stops only the whole agent "
            "or pos_proxy, the command channel,"
            if older
            else "a basic process of the OCP agent"
        )
        super().__init__(
            f"The request is invalid. Cause: {alias} on the host {host_id} is {what} (operable: false) and cannot "
            f"be restarted or stopped alone; restart the agent instead (POST /compute/hosts/{host_id}/agent/restart). "
            "Nothing was done."
        )


class AgentStateError(OcpRestartError):
    code, http_status = 7019, 400


class StoreUnavailableError(OcpRestartError):
    code, http_status = 1003, 503


class StoreVersionError(StoreUnavailableError):
    """The store's schema revision is unknown to this code: a newer ocp-restart upgraded it. Nothing was changed."""


class StaleWriteError(OcpRestartError):
    """A guarded write expected a state (or a runner) the store no longer has; nothing was written."""

    code, http_status = 1003, 409


class PlanError(OcpRestartError):
    code, http_status = 1003, 500


class ServerError(OcpRestartError):
    def __init__(self, message: str, http_status: int = 0, code: int = 1003) -> None:
        super().__init__(message)
        self.http_status, self.code = http_status, code


__all__ = [
    "AgentError",
    "AgentStateError",
    "AuthenticationError",
    "CommandTimeout",
    "ConnectError",
    "Fenced",
    "HostBusyError",
    "HostKeyError",
    "InventoryError",
    "OcpRestartError",
    "PlanError",
    "ProcessNotOperableError",
    "RequestError",
    "SSHError",
    "ServerError",
    "StaleWriteError",
    "StepError",
    "StoreUnavailableError",
    "StoreVersionError",
    "SubtaskCancelled",
    "TaskStateError",
    "UnknownHostError",
    "UnknownProcessError",
    "UnknownSubtaskError",
    "UnknownTaskError",
]
