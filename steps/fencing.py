"""The fence between a runner that may no longer act and its hosts: a Runner that asks before every command.

A real run asks its lease (``flows/run.py``); ``steps.testing.FakeStep`` asks its ``fenced`` field. Both hand
their steps this same wrapper, so the fast tier exercises the fencing the real runs use.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import Fenced, SubtaskCancelled
from .runner import CommandResult, Runner


class FencedRunner:
    """A Runner over ``inner`` that sends nothing once ``lost()`` gives a reason, and reports a command stopped
    while it gives one as Fenced, not as an operator's cancel.

    Args:
        inner: The host's runner (an SSHSession, a FakeRunner).
        lost: Why this runner may no longer act, or None while it may (e.g. ``lambda: lease.lost``). Asked before
            every command and again when a command was stopped.

    Raises (from ``run``):
        Fenced: ``not acting: REASON`` before sending; ``stopped the running command: REASON`` when the command
            was stopped (SubtaskCancelled from ``inner``) and ``lost()`` then gives a reason: the stop came from
            the lost lease, polled through the step's ``cancelled()``.
    """

    def __init__(self, inner: Runner, lost: Callable[[], str | None]) -> None:
        self.inner, self.lost = inner, lost

    def run(self, command: str, *, deadline: float, stop: Callable[[], bool] | None = None) -> CommandResult:
        reason = self.lost()
        if reason is not None:
            raise Fenced(f"not acting: {reason}")
        try:
            return self.inner.run(command, deadline=deadline, stop=stop)
        except SubtaskCancelled:
            reason = self.lost()
            if reason is not None:
                raise Fenced(f"stopped the running command: {reason}") from None
            raise


__all__ = ["FencedRunner"]
