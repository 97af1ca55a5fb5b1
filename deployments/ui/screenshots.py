"""Real screenshots of the Prefect UI as the operator's console (issue #13), taken with headless Chromium.

Not part of CI, and neither of its two requirements is a dependency of this package. Install them by hand:

    apt-get install -y chromium          # Debian's package: the browser at /usr/bin/chromium
    .venv/bin/pip install playwright     # the Python package only; never `playwright install` (it downloads a browser)

Then, from the repository root (as root, like the sandbox tests: the hosts are real sshd on 127.0.0.x):

    .venv/bin/python -m deployments.ui.screenshots [--out DIR]     # default DIR: deployments/ui/

Everything runs on loopback and is torn down at the end (also on an error, Ctrl-C or SIGTERM), each process
stopped by its PID: a temporary PREFECT_HOME and OCP_RESTART_HOME, ``prefect server start`` with its UI (SQLite),
2 sandbox hosts, ``ocp-restart deploy``, one ``prefect worker start --pool ocp-restart --type process``. Then:

- ``run-form.png``: the deployment ``batch-restart-agents/batch-restart``'s custom run page (Run > Custom run):
  the ``host_ids`` / ``inventory`` / ``options`` fields with their descriptions;
- ``failed-run.png``: a run where host 1002's agent fails to start: state Failed, the message naming the host;
- ``recovery.png``: the same run after Prefect's Retry (AwaitingRetry, forced, as the UI sends it): Completed;
- ``artifact-failed.png``: the failed run's table artifact (the widest: its status words), measured like the next;
- ``artifact.png``: the recovered run's table artifact (key ``ocp-task-<id>``: each host's steps, the agents' pids
  before -> after) on its own page (``/artifacts/artifact/<id>``), 1,600 px wide. The script also prints whether
  that table fits the width: the page's ``scrollWidth`` vs the viewport's, and the table's (and its scroll box's)
  ``scrollWidth`` vs ``clientWidth``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from deployments.sandbox.procs import reap

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1600, "height": 1000}
DEPLOYMENT = "batch-restart-agents/batch-restart"
HOSTS = [1001, 1002]
FAILING = 1002
UI_TIMEOUT_MS = 120_000  # 2 shared cores: the UI's first load can be slow


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bin(name: str) -> str:
    return shutil.which(name, path=str(Path(sys.executable).parent)) or name


class Children:
    """The processes this script started, stopped by PID in reverse order (SIGTERM, SIGKILL after a grace)."""

    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str], logfile: Path, cwd: Path) -> subprocess.Popen:
        out = open(logfile, "ab")
        # Own session: a Ctrl-C in the terminal reaches only this script, which then stops them in order.
        process = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        out.close()
        self.started.append((name, process))
        log(f"started {name} (pid {process.pid}), log {logfile}")
        return process

    def stop_all(self, grace: float = 30) -> None:
        for name, process in reversed(self.started):
            if process.poll() is None:
                process.terminate()
                reap(process, grace)
            log(f"stopped {name} (pid {process.pid})")
        self.started.clear()


class Prefect:
    """Prefect's REST API, driven as its UI drives it."""

    def __init__(self, api_url: str) -> None:
        self.http = httpx.Client(base_url=api_url, timeout=60)

    def deployment(self, name: str) -> dict:
        answer = self.http.get(f"/deployments/name/{name}")
        answer.raise_for_status()
        return answer.json()

    def create_run(self, deployment_id: str, parameters: dict) -> str:
        answer = self.http.post(f"/deployments/{deployment_id}/create_flow_run", json={"parameters": parameters})
        answer.raise_for_status()
        return answer.json()["id"]

    def run(self, run_id: str) -> dict:
        answer = self.http.get(f"/flow_runs/{run_id}")
        answer.raise_for_status()
        return answer.json()

    def wait(self, run_id: str, done, timeout: float = 400) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(run_id)
            if run.get("state") and done(run["state"]):
                return run
            if time.monotonic() > deadline:
                raise RuntimeError(f"flow run {run_id} is still {run.get('state', {}).get('name')} after {timeout} s")
            time.sleep(1)

    def table_artifact(self, run_id: str, timeout: float = 60) -> dict:
        """The run's newest table artifact keyed ``ocp-task-<id>`` (a retried run has one per attempt)."""
        deadline = time.monotonic() + timeout
        while True:
            answer = self.http.post(
                "/artifacts/filter",
                json={
                    "artifacts": {
                        "flow_run_id": {"any_": [run_id]},
                        "type": {"any_": ["table"]},
                        "key": {"like_": "ocp-task-"},
                    },
                    "sort": "CREATED_DESC",
                    "limit": 10,
                },
            )
            answer.raise_for_status()
            found = [
                a
                for a in answer.json()
                if (a.get("key") or "").startswith("ocp-task-") and not a["key"].endswith("-summary")
            ]
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise RuntimeError(f"flow run {run_id} has no ocp-task-<id> table artifact after {timeout} s")
            time.sleep(1)

    def set_state(self, run_id: str, type_: str, name: str, message: str = "") -> None:
        answer = self.http.post(
            f"/flow_runs/{run_id}/set_state",
            json={"state": {"type": type_, "name": name, "message": message}, "force": True},
        )
        answer.raise_for_status()
        if answer.json()["status"] != "ACCEPT":
            raise RuntimeError(f"set_state {name} refused: {answer.text}")


def wait_healthy(api_url: str, process: subprocess.Popen, logfile: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited ({process.returncode}); see {logfile}")
        try:
            if httpx.get(api_url + "/health", timeout=3).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"prefect server did not answer within {timeout} s; see {logfile}")


# Does the artifact's table fit the page width? Measured in the 1,600 x 1,000 viewport, before the screenshot's resize.
# The UI wraps each <table> in a ``div[data-slot=table-container]`` with ``overflow-x: auto``: a too-wide table
# scrolls inside that box (its scrollWidth > clientWidth) rather than widening the page.
TABLE_WIDTHS_JS = """() => {
  const doc = document.documentElement;
  const table = [...document.querySelectorAll('table')].find(t => t.innerText.includes('agentd pid'))
             || document.querySelector('table');
  const sizes = el => el && {scrollWidth: el.scrollWidth, clientWidth: el.clientWidth,
                             left: Math.round(el.getBoundingClientRect().left),
                             right: Math.round(el.getBoundingClientRect().right)};
  let box = table ? table.parentElement : null;
  while (box && box !== document.body) {
    const overflow = getComputedStyle(box).overflowX;
    if (overflow === 'auto' || overflow === 'scroll') break;
    box = box.parentElement;
  }
  return {viewport: window.innerWidth, docScrollWidth: doc.scrollWidth, docClientWidth: doc.clientWidth,
          columns: table ? table.querySelectorAll('thead th').length : 0,
          table: sizes(table), scrollBox: box && box !== document.body ? sizes(box) : null};
}"""


def table_fit_report(m: dict) -> list[str]:
    """Human lines from TABLE_WIDTHS_JS's numbers."""
    lines = [
        f"viewport {m['viewport']} px; document.documentElement.scrollWidth {m['docScrollWidth']} "
        f"(clientWidth {m['docClientWidth']}): "
        + ("page scrolls horizontally" if m["docScrollWidth"] > m["viewport"] else "no horizontal page scroll")
    ]
    table, box = m.get("table"), m.get("scrollBox")
    if table is None:
        return lines + ["no <table> on the page"]
    lines.append(
        f"table ({m['columns']} columns): scrollWidth {table['scrollWidth']}, clientWidth "
        f"{table['clientWidth']}, x {table['left']}..{table['right']}: "
        + ("overflows itself" if table["scrollWidth"] > table["clientWidth"] else "no overflow of its own")
    )
    if box is not None:
        lines.append(
            f"its scroll box: scrollWidth {box['scrollWidth']}, clientWidth {box['clientWidth']}, "
            f"x {box['left']}..{box['right']}: "
            + (
                "HORIZONTAL SCROLLBAR (the table is wider than its box)"
                if box["scrollWidth"] > box["clientWidth"]
                else "no horizontal scrollbar"
            )
        )
    fits = (
        m["docScrollWidth"] <= m["viewport"]
        and table["scrollWidth"] <= table["clientWidth"]
        and (box is None or box["scrollWidth"] <= box["clientWidth"])
    )
    lines.append(f"the whole table fits {m['viewport']} px: {'yes' if fits else 'NO'}")
    return lines


def shoot_table(shooter: Shooter, artifact: dict, out: Path) -> Path:
    """Screenshot a table artifact's own page and print whether its table fits the viewport's width."""
    page_path = f"/artifacts/artifact/{artifact['id']}?tab=Artifact"
    log(f"table artifact {artifact['key']} ({artifact['id']}): {shooter.ui_url}{page_path}")
    widths: dict = {}
    written = shooter.shoot(
        page_path,
        out,
        [artifact["key"], "agentd pid", "monagent pid"],
        measure=lambda page: widths.update(page.evaluate(TABLE_WIDTHS_JS)),
    )
    print(f"{out.name}, artifact page {page_path}:", *table_fit_report(widths), sep="\n  ", flush=True)
    return written


def _terminal(state: dict) -> bool:
    return state["type"] in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED") and state["name"] != "AwaitingRetry"


class Shooter:
    """Headless Chromium (Debian's) through Playwright; one page per screenshot."""

    def __init__(self, ui_url: str, debug_dir: Path) -> None:
        from playwright.sync_api import sync_playwright

        self.ui_url, self.debug_dir = ui_url, debug_dir
        self._playwright = sync_playwright().start()
        self.browser = self._playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        self.context = self.browser.new_context(
            viewport=VIEWPORT, color_scheme="light", locale="en-US", timezone_id="UTC"
        )

    def shoot(
        self,
        path: str,
        out: Path,
        texts: list[str],
        settle: float = 2.0,
        measure: Callable[[object], None] | None = None,
    ) -> Path:
        """Open the UI at ``path``, wait for the network to go idle and every one of ``texts`` to be visible,
        then save a full-page screenshot to ``out``. ``measure(page)``, if given, runs just before, in the
        ``VIEWPORT``-sized page."""
        page = self.context.new_page()
        try:
            page.goto(self.ui_url + path, wait_until="domcontentloaded", timeout=UI_TIMEOUT_MS)
            self._idle(page)
            try:
                for text in texts:
                    page.get_by_text(text, exact=False).first.wait_for(state="visible", timeout=UI_TIMEOUT_MS)
            except Exception:
                page.screenshot(path=str(self.debug_dir / f"{out.stem}-timeout.png"), full_page=True)
                log(f"{text!r} never showed on {path}: what the page showed is in {self.debug_dir}")
                raise
            self._idle(page)
            time.sleep(settle)  # fonts, transitions
            if measure is not None:
                measure(page)
            # The whole page in one viewport, so that the sidebar's background runs to the bottom too.
            height = page.evaluate("Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)")
            page.set_viewport_size({"width": VIEWPORT["width"], "height": max(VIEWPORT["height"], int(height))})
            time.sleep(0.5)
            page.screenshot(path=str(out), full_page=True)
        finally:
            page.close()
        log(f"wrote {out}")
        return out

    @staticmethod
    def _idle(page) -> None:
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            page.wait_for_load_state("networkidle", timeout=30_000)
        except PlaywrightTimeout:  # the UI polls the API; the selectors below decide
            pass

    def close(self) -> None:
        try:
            self.browser.close()
        finally:
            self._playwright.stop()


def _environments(base: Path, api_url: str) -> tuple[dict[str, str], dict[str, str]]:
    """The environment of the Prefect server and CLI, and the worker's: all state under ``base``, nothing of ours."""
    env = {
        **os.environ,
        "PREFECT_HOME": str(base / "prefect-home"),
        "PREFECT_API_URL": api_url,
        "PREFECT_UI_API_URL": api_url,
        "PREFECT_UI_STATIC_DIRECTORY": str(base / "ui-static"),  # its built UI copy, not in site-packages
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "OCP_RESTART_HOME": str(base / "ocp-restart-home"),
    }
    for name in (
        "PREFECT_UI_ENABLED",
        "PREFECT_SERVER_UI_ENABLED",
        "PREFECT_API_AUTH_STRING",
        "PREFECT_SERVER_API_AUTH_STRING",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL",
        "PREFECT_PROFILE",
        "OCP_RESTART_STORE_URL",
        "OCP_RESTART_INVENTORY",
        "OCP_RESTART_INVENTORY_DIR",
    ):
        env.pop(name, None)
    worker_env = {
        **env,
        "PREFECT_HOME": str(base / "worker-home"),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
    }
    return env, worker_env


def _deploy_and_start_worker(
    children: Children, inventory: Path, env: dict[str, str], worker_env: dict[str, str], base: Path
) -> None:
    """``ocp-restart deploy`` the sandbox's hosts, then a process worker on its pool."""
    deploy = subprocess.run(
        [
            sys.executable,
            "-m",
            "deployments.cli",
            "deploy",
            "--host-ids",
            ",".join(map(str, HOSTS)),
            "--inventory",
            str(inventory),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if deploy.returncode != 0:
        raise RuntimeError(f"ocp-restart deploy failed: {deploy.stderr[-3000:]}")
    log(deploy.stderr.strip())
    (base / "worker").mkdir()
    children.start(
        "prefect worker",
        [
            _bin("prefect"),
            "worker",
            "start",
            "--pool",
            "ocp-restart",
            "--type",
            "process",
            "--name",
            "screenshots",
        ],
        worker_env,
        base / "worker.log",
        base / "worker",
    )


def _shoot_a_failed_run_and_its_retry(
    prefect: Prefect, deployment: dict[str, Any], box: Any, shooter: Shooter, out: Path
) -> list[Path]:
    """A run that FAILS on one host (its form shot meanwhile), its artifact, its Retry from the UI, COMPLETED."""
    written: list[Path] = []
    # The failing run first (it takes a while), the run form's screenshot meanwhile.
    bad = box.host(FAILING)
    bad.set_fault("start_fail")
    run_id = prefect.create_run(deployment["id"], {"host_ids": HOSTS, "options": {"timeouts": {"start_all": 6}}})
    log(f"flow run {run_id} created; host {FAILING} fails its start")
    written.append(
        shooter.shoot(
            f"/deployments/deployment/{deployment['id']}/run",
            out / "run-form.png",
            ["host_ids", "inventory", "options"],
        )
    )

    run = prefect.wait(run_id, _terminal)
    if run["state"]["type"] != "FAILED":
        raise RuntimeError(f"the run should have FAILED: {run['state']}")
    log(f"{run['name']}: {run['state']['name']}: {run['state']['message']}")
    written.append(
        shooter.shoot(
            f"/runs/flow-run/{run_id}?tab=Details",
            out / "failed-run.png",
            [run["name"], "Failed", f"host {FAILING}"],
        )
    )

    artifact = prefect.table_artifact(run_id)
    written.append(shoot_table(shooter, artifact, out / "artifact-failed.png"))

    bad.clear_fault("start_fail")
    prefect.set_state(run_id, "SCHEDULED", "AwaitingRetry", "Retry from the UI")
    log("Retry: AwaitingRetry (forced)")
    run = prefect.wait(run_id, _terminal)
    if run["state"]["type"] != "COMPLETED":
        raise RuntimeError(f"the retried run should be COMPLETED: {run['state']}")
    log(f"{run['name']}: {run['state']['name']}: {run['state']['message']}")
    written.append(
        shooter.shoot(f"/runs/flow-run/{run_id}?tab=Details", out / "recovery.png", [run["name"], "Completed"])
    )

    written.append(shoot_table(shooter, prefect.table_artifact(run_id), out / "artifact.png"))
    return written


def take(out: Path) -> list[Path]:
    from deployments.sandbox import Sandbox

    base = Path(tempfile.mkdtemp(prefix="ocp-restart-ui-"))
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    ui_url = f"http://127.0.0.1:{port}/v2"  # Prefect's UI v2 (the default one)
    env, worker_env = _environments(base, api_url)
    children = Children()
    shooter = None
    written: list[Path] = []
    ok = False
    try:
        server_log = base / "prefect-server.log"
        server = children.start(
            "prefect server",
            [_bin("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env,
            server_log,
            base,
        )
        wait_healthy(api_url, server, server_log)
        log(f"prefect server up: {ui_url}")
        with Sandbox(len(HOSTS), first_host_id=HOSTS[0]) as box:
            _deploy_and_start_worker(children, box.inventory_path, env, worker_env, base)
            prefect = Prefect(api_url)
            deployment = prefect.deployment(DEPLOYMENT)

            shooter = Shooter(ui_url, base)
            written += _shoot_a_failed_run_and_its_retry(prefect, deployment, box, shooter, out)
        ok = True
    finally:
        if shooter is not None:
            try:
                shooter.close()
            except Exception as exc:  # the teardown of the servers matters more
                log(f"closing the browser: {exc}")
        children.stop_all()
        if ok:
            shutil.rmtree(base, ignore_errors=True)
        else:
            log(f"logs kept in {base}")
    return written


def _sigterm(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.ui.screenshots", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"where to write the PNGs (default {DEFAULT_OUT})"
    )
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        parser.error(f"{CHROMIUM} is missing: apt-get install -y chromium")
    try:
        import playwright  # noqa: F401
    except ImportError:
        parser.error("playwright is missing: .venv/bin/pip install playwright (never `playwright install`)")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    # Ctrl-C and SIGTERM stop the run (teardown in take()'s finally) even when started in the background, where
    # SIGINT comes ignored: that would be inherited by the children, and a Prefect worker turns SIGTERM into SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _sigterm)
    started = time.monotonic()
    try:
        written = take(out)
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        return 130
    for path in written:
        print(path)
    log(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
