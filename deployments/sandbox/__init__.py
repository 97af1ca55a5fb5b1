"""The sandbox: K real sshd "hosts" on loopback, each with a simulated OCP agent. See README.md here."""

from .hosts import AGENT_PROCESSES, AGENT_SOURCE, Sandbox, SandboxHost
from .sshd import SandboxError
from .users import SANDBOX_USER

__all__ = ["AGENT_PROCESSES", "AGENT_SOURCE", "SANDBOX_USER", "Sandbox", "SandboxError", "SandboxHost"]
