"""``ocp-restart`` with a clock on its phases: ``python -m bench.timeline_cli run ...`` runs the CLI as usual and,
before it exits, prints one line ``TIMELINE {"exec": EPOCH, "marks": {...}}`` on stderr: when this process was
exec'd, and seconds since then at which each phase began or ended (bench.timeline runs it). The marks come from
wrapping a few functions and timing a few imports as they happen; nothing else changes.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import json
import os
import sys
import threading
import time
from typing import Any


def started_at(pid: int | str = "self") -> float | None:
    """When process ``pid`` was exec'd, in epoch seconds (its start time in /proc, 10 ms resolution); None if it
    is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
    except OSError:
        return None
    return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))


EXEC = started_at() or time.time()
MARKS: dict[str, float] = {}
_LOCK = threading.Lock()


def mark(name: str) -> None:
    """The first time ``name`` happens, in seconds since exec."""
    with _LOCK:
        MARKS.setdefault(name, round(time.time() - EXEC, 3))


def _wrap(owner: Any, attr: str, label: str) -> None:
    original = getattr(owner, attr)

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        mark(f"{label} begins")
        try:
            return original(*args, **kwargs)
        finally:
            mark(f"{label} ends")

    setattr(owner, attr, timed)


# module -> [(attribute, label)] wrapped once the module is imported
WRAPPED = {
    "deployments.local_prefect": [("begin", "local server: begin()"), ("ensure", "local server: ensure() (waits)")],
    "flows.submit": [("create_task", "task recorded")],
    "flows.restart": [("run_template", "flow body")],
    "flows.tasks": [("run_node", "first node")],
}
TIMED_IMPORTS = ("prefect", "flows.agent_ops", "fastapi.encoders")


class _Hook(importlib.abc.MetaPathFinder):
    """Marks the imports in TIMED_IMPORTS and wraps WRAPPED's functions as their modules are imported."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in WRAPPED and name not in TIMED_IMPORTS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module: Any) -> None:
            mark(f"import {name} begins")
            original(module)
            mark(f"import {name} ends")
            for attr, label in WRAPPED.get(name, ()):
                _wrap(module, attr, label)

        loader.exec_module = exec_module
        return spec


def main() -> int:
    mark("interpreter up")
    sys.meta_path.insert(0, _Hook())
    from deployments import cli

    mark("CLI imported")
    try:
        return cli.main()  # as the installed command: it leaves without the interpreter's teardown (os._exit)
    finally:
        mark("CLI returns")
        print("TIMELINE " + json.dumps({"exec": EXEC, "marks": MARKS}), file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
