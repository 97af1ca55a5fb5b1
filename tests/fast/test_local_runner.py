"""deployments.sandbox.local.LocalRunner: SSHSession's contract (deadline, cancel, group kill) on this machine."""

from __future__ import annotations

import time

import pytest

from deployments.sandbox.local import LocalRunner
from deployments.sandbox.procs import is_alive
from steps.errors import CommandTimeout, SubtaskCancelled


def soon(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


class TestLocalRunner:
    def test_a_command_gives_its_exit_status_and_both_streams(self):
        """stdout, stderr and the exit status come back apart, as over SSH."""
        done = LocalRunner().run("echo out; echo err >&2; exit 3", deadline=soon())
        assert (done.exit_status, done.stdout, done.stderr) == (3, "out\n", "err\n")

    def test_a_command_killed_by_a_signal_exits_minus_one(self):
        """Killed by a signal, no exit status: -1, as paramiko reports it."""
        assert LocalRunner().run("kill -KILL $$", deadline=soon()).exit_status == -1

    def test_a_passed_deadline_runs_nothing(self, tmp_path):
        """The deadline is gone: CommandTimeout, and the command never ran."""
        runner = LocalRunner(cwd=str(tmp_path))
        with pytest.raises(CommandTimeout, match="deadline passed before running"):
            runner.run("touch ran", deadline=time.monotonic() - 1)
        assert runner.commands == [] and list(tmp_path.iterdir()) == []

    def test_the_deadline_kills_the_whole_process_group(self, tmp_path):
        """A command past its deadline: its process group is killed (its children too), CommandTimeout carries
        what it printed."""
        pid_file = tmp_path / "child"
        runner = LocalRunner()
        with pytest.raises(CommandTimeout, match="did not finish within .* killed its process group") as raised:
            runner.run(f"sleep 60 & echo $! > {pid_file}; echo started; wait", deadline=soon(0.3))
        assert raised.value.output == "started"
        assert not is_alive(int(pid_file.read_text())) and len(runner.killed) == 1

    def test_a_cancel_kills_the_command_before_its_deadline(self):
        """stop() turns True: SubtaskCancelled with the output so far, well before the deadline."""
        started = time.monotonic()
        with pytest.raises(SubtaskCancelled, match="cancelled by an operator .*; its output:\nstarted"):
            LocalRunner().run(
                "echo started; sleep 60", deadline=soon(30), stop=lambda: time.monotonic() - started > 0.2
            )
        assert time.monotonic() - started < 2

    def test_the_command_runs_in_a_clean_environment(self, monkeypatch):
        """Only PATH and LANG (and the shell's PWD): nothing of the test process leaks in."""
        monkeypatch.setenv("OCP_LOCAL_RUNNER_LEAK", "1")
        done = LocalRunner().run("env", deadline=soon())
        assert sorted(line.split("=")[0] for line in done.stdout.splitlines()) == ["LANG", "PATH", "PWD"]
