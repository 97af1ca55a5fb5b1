"""The sandbox: K real sshd "hosts" on loopback, each with a simulated OCP agent. See README.md here."""

from .agent_home import AGENT_PROCESSES, AGENT_SOURCE, AgentHome
from .hosts import Sandbox, SandboxHost
from .sshd import SandboxError
from .users import SANDBOX_USER

__all__ = ["AGENT_PROCESSES", "AGENT_SOURCE", "SANDBOX_USER", "AgentHome", "Sandbox", "SandboxError", "SandboxHost"]
