"""Where a Prefect server's CPU goes: a summary of a py-spy speedscope profile of ``prefect server start``.

    python3 -m bench.prefect_server_profile FILE.speedscope.json [--top 25]

The top functions by self and by inclusive time come from bench.profile.summarize(); on top of that each sample
is put in two groups:

- component: what the server was doing it for, the outermost frame of the Prefect server's own code that names a
  piece of work (an API route module, a service, the event pipeline, messaging, ...);
- kind: what the innermost frame is (SQLAlchemy, the database driver, pydantic, JSON, asyncio, websockets, HTTP
  framework, logging, Prefect's own code, ...).

py-spy counts a thread as busy in a few blocking waits it does not recognize as idle (the event loop's epoll, the
aiosqlite connection thread waiting on its queue, thread pools waiting for work); samples whose innermost frame is
one of those (IDLE_LEAVES) are left out, and how many is printed.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from .profile import summarize

# (component, substring of the frame's file): scanning a stack from its outermost frame, the first frame that
# matches one of these names the component. Order matters only within one frame.
COMPONENTS = (
    ("service: task_run_recorder", "/prefect/server/services/task_run_recorder.py"),
    ("service: event_persister", "/prefect/server/events/services/event_persister.py"),
    ("service: triggers", "/prefect/server/events/services/triggers.py"),
    ("service: triggers", "/prefect/server/events/triggers.py"),
    ("service: actions", "/prefect/server/events/services/actions.py"),
    ("service: event_logger", "/prefect/server/events/services/event_logger.py"),
    ("events: stream out (Distributor)", "/prefect/server/events/stream.py"),
    ("logs: stream out", "/prefect/server/logs/stream.py"),
    ("API: events (websocket in, POST)", "/prefect/server/api/events.py"),
    ("API: logs", "/prefect/server/api/logs.py"),
    ("API: task_runs", "/prefect/server/api/task_runs.py"),
    ("API: flow_runs", "/prefect/server/api/flow_runs.py"),
    ("API: artifacts", "/prefect/server/api/artifacts.py"),
    ("API: flows", "/prefect/server/api/flows.py"),
    ("API: other route", "/prefect/server/api/"),
    ("services: other (loops, docket)", "/prefect/server/services/"),
    ("services: docket", "/docket/"),
    ("messaging (in-memory broker)", "/prefect/server/utilities/messaging/"),
    ("events: pipeline/ordering", "/prefect/server/events/"),
)
# frames under these never name a component (wrappers every request or task goes through)
NOT_COMPONENTS = (
    "/prefect/server/api/server.py",
    "/prefect/server/utilities/server.py",
    "/prefect/server/api/dependencies.py",
    "/prefect/server/api/middleware.py",
)

KINDS = (  # (kind, substring of the innermost frame's file), first match wins
    ("database driver: sqlite", "sqlite"),
    ("database driver: asyncpg", "asyncpg"),
    ("SQLAlchemy", "/sqlalchemy/"),
    ("pydantic", "pydantic"),
    ("JSON", "/json/"),
    ("JSON", "orjson"),
    ("websockets", "/websockets/"),
    ("HTTP framework (uvicorn/starlette/fastapi/h11)", "/uvicorn/"),
    ("HTTP framework (uvicorn/starlette/fastapi/h11)", "/starlette/"),
    ("HTTP framework (uvicorn/starlette/fastapi/h11)", "/fastapi/"),
    ("HTTP framework (uvicorn/starlette/fastapi/h11)", "/h11/"),
    ("logging", "/logging/"),
    ("Prefect server code", "/prefect/server/"),
    ("Prefect (shared) code", "/prefect/"),
    ("asyncio event loop", "/asyncio/"),
    ("uuid/datetime", "uuid.py"),
    ("uuid/datetime", "datetime"),
    ("uuid/datetime", "whenever"),
    ("uuid/datetime", "pendulum"),
    ("copy/typing/abc", "copy.py"),
    ("copy/typing/abc", "typing.py"),
    ("copy/typing/abc", "abc.py"),
    ("threads", "threading.py"),
    ("threads", "concurrent/futures"),
)


# (function name, file substring, line or None): innermost frames that are a thread waiting, not working
IDLE_LEAVES = (
    ("EpollSelector.select", "selectors.py", None),
    ("Condition.wait", "threading.py", None),
    ("_worker", "concurrent/futures/thread.py", 81),
    ("_connection_worker_thread", "aiosqlite/core.py", 59),
    ("Queue.get", "queue.py", None),
    ("Event.wait", "threading.py", None),
)


def _is_idle(frame: dict) -> bool:
    name, file, line = frame.get("name") or "", frame.get("file") or "", frame.get("line")
    return any(name == n and f in file and (at is None or line == at) for n, f, at in IDLE_LEAVES)


def busy_copy(path: Path) -> tuple[Path, float, float]:
    """A copy of the speedscope file without the samples of waiting threads: (its path, seconds kept, left out)."""
    data = json.loads(path.read_text())
    frames = data["shared"]["frames"]
    idle = [_is_idle(f) for f in frames]
    kept = dropped = 0.0
    for prof in data["profiles"]:
        samples, weights = [], []
        for stack, weight in zip(prof["samples"], prof["weights"]):
            if stack and idle[stack[-1]]:
                dropped += weight
                continue
            samples.append(stack)
            weights.append(weight)
            kept += weight if stack else 0.0
        prof["samples"], prof["weights"] = samples, weights
        if "endValue" in prof and weights:
            prof["endValue"] = prof.get("startValue", 0) + sum(weights)
    out = path.with_name(path.name.replace(".speedscope.json", "") + ".busy.speedscope.json")
    out.write_text(json.dumps(data))
    return out, kept, dropped


GENERIC = ("messaging (in-memory broker)", "events: pipeline/ordering")


def _component(stack: list[int], frames: list[dict]) -> str:
    files = [frames[i].get("file") or "" for i in stack]  # outermost first
    for generic in (False, True):
        for file in files:
            if any(skip in file for skip in NOT_COMPONENTS):
                continue
            for name, needle in COMPONENTS:
                if needle in file and (name in GENERIC) == generic:
                    if name in ("API: other route", "services: other (loops, docket)"):
                        return f"{name}: {Path(file).name}"
                    return name
    joined = " ".join(files)
    if "aiosqlite" in joined:
        return "database: aiosqlite's thread (SQLite calls)"
    roots = [f for f in files if f]  # py-spy's first frame names the process and has no file
    if roots and "/sqlalchemy/" in roots[0]:  # a stack that starts in SQLAlchemy runs in a greenlet
        return "database: SQLAlchemy in a greenlet (its caller is not in the sampled stack)"
    if "asyncpg" in joined:
        return "database: asyncpg protocol (I/O callbacks)"
    if any(web in joined for web in ("/uvicorn/", "/starlette/", "/h11/", "/websockets/", "/fastapi/")):
        return "HTTP/websocket I/O outside a route"
    if "concurrent/futures/thread.py" in joined or "threading.py" in joined:
        names = [
            frames[i].get("name") or "?"
            for i, f in zip(stack, files)
            if "/lib/python3" not in f or "site-packages" in f
        ]
        return f"threads: {names[1] if len(names) > 1 else (frames[stack[-1]].get('name') or '?')}"
    if "selectors.py" in files[-1] or "/asyncio/" in files[-1]:
        return "event loop (select, callbacks)"
    return "other"


def _kind(stack: list[int], frames: list[dict]) -> str:
    file = frames[stack[-1]].get("file") or ""
    for name, needle in KINDS:
        if needle in file:
            return name
    return f"other ({Path(file).name or '?'})"


def server_groups(path: Path) -> dict:
    data = json.loads(path.read_text())
    frames = data["shared"]["frames"]
    components, kinds, pairs = Counter(), Counter(), Counter()
    total = 0.0
    for prof in data["profiles"]:
        for stack, weight in zip(prof["samples"], prof["weights"]):
            if not stack:
                continue
            total += weight
            comp, kind = _component(stack, frames), _kind(stack, frames)
            components[comp] += weight
            kinds[kind] += weight
            pairs[(comp, kind)] += weight
    unit = data["profiles"][0].get("unit", "none") if data["profiles"] else "none"
    scale = {"seconds": 1.0, "milliseconds": 1e-3, "microseconds": 1e-6}.get(unit, 1.0)
    return {
        "total_s": total * scale,
        "components": {k: v * scale for k, v in components.most_common()},
        "kinds": {k: v * scale for k, v in kinds.most_common()},
        "pairs": {k: v * scale for k, v in pairs.most_common(20)},
    }


# frames every sample of a thread goes through (the CLI, uvicorn, the event loop): not worth a line of their own
WRAPPERS = (
    "process ",
    "<module> (prefect:",
    "app (_app.py",
    "_run_cli (",
    "_root_callback (",
    "_setup_and_run",
    "App.__call__ (",
    "_run_maybe_async_command (",
    "with_cli_exception_handling",
    "start (server.py",
    "_run_in_foreground (",
    "run (main.py",
    "Server.run (",
    "asyncio_run (",
    "Runner.run (",
    "BaseEventLoop.run_until_complete",
    "BaseEventLoop.run_forever",
    "BaseEventLoop._run_once",
    "Handle._run (",
    "Thread._bootstrap",
    "Thread.run (",
    "TaskHandle._run_coro",
)


def print_server_summary(path: Path, top: int = 25) -> None:
    busy, kept, dropped = busy_copy(path)
    base = summarize(busy, top=top * 3)
    base["inclusive_top_s"] = {k: v for k, v in base["inclusive_top_s"].items() if not k.startswith(WRAPPERS)}
    groups = server_groups(busy)
    total = groups["total_s"] or 1.0
    print(
        f"server profile {path}: {groups['total_s']:.1f} sampled busy seconds (py-spy; {dropped:.1f} s more were "
        f"threads waiting, left out)"
    )
    print("  by thread: " + ", ".join(f"{k} {v:.1f}" for k, v in base["by_thread_group_s"].items()))
    for title, rows in (
        ("by component (what the work was for)", groups["components"]),
        ("by kind (innermost frame)", groups["kinds"]),
    ):
        print(f"  {title}:")
        for name, sec in rows.items():
            if sec / total >= 0.005:
                print(f"    {sec:8.1f} s {100 * sec / total:5.1f}%  {name}")
    print("  top component x kind:")
    for (comp, kind), sec in groups["pairs"].items():
        print(f"    {sec:8.1f} s {100 * sec / total:5.1f}%  {comp}  /  {kind}")
    for title, key, limit in (
        ("top functions by self time", "self_top_s", top),
        (
            "top functions by inclusive time (without the CLI/uvicorn/event-loop frames every sample has)",
            "inclusive_top_s",
            top,
        ),
    ):
        print(f"  {title}:")
        for name, sec in list(base[key].items())[:limit]:
            print(f"    {sec:8.2f} s {100 * sec / total:5.1f}%  {name[:140]}")
    out = path.with_name(path.name.replace(".speedscope.json", "") + ".summary.json")
    out.write_text(json.dumps({**base, "components_s": groups["components"], "kinds_s": groups["kinds"]}, indent=1))
    print(f"  (summary written to {out})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.prefect_server_profile", description=__doc__.split("\n\n")[0])
    p.add_argument("file", type=Path)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    print_server_summary(args.file, args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
