"""Where ``prefect server start``'s seconds go, from exec to healthy, and what each knob of the CLI's local server
takes off (issue #23).

    python3 -m bench.server_start [--repeat 3]

Two measurements, each on a fresh PREFECT_HOME and then again on the database that start left (as after the
local server's idle stop):

- phases: one process does what ``prefect server start`` does, step by step, timing each: interpreter start and
  ``import prefect`` (up to the CLI's own code), ``import prefect.server.api.server``, ``create_app`` (the API
  routes and the UI app, which copies the UI's static files on a new home), the database migrations
  (``create_db``: alembic), block registration, the services' start, and uvicorn binding its socket;
- ablation: the real ``prefect server start`` (as ``deployments/local_prefect.py`` starts it, lean services and
  all) timed from exec until ``/api/health`` answers (polled every 20 ms), with the knobs one at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from .common import BIN, base_env

# One process, the steps of `prefect server start` in order (prefect/cli/server.py -> _run_in_foreground ->
# uvicorn.run(create_app(final=True)) -> the app's lifespan), each timed. Prints one JSON object.
PHASES = r"""
import json, time, sys
import os
marks = {}
def mark(name, since=[float(sys.argv[1])]):
    now = time.time(); marks[name] = now - since[0]; since[0] = now
mark("interpreter start")
import prefect, prefect.cli; mark("import prefect (+ its CLI)")
from prefect.server.api.server import create_app; mark("import prefect.server.api.server")
import asyncio, socket
app = create_app(final=True); mark("create_app (API routes, UI app, UI static copy on a new home)")
async def lifespan():
    from prefect.server.database import provide_database_interface
    import prefect.settings as s
    if s.PREFECT_API_DATABASE_MIGRATE_ON_START.value():
        await provide_database_interface().create_db()
    mark("migrations (alembic upgrade; create_db)")
    async with app.router.lifespan_context(app):  # migrations again (now a no-op check), blocks, services
        mark("lifespan: blocks, services (migrations checked again)")
        sock = socket.socket(); sock.bind(("127.0.0.1", 0)); sock.listen(); sock.close()
        mark("bind")
        print(json.dumps(marks), flush=True)
        os._exit(0)  # the services' shutdown is not part of the start
asyncio.run(lifespan())
"""


def _env(home: Path, extra: dict[str, str]) -> dict[str, str]:
    from deployments.local_prefect import LEAN_SERVICES, RECORDER_BATCHING

    env = base_env(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    env.pop("PREFECT_API_URL", None)
    return {**env, **LEAN_SERVICES, **RECORDER_BATCHING, **extra}


def phases(home: Path, extra: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", PHASES, repr(time.time())],
        env=_env(home, extra),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def to_health(home: Path, extra: dict[str, str], poll: float = 0.02, timeout: float = 120.0) -> float:
    """Seconds from exec of ``prefect server start`` until /api/health answers 200; the server is then stopped."""
    from .run import free_port

    port = free_port()
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=_env(home, extra),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while time.monotonic() - started < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited {proc.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(poll)
        raise RuntimeError(f"no health within {timeout} s")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


KNOBS: dict[str, dict[str, str]] = {
    "as the local server started it before #23": {},
    "no migrations (PREFECT_API_DATABASE_MIGRATE_ON_START=false)": {"PREFECT_API_DATABASE_MIGRATE_ON_START": "false"},
    "no block registration (PREFECT_API_BLOCKS_REGISTER_ON_START=false)": {
        "PREFECT_API_BLOCKS_REGISTER_ON_START": "false"
    },
    "no UI (PREFECT_UI_ENABLED=false)": {"PREFECT_UI_ENABLED": "false"},
    "local server now (no migrations, no block registration, UI on)": {
        "PREFECT_API_DATABASE_MIGRATE_ON_START": "false",
        "PREFECT_API_BLOCKS_REGISTER_ON_START": "false",
    },
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.server_start", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=3, help="runs per configuration on the existing database (median)")
    p.add_argument("--out", type=Path, help="write the figures as JSON here too")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ocp-server-start-"))
    out: dict = {"load_before": os.getloadavg()}
    try:
        fresh, existing = phases(work / "a", {}), phases(work / "a", {})
        out["phases"] = {"fresh database": fresh, "existing database": existing}
        print(f"{'phase of prefect server start':62} {'fresh DB':>9} {'existing':>9}")
        for name in fresh:
            print(f"{name:62} {fresh[name]:9.2f} {existing.get(name, 0):9.2f}")
        print(f"{'total':62} {sum(fresh.values()):9.2f} {sum(existing.values()):9.2f}")
        out["fresh_to_health_s"] = round(to_health(work / "b", {}), 2)
        print(f"\nexec -> /api/health, fresh database: {out['fresh_to_health_s']:.2f} s")
        print(f"exec -> /api/health on an existing database, median of {args.repeat}:")
        out["existing_to_health_s"] = {}
        for name, extra in KNOBS.items():
            runs = [to_health(work / "b", extra) for _ in range(args.repeat)]
            out["existing_to_health_s"][name] = [round(r, 2) for r in runs]
            print(f"  {statistics.median(runs):6.2f} s  {name}  ({', '.join(f'{r:.2f}' for r in runs)})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["load_after"] = os.getloadavg()
    print(f"load average before {out['load_before'][0]:.2f}, after {out['load_after'][0]:.2f}")
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
