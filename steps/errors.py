"""The errors of the host layer: inventory, SSH, the agent, a step that may no longer act.

The whole exception tree, with OCP's codes, is drawn once in ``flows/errors.py``; the classes here are the ones
``steps/`` raises, with the common base ``OcpRestartError``.
"""

from __future__ import annotations


class OcpRestartError(Exception):
    """Base class. ``code`` is OCP's error code, ``http_status`` the status an API answers with."""

    code: int = 1003
    http_status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownHostError(OcpRestartError):
    code, http_status = 7005, 404

    def __init__(self, host_ids: list[int], source: str) -> None:
        ids = ", ".join(str(h) for h in host_ids)
        super().__init__(f"The host(s) <{ids}> do not exist in {source}")
        self.host_ids = host_ids


class InventoryError(OcpRestartError):
    code, http_status = 1003, 500


class StepError(OcpRestartError):
    """A step failed on a host. The message is what the subtask log shows."""


class SSHError(StepError):
    pass


class ConnectError(SSHError):
    pass


class HostKeyError(SSHError):
    pass


class AuthenticationError(SSHError):
    pass


class CommandTimeout(SSHError):
    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


class AgentError(StepError):
    pass


class SubtaskCancelled(StepError):
    pass


class Fenced(StepError):
    """The runner may no longer act (its lease lapsed or another runner took the task): nothing more was sent."""
