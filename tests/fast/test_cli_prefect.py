"""`ocp-restart status` / `prefect status|stop` on the local Prefect server's state files (#23); no server runs."""

from __future__ import annotations

import json
import os

import pytest

from deployments import cli_prefect
from flows.settings import Settings


def _state(tmp_path, **extra) -> Settings:
    config = Settings(home=tmp_path)
    folder = tmp_path / "prefect"
    (folder / "clients").mkdir(parents=True)
    info = {"url": "http://127.0.0.1:4200/api", "pid": os.getpid(), "state": "serving", "idle_seconds": 600.0}
    (folder / "server.json").write_text(json.dumps({**info, **extra}))
    (folder / "last-used").touch()
    return config


def test_status_says_not_running_without_a_live_supervisor(tmp_path, capsys):
    """#23: no server.json, or one whose supervisor is gone: not running, exit 3."""
    config = Settings(home=tmp_path)
    assert cli_prefect.print_status(config) == 3
    assert "not running" in capsys.readouterr().out
    dead = _state(tmp_path / "b", pid=2**22 + 12345)  # above pid_max's default: no such process
    assert cli_prefect.print_status(dead) == 3


def test_status_shows_url_pids_and_the_idle_stop(tmp_path, capsys):
    """#23: a serving server shows its UI address, its pids and when it stops by itself."""
    config = _state(tmp_path, server_pid=4242)
    assert cli_prefect.print_status(config) == 0
    out = capsys.readouterr().out
    assert "http://127.0.0.1:4200 " in out and f"supervisor pid {os.getpid()}" in out and "server pid 4242" in out
    assert "stops by itself in" in out


def test_stop_is_refused_while_a_cli_uses_the_server(tmp_path, capsys):
    """#23: `prefect stop` while a run uses the server would fail that run: refused (exit 4), naming the CLI; nothing
    is signalled (the "supervisor" here is this test's own process)."""
    config = _state(tmp_path, server_pid=4242)
    (tmp_path / "prefect" / "clients" / str(os.getpid())).touch()
    assert cli_prefect.stop(config) == 4
    assert f"in use by CLI process(es) {os.getpid()}" in capsys.readouterr().err
    assert "in use by 1 CLI process(es)" in (cli_prefect.print_status(config), capsys.readouterr().out)[1]


def test_what_a_run_imports_while_its_server_starts_exists():
    """#23: every module the CLI imports ahead of its flow run exists (a typo would fail silently there)."""
    import importlib.util

    from deployments import cli

    assert cli._FLOW_RUN_IMPORTS[0] == "flows.agent_ops"
    missing = [m for m in cli._FLOW_RUN_IMPORTS if importlib.util.find_spec(m) is None]
    assert missing == [], f"expected importable modules, got missing {missing}"


def test_the_installed_command_hands_the_gil_over_every_20_ms_and_a_python_caller_keeps_its_own():
    """#23: `ocp-restart` (main() without argv) sets its switch interval; main(argv) from Python changes nothing."""
    import subprocess
    import sys

    from deployments import cli

    probe = (
        "import sys; from deployments import cli; "
        "cli._main = lambda argv: print(sys.getswitchinterval()) or 0; cli.main()"
    )
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert (shown.returncode, shown.stdout.strip()) == (0, str(cli.SWITCH_INTERVAL_SECONDS)), shown
    before = sys.getswitchinterval()
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert sys.getswitchinterval() == before, f"expected {before} kept, got {sys.getswitchinterval()}"


def test_a_kept_server_says_it_has_no_idle_stop(tmp_path, capsys):
    """#23: server.json's idle_seconds null (`prefect start --idle-seconds never`): status says kept, no countdown."""
    config = _state(tmp_path, idle_seconds=None)
    assert cli_prefect.describe(config)["stops_in_seconds"] is None
    assert cli_prefect.print_status(config) == 0
    assert "kept: no idle stop" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "seconds"), [("never", float("inf")), ("NEVER", float("inf")), ("0", 0.0), ("86400", 86400.0)]
)
def test_idle_seconds_takes_seconds_or_never(text, seconds):
    """#23: `prefect start --idle-seconds` takes a number of seconds >= 0 or `never`."""
    assert cli_prefect.idle_seconds(text) == seconds


@pytest.mark.parametrize("text", ["-1", "soon", "inf", "nan", ""])
def test_idle_seconds_refuses_what_is_no_time(text):
    """#23: a negative, infinite or non-numeric --idle-seconds is refused, naming the value."""
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="expected a number of seconds >= 0 or 'never', got"):
        cli_prefect.idle_seconds(text)


def test_idle_seconds_goes_with_start_only(tmp_path, capsys):
    """#23: `prefect stop --idle-seconds 5` is bad input (exit 2), and nothing is stopped."""
    import argparse

    config = _state(tmp_path)
    args = argparse.Namespace(prefect_command="stop", idle_seconds=5.0, force=False, json=False)
    assert cli_prefect.cmd_prefect(args, config) == 2
    assert cli_prefect.describe(config) is not None  # still there
    assert "--idle-seconds goes with `prefect start`" in capsys.readouterr().err
