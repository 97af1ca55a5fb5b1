"""Shell text built from argv lists only, and the per-command marker that carries the remote process group id.

Hostile values here bypass the inventory's validation on purpose: quoting must hold on its own. Some tests run
the rendered text with the local /bin/sh (no sshd): that is what the host's shell does with it.
"""

from __future__ import annotations

import shlex
import subprocess
import threading
import time
from pathlib import Path

import pytest

from deployments.sandbox.fake_shell import split_commands
from deployments.sandbox.local import LocalRunner
from steps import agent as agent_module
from steps.agent import PROCESSES, SCRIPTS, STATUS_IF_CLI, STOP_ALL, VIEW_SCRIPTS, AgentControl
from steps.errors import CommandTimeout, SSHError
from steps.inventory import Host
from steps.runner import Script, integers, sh
from steps.ssh import KILL_GROUP, MAX_NOISE, SSHSession, _Marked, find_marker, kill_command, new_marker, wrap
from steps.testing import FakeRunner, UnexpectedCommand, result

HOSTILE = [
    "/opt/ocp agent",  # a space
    "/opt/it's",  # a single quote
    '/opt/"dq"',  # double quotes
    "/opt/$(touch PWNED)",  # command substitution
    "/opt/`touch PWNED`",  # backticks
    "/opt/a;touch PWNED",  # a separator
    "/opt/a && touch PWNED",  # an operator
    "/opt/a|touch PWNED",  # a pipe
    "/opt/$HOME/${IFS}x",  # parameter expansion
    "/opt/*",  # a glob
    "/opt/a\nb",  # a newline
    "-rf",  # looks like an option
    "",  # empty
    "/opt/\\back\\slash",  # backslashes
    "/opt/#comment",  # a comment sign
]


def local_sh(command: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run shell text as the host would: /bin/sh -c COMMAND."""
    return subprocess.run(["/bin/sh", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=10)


class TestSh:
    @pytest.mark.parametrize("value", HOSTILE)
    def test_one_argv_round_trips_through_shlex(self, value):
        """shlex.split of a rendered argv gives back the argv, whatever the value holds."""
        argv = ["/bin/ocp_agentctl", value, "status"]
        assert shlex.split(sh(argv)) == argv

    @pytest.mark.parametrize("sep", ["&&", "||", ";"])
    def test_a_list_splits_back_into_its_argvs_and_operators(self, sep):
        """The fake's parser reads an and-or list back exactly: every hostile value stays one word."""
        argvs = [["echo", value, "x"] for value in HOSTILE]
        parsed = split_commands(sh(*argvs, sep=sep))
        assert [argv for _, argv in parsed] == argvs
        assert [op for op, _ in parsed] == [None] + [sep] * (len(argvs) - 1)

    def test_the_shell_gets_the_values_verbatim_and_runs_nothing_else(self, tmp_path):
        """/bin/sh prints each hostile value back unchanged; no PWNED file appears."""
        command = sh(*(["printf", "%s|", value] for value in HOSTILE), ["true"], sep="&&")
        done = local_sh(command, tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout == "".join(f"{value}|" for value in HOSTILE)
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize("bad", ["ls -l", b"ls", [], ["ok", 3]], ids=["str", "bytes", "empty", "not-str"])
    def test_anything_but_an_argv_is_refused(self, bad):
        """A plain string (a pasted fragment), bytes, an empty argv or non-str words: TypeError."""
        with pytest.raises(TypeError):
            sh(bad)

    @pytest.mark.parametrize("sep", ["|", "&", "; rm -rf /;", ""])
    def test_only_fixed_operators_join(self, sep):
        """sep is one of && || ; and nothing else."""
        with pytest.raises(ValueError, match="sep must be"):
            sh(["true"], ["true"], sep=sep)

    @pytest.mark.parametrize("name", ["if", "for", "X=1", "PATH=/tmp"])
    def test_a_command_name_that_would_be_syntax_is_refused(self, name):
        """Reserved words and assignments stay bare under shlex.quote: refused as a command name."""
        with pytest.raises(ValueError, match="cannot be a command name"):
            sh([name, "x"])

    def test_integers_are_rendered_from_int_only(self):
        """integers() makes words of int(x): a pid that is not an integer fails instead of passing through."""
        assert integers([30, 4, 200]) == ["4", "30", "200"]
        with pytest.raises(ValueError):
            integers(["1; reboot"])


class TestScript:
    ECHO = Script("echo_args", 'printf "%s|" "$@"')

    @pytest.mark.parametrize("value", HOSTILE)
    def test_render_then_parse_gives_back_the_args(self, value):
        """Script.parse is render's inverse, for any value."""
        assert self.ECHO.parse(self.ECHO.render(value, "b", value)) == [value, "b", value]

    def test_parse_refuses_other_commands(self):
        """Another script, a bare body, or an argv list is not this script."""
        assert self.ECHO.parse(STATUS_IF_CLI.render("/x")) is None
        assert self.ECHO.parse(self.ECHO.body) is None
        assert self.ECHO.parse(sh(["printf", "%s|"])) is None
        assert all(script.parse(self.ECHO.render("a")) is None for script in SCRIPTS)

    def test_positional_parameters_reach_the_script_verbatim(self, tmp_path):
        """/bin/sh runs the body with the hostile values as $1..$n, unexpanded; nothing else runs."""
        done = local_sh(self.ECHO.render(*HOSTILE), tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout == "".join(f"{value}|" for value in HOSTILE)
        assert list(tmp_path.iterdir()) == []

    def test_a_body_is_one_line(self):
        """A multi-line body is refused: the command must survive any login shell's quoting."""
        with pytest.raises(ValueError, match="one line"):
            Script("two", "true\ntrue")

    def test_every_script_body_is_valid_sh(self, tmp_path):
        """`sh -n` accepts every script the agent and the SSH layer render."""
        for script in (*SCRIPTS, *VIEW_SCRIPTS, KILL_GROUP):
            done = subprocess.run(["/bin/sh", "-n", "-c", script.render("x")], capture_output=True, text=True)
            assert done.returncode == 0, (script.name, done.stderr)


def test_live_processes_are_read_from_proc_as_ps_printed_them(tmp_path):
    """#14: LIVE replaced `ps -p`, which read every process on the host (90 ms of CPU per call with 3,000 of them):
    the real /bin/sh answers pid, state and name for a live process, Z for a zombie, nothing for a gone pid, and
    LIVE_THEN_STATUS ends with the CLI's status and its exit status."""
    sleeper = subprocess.Popen(["sleep", "30"])
    zombie = subprocess.Popen(["true"])  # exits at once; not waited for until the end: a zombie meanwhile
    try:
        deadline = time.monotonic() + 5
        while not Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(") ", 1)[1].startswith("Z"):
            assert time.monotonic() < deadline, "the child never became a zombie"
            time.sleep(0.01)
        gone = 4_194_304 + 1  # above Linux's largest pid
        done = local_sh(agent_module.LIVE.render(str(sleeper.pid), str(zombie.pid), str(gone)), tmp_path)
        assert (done.returncode, done.stdout) == (0, f"{sleeper.pid} S sleep\n{zombie.pid} Z true\n"), done
        assert agent_module.parse_live(f"{sleeper.pid} S ocp_agentd\n{zombie.pid} Z ocp_agentd\n7 X ocp_agentd\n") == {
            sleeper.pid: "ocp_agentd"
        }
        cli = tmp_path / "ocp_agentctl"
        cli.write_text("#!/bin/sh\necho '{\"successful\":false}'; exit 1\n")
        cli.chmod(0o755)
        done = local_sh(agent_module.LIVE_THEN_STATUS.render(str(cli), str(sleeper.pid)), tmp_path)
        assert (done.returncode, done.stdout) == (
            1,
            f'{sleeper.pid} S sleep\n{agent_module.MARK}\n{{"successful":false}}\n',
        )
    finally:
        sleeper.kill()
        sleeper.wait()
        zombie.wait()


@pytest.fixture
def hostile_home(tmp_path) -> Path:
    """An agent home whose path holds quotes, $(), ; and spaces, with a CLI that prints its arguments."""
    home = tmp_path / 'ag\'ent $(touch PWNED); `touch PWNED` "x"'
    (home / "bin").mkdir(parents=True)
    (home / "run").mkdir()
    ctl = home / "bin" / "ocp_agentctl"
    ctl.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = status ]; then echo \'{"successful":true,"message":{"ready":true,"pid":1}}\'; '
        'else echo "{\\"successful\\":true,\\"message\\":\\"$*\\"}"; fi\n'
    )
    ctl.chmod(0o755)
    return home


class TestAgentCommandsWithAHostileHome:
    def test_every_command_runs_the_cli_at_that_path_and_nothing_else(self, hostile_home, tmp_path):
        """status, require_cli, ctl_then_status, stop_all, check_stopped: the real shell finds the CLI under the
        hostile path, and no PWNED file appears anywhere."""
        runner = LocalRunner(cwd=str(tmp_path))
        agent = AgentControl(runner, str(hostile_home), lambda line: None)
        deadline = time.monotonic() + 10
        assert agent.status(deadline, require_cli=True).running
        assert agent.ctl_then_status(
            ("service", "stop", "ocp_mgragent"),
            ("service", "start", "ocp_mgragent"),
            deadline=deadline,
            doing="restarting",
        ).running
        identities, stopped = agent.stop_all(deadline)
        assert identities == {} and stopped.ok and '"message":"stop"' in stopped.stdout
        assert agent.check_stopped({999999}, deadline) == ({}, agent_module.AgentStatus(True, True, {"ocp_agentd": 1}))
        assert not any(path.name == "PWNED" for path in tmp_path.rglob("*"))
        assert len(runner.commands) == 4

    def test_a_missing_cli_under_a_hostile_path_is_named(self, tmp_path):
        """require_cli: the CLI is not there: AgentError naming the (hostile) path; nothing else ran."""
        home = str(tmp_path / "no $(touch PWNED) home")
        agent = AgentControl(LocalRunner(cwd=str(tmp_path)), home, lambda line: None)
        with pytest.raises(agent_module.AgentError, match="is missing or not executable"):
            agent.status(time.monotonic() + 10, require_cli=True)
        assert list(tmp_path.iterdir()) == []

    def test_stop_all_reads_the_pid_files_under_the_hostile_path(self, hostile_home, tmp_path):
        """The identities script reads run/<name>.pid under the hostile path: a dead pid gets `-`, junk is skipped,
        and a live process that is no agent's (a sleep) is not an identity: its pid file is removed, it lives on."""
        sleeper = subprocess.Popen(["sleep", "30"])
        try:
            (hostile_home / "run" / "ocp_agentd.pid").write_text(f"{sleeper.pid}\n")
            (hostile_home / "run" / "ocp_mgragent.pid").write_text("$(touch PWNED)")
            (hostile_home / "run" / "ocp_monagent.pid").write_text("4000000")
            agent = AgentControl(LocalRunner(cwd=str(tmp_path)), str(hostile_home), lambda line: None)
            identities, _ = agent.stop_all(time.monotonic() + 10)
            assert sleeper.poll() is None
        finally:
            sleeper.kill()
            sleeper.wait()
        assert identities == {"ocp_monagent": (4000000, None)}
        assert not (hostile_home / "run" / "ocp_agentd.pid").exists()
        assert not any(path.name == "PWNED" for path in tmp_path.rglob("*"))

    def test_every_command_is_an_argv_list_or_a_known_script(self):
        """What AgentControl sends, for a hostile home, reads back (split_commands or Script.parse) with the CLI
        path as one intact word."""
        home = "/opt/a'b $(x); `y` && z"
        ctl = f"{home}/bin/ocp_agentctl"
        seen: list[str] = []

        def handler(command: str):
            seen.append(command)
            if not any(script.parse(command) is not None for script in SCRIPTS):
                split_commands(command)  # raises UnexpectedCommand for anything but an and-or list of argvs
            status = '{"successful":true,"message":{"pid":1}}'
            if agent_module.LIVE_THEN_STATUS.parse(command) is not None:
                return result(command, f"{agent_module.MARK}\n{status}")
            return result(command, status if command.endswith(" status") else "")

        agent = AgentControl(FakeRunner(handler), home, lambda line: None)
        deadline = time.monotonic() + 5
        agent.status(deadline)
        agent.stop_all(deadline)
        agent.start_times({5, 6}, deadline)
        agent.signal({5}, "KILL", deadline)
        agent.live_processes({5}, deadline)
        assert STOP_ALL.parse(seen[1]) == [ctl, home, *PROCESSES]
        assert split_commands(seen[0]) == [(None, [ctl, "status"])]
        assert agent_module.START_TIMES.parse(seen[2]) == ["5", "6"]
        assert agent_module.SIGNAL.parse(seen[3]) == ["KILL", "5"]
        assert agent_module.LIVE.parse(seen[4]) == ["5"]
        agent.check_stopped({7, 5}, deadline)
        assert agent_module.LIVE_THEN_STATUS.parse(seen[5]) == [ctl, "5", "7"]

    @pytest.mark.parametrize(
        "text", ["a | b", "a > f", "a $(b)", "a `b`", "(a)", "a &", "a\nb", "a && && b", '"$HOME"', "a 'b"]
    )
    def test_the_fake_refuses_shell_syntax_sh_never_renders(self, text):
        """Pipes, redirections, expansions, subshells, background jobs: UnexpectedCommand, not a guess."""
        with pytest.raises(UnexpectedCommand):
            split_commands(text)


class TestMarker:
    M = "ocp-restart-0123456789abcdef"

    def test_the_pgid_comes_from_the_marker_line_only(self):
        """A banner line that is a number is skipped: the pgid is the marker's."""
        data = b"4242\nWelcome to host1\n" + f"{self.M} 777\n".encode() + b"out\n"
        assert find_marker(data, self.M) == (777, len(data) - 4)

    @pytest.mark.parametrize(
        "data",
        [b"", b"4242\n", b"ocp-restart-ffffffffffffffff 999\n", f"{M} 77".encode(), f"{M} x\n".encode()],
        ids=["empty", "a-number", "another-marker", "line-not-ended", "not-digits"],
    )
    def test_no_marker_line_no_pgid(self, data):
        """Without the full line `MARKER DIGITS`, there is no pgid (a banner's number, another call's marker)."""
        assert find_marker(data, self.M) is None

    def test_byte_by_byte_arrival(self):
        """Output arriving one byte at a time: the pgid is found, banner dropped, the command's output intact."""
        data = b"Last login: yesterday\n12345\n" + f"{self.M} 31337\n".encode() + b'{"successful":true}\n'
        out = _Marked(self.M)
        seen = []
        for i in range(len(data)):
            out.add(data[i : i + 1])
            seen.append(out.pgid)
        assert out.pgid == 31337 and out.text() == '{"successful":true}\n'
        assert out.noise == b"Last login: yesterday\n12345\n"
        assert seen.index(31337) == data.index(b"31337\n") + len("31337")  # known once its newline arrived

    def test_a_marker_split_across_chunks(self):
        """The marker line cut in the middle of the marker and of the pgid is still read."""
        out = _Marked(self.M)
        for chunk in (b"banner\nocp-res", b"tart-0123456789abcdef 12", b"3\nok\n"):
            out.add(chunk)
        assert (out.pgid, out.text()) == (123, "ok\n")

    def test_text_printed_without_a_newline_before_the_marker(self):
        """A banner with no trailing newline ends up before the marker on its line: still found, still dropped."""
        out = _Marked(self.M)
        out.add(f"no-newline-banner{self.M} 55\nresult".encode())
        assert (out.pgid, out.text(), out.noise) == (55, "result", b"no-newline-banner")

    def test_a_flood_before_the_marker_is_bounded(self):
        """Megabytes of login noise: at most MAX_NOISE kept, and the marker after it still found."""
        out = _Marked(self.M)
        for _ in range(40):
            out.add(b"n" * 65536)
            assert len(out._head) <= MAX_NOISE
        out.add(f"{self.M} 9\nx".encode())
        assert (out.pgid, out.text()) == (9, "x")

    def test_a_marker_like_line_in_the_commands_output_is_output(self):
        """After the marker, everything is the command's, even a line that looks like another marker."""
        out = _Marked(self.M)
        out.add(f"{self.M} 9\n{self.M} 10\n".encode())
        assert (out.pgid, out.text()) == (9, f"{self.M} 10\n")

    def test_markers_are_random_per_command(self):
        """Two commands never share a marker (a banner cannot predict one)."""
        markers = {new_marker() for _ in range(100)}
        assert len(markers) == 100 and all(m.startswith("ocp-restart-") and len(m) == 28 for m in markers)

    def test_the_wrapped_command_prints_marker_and_pid_then_runs_verbatim(self, tmp_path):
        """/bin/sh runs wrap(): first `MARKER PID` (the shell's own pid), then the command, hostile text intact."""
        command = sh(["printf", "%s|", *HOSTILE])
        done = local_sh(wrap(command, self.M), tmp_path)
        marker, _, rest = done.stdout.partition("\n")
        assert marker.split(" ")[0] == self.M and marker.split(" ")[1].isdigit()
        assert rest == "".join(f"{value}|" for value in HOSTILE)
        assert list(tmp_path.iterdir()) == []

    def test_the_kill_command_names_the_group_as_an_integer(self):
        """kill_command(pgid) runs KILL_GROUP with str(int(pgid)) as $1, inside /bin/sh -c."""
        words = shlex.split(kill_command(777))
        assert words[:3] == ["exec", "/bin/sh", "-c"] and KILL_GROUP.parse(words[3]) == ["777"]
        with pytest.raises(ValueError):
            kill_command("777; reboot")  # type: ignore[arg-type]


# -- SSHSession over a fake paramiko transport ----------------------------------------------------------------


class FakeChannel:
    """Just enough of paramiko.Channel for SSHSession._run: stdout chunks, then an exit status (or a hang)."""

    def __init__(self, transport: FakeTransport) -> None:
        self.transport = transport
        self.status_event = threading.Event()
        self.closed = self.eof_received = False
        self.chunks: list[bytes] = []
        self.status = 0

    def exec_command(self, command: str) -> None:
        self.transport.sent.append(command)
        words = shlex.split(command)
        if words[0] == "echo":  # a command: `echo MARKER $$; exec /bin/sh -c CMD`
            banner, status = self.transport.behaviour
            marker = words[1]
            self.chunks = [
                banner,
                f"{marker} {self.transport.pgid}\n".encode()[:5],
                f"{marker} {self.transport.pgid}\n".encode()[5:],
                b"output\n",
            ]
            if status is not None:
                self.status, self.eof_received = status, True
                self.status_event.set()
        else:  # the kill
            self.status_event.set()

    def recv_ready(self) -> bool:
        return bool(self.chunks)

    def recv(self, size: int) -> bytes:
        return self.chunks.pop(0)

    def recv_stderr_ready(self) -> bool:
        return False

    def exit_status_ready(self) -> bool:
        return self.status_event.is_set()

    def recv_exit_status(self) -> int:
        return self.status

    def close(self) -> None:
        self.closed = True


class FakeTransport:
    def __init__(self, banner: bytes, status: int | None, pgid: int = 777) -> None:
        self.behaviour, self.pgid, self.sent = (banner, status), pgid, []

    def is_active(self) -> bool:
        return True

    def open_session(self, timeout: float) -> FakeChannel:
        return FakeChannel(self)

    def close(self) -> None:
        pass


def session_over(transport: FakeTransport) -> SSHSession:
    session = SSHSession(Host(id=1, name="h1", address="127.0.0.1"))
    session._transport = transport  # type: ignore[assignment]
    return session


class TestSessionWithABanner:
    def test_the_banner_is_not_the_commands_output(self):
        """A login script printing `4242` first: the result's stdout is the command's output alone."""
        transport = FakeTransport(b"4242\n", status=0)
        done = session_over(transport).run("true", deadline=time.monotonic() + 5)
        assert (done.stdout, done.exit_status) == ("output\n", 0)
        assert shlex.split(transport.sent[0])[-1] == "true"

    def test_a_timeout_kills_the_marked_group_never_the_banners_number(self):
        """A hung command after a numeric banner: the kill targets the marker's pgid (777), not 4242."""
        transport = FakeTransport(b"4242\n", status=None, pgid=777)
        with pytest.raises(CommandTimeout, match="killed its process group 777") as raised:
            session_over(transport).run("sleep 100", deadline=time.monotonic() + 0.2)
        kill = shlex.split(transport.sent[1])
        assert KILL_GROUP.parse(kill[3]) == ["777"] and "4242" not in transport.sent[1]
        assert raised.value.output == "output"

    def test_no_marker_at_all_is_an_error_not_a_result(self):
        """The host printed only a banner (our command never ran): SSHError quoting it, not an empty result."""
        transport = FakeTransport(b"This account is currently not available.\n", status=1)
        session = session_over(transport)

        def no_marker(command: str) -> None:
            transport.sent.append(command)
            channel.chunks = [b"This account is currently not available.\n"]
            channel.status = 1
            channel.eof_received = True
            channel.status_event.set()

        channel = FakeChannel(transport)
        channel.exec_command = no_marker  # type: ignore[method-assign]
        transport.open_session = lambda timeout: channel  # type: ignore[method-assign]
        with pytest.raises(SSHError, match="(?s)did not run 'true' as sent.*currently not available"):
            session.run("true", deadline=time.monotonic() + 5)


def test_known_hosts_index_answers_as_paramiko_does(tmp_path):
    """Our indexed known_hosts (linear parse, #14) finds what paramiko's HostKeys finds: plain and hashed names,
    several names per line, comments and junk skipped, the first key of a type winning."""
    import paramiko

    from steps.ssh import KnownHosts

    a, b, c = (paramiko.ECDSAKey.generate() for _ in range(3))
    line = lambda names, key: f"{names} {key.get_name()} {key.get_base64()}\n"  # noqa: E731
    hashed = paramiko.HostKeys.hash_host("[127.0.0.9]:2222")
    path = tmp_path / "known_hosts"
    hashed_db = paramiko.HostKeys.hash_host("db-2")
    path.write_text(
        "# a comment\n\nnot a host key line\n"
        + line("10.0.0.1,db-1", a)
        + line("10.0.0.1", b)
        + line(hashed, c)
        + line("[127.0.0.2]:2200", b)
        + line(hashed_db, a)
        + line("db-2", b)
    )
    ours, theirs = KnownHosts.load(str(path)), paramiko.HostKeys(str(path))
    for name in ("10.0.0.1", "db-1", "[127.0.0.9]:2222", "[127.0.0.2]:2200", "10.0.0.2", "db-2"):
        expected = dict(theirs.lookup(name) or {})
        assert ours.lookup(name) == expected, name
    assert ours.lookup("10.0.0.1") == {a.get_name(): a}
    assert ours.lookup("[127.0.0.9]:2222") == {c.get_name(): c}
    assert ours.lookup("10.0.0.2") == {}
    assert ours.lookup("db-2") == {a.get_name(): a}  # the hashed line comes first
