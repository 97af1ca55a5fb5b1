"""A run rides out a store outage (#22): flows/outage.py waits for the store, says so once, and yields to its fence."""

from __future__ import annotations

import pytest

from flows import outage
from flows.errors import StoreUnavailableError
from steps.errors import Fenced


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(outage, "RETRY_SECONDS", 0.01)


def test_a_write_waits_until_the_store_answers_and_the_outage_is_told_once():
    """#22: two refused attempts, then the write goes through: its result, the seconds waited, one 'down' and one
    'back' message (not one per attempt)."""
    said: list[str] = []
    attempts = iter([StoreUnavailableError("the task store x is unavailable: refused")] * 2 + [None])

    def write() -> str:
        failure = next(attempts)
        if failure is not None:
            raise failure
        return "written"

    watch = outage.StoreOutage(7, say=said.append)
    result, waited = watch.wait(write, fence=lambda: None, doing="recording")
    assert result == "written" and waited > 0
    assert len(said) == 2 and "unavailable: refused; waiting for it before recording" in said[0]
    assert "answers again after" in said[1] and watch.since is None and watch.total > 0


def test_the_fence_ends_the_wait():
    """#22: once the runner's lease may have lapsed (its fence raises), the wait stops: nothing more is tried."""
    tries = []

    def write() -> None:
        tries.append(1)
        raise StoreUnavailableError("the task store x is unavailable: full")

    def fence() -> None:
        if len(tries) >= 3:
            raise Fenced("not acting: the lease lapsed")

    with pytest.raises(Fenced):
        outage.StoreOutage(7, say=lambda _: None).wait(write, fence=fence, doing="recording")
    assert len(tries) == 3


def test_a_store_that_answers_costs_no_wait():
    """No outage: the write's result at once, 0 s waited, nothing said."""
    said: list[str] = []
    assert outage.StoreOutage(7, say=said.append).wait(lambda: 5, fence=lambda: None, doing="x") == (5, 0.0)
    assert not said
