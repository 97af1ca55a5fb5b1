"""steps.fencing.FencedRunner: the fence real runs (flows/run.py) and FakeStep both put before a host."""

from __future__ import annotations

import time

import pytest

from steps.errors import Fenced, SubtaskCancelled
from steps.fencing import FencedRunner
from steps.testing import FakeRunner, Hang, result


class TestFencedRunner:
    def test_a_runner_that_may_act_passes_commands_through(self):
        """No reason to stop: the command reaches the inner runner and its result comes back unchanged."""
        inner = FakeRunner({"true": result("true", "out")})
        assert FencedRunner(inner, lambda: None).run("true", deadline=time.monotonic() + 5).stdout == "out"
        assert inner.commands == ["true"]

    def test_a_lost_lease_sends_nothing(self):
        """lost() gives a reason: Fenced with it, and the inner runner never sees the command."""
        inner = FakeRunner({})
        with pytest.raises(Fenced, match="^not acting: the lease lapsed$"):
            FencedRunner(inner, lambda: "the lease lapsed").run("true", deadline=time.monotonic() + 5)
        assert inner.commands == []

    def test_a_command_stopped_by_a_lost_lease_is_fenced(self):
        """The lease is lost while the command runs (its stop() turned True): Fenced, not SubtaskCancelled."""
        reasons = iter([None, "another runner took the task"])
        runner = FencedRunner(FakeRunner({"x": Hang()}), lambda: next(reasons))
        with pytest.raises(Fenced, match="^stopped the running command: another runner took the task$"):
            runner.run("x", deadline=time.monotonic() + 5, stop=lambda: True)

    def test_an_operators_cancel_stays_a_cancel(self):
        """A command stopped while the lease holds: the inner runner's SubtaskCancelled, unchanged."""
        runner = FencedRunner(FakeRunner({"x": Hang()}), lambda: None)
        with pytest.raises(SubtaskCancelled, match="cancelled by an operator"):
            runner.run("x", deadline=time.monotonic() + 5, stop=lambda: True)
