"""The ``Step`` interface: what the work of one DAG node on one host needs from whoever runs it.

``steps/`` knows nothing of tasks, stores or Prefect; the orchestration layer (``flows/run.py``) implements this
for a real run, and ``steps/testing.py`` for tests.
"""

from __future__ import annotations

from typing import Protocol

from .agent import Limits
from .inventory import Host
from .runner import Runner


class Log(Protocol):
    """A subtask's log."""

    def info(self, message: str) -> None: ...

    def warning(self, message: str) -> None: ...

    def error(self, message: str) -> None: ...


class Step(Protocol):
    """One subtask's work on its host.

    Attributes:
        host: The host it runs on.
        deadline: When it must be done, by ``time.monotonic()``.
        timeout: Its timeout in seconds (the node's).
        log: Its log.
    """

    host: Host
    deadline: float
    timeout: int

    @property
    def log(self) -> Log: ...  # read-only, so a step may keep a richer log (e.g. one that also mirrors to Prefect)

    @property
    def limits(self) -> Limits: ...  # what Prepare requires of the host (the run's options)

    def runner(self) -> Runner:
        """The host's connection, opened (host key verified) on first use. Every command sent through it is
        checked first: a step that may no longer act sends nothing."""
        ...

    def cancelled(self) -> bool:
        """Whether the running command should be stopped now (an operator cancelled, or the runner lost its
        lease); polled while a command runs."""
        ...

    def may_act(self) -> None:
        """Raise SubtaskCancelled or Fenced if this step must not go on."""
        ...

    def record_pids(self, phase: str, pids: dict[str, int]) -> None:
        """Keep the agent's process ids (or start times) seen at ``phase`` ("before", "starts", "after")."""
        ...

    def recorded_pids(self, phase: str) -> dict[str, int] | None:
        """What ``record_pids`` kept for ``phase`` on this host and task, from this run or an earlier one."""
        ...

    def record_version(self, version: str) -> None:
        """Keep the agent's version (``ocp_agentctl version``) as this task found it on the host."""
        ...
