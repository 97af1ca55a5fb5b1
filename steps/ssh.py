"""The SSH layer: one paramiko connection per host, commands with real deadlines.

Why not ``SSHClient.exec_command`` + ``recv_exit_status()``: the latter ignores timeouts (paramiko #1815), and
closing a channel can leave the remote process running (paramiko #2510). So every command runs as the leader of
its own process group (sshd makes the session's shell a session leader; we ``exec`` the command in it), reports
that group id first, and is read against an overall deadline; on timeout the whole group is killed remotely.

The group id is read back from a line ``MARKER PGID`` with a marker random per command: a login script or a
ForceCommand banner that prints first can neither be mistaken for it nor reach the command's stdout.
"""

from __future__ import annotations

import logging
import os
import secrets
import shlex
import socket
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import paramiko

from .errors import AuthenticationError, CommandTimeout, ConnectError, HostKeyError, SSHError, SubtaskCancelled
from .inventory import Host
from .runner import CommandResult, Runner, Script, integers

T = TypeVar("T")

# paramiko logs every handshake failure with a traceback; our own errors say what happened, once.
logging.getLogger("paramiko.transport").setLevel(logging.CRITICAL)
log = logging.getLogger(__name__)

MAX_OUTPUT = 256 * 1024  # per stream; a flooding agent must not eat our memory or the task log
MAX_NOISE = 64 * 1024  # what a login script may print before the marker that we keep (for an error message)
_KILL_GRACE = 1.0
# paramiko's transport thread wakes every 0.1 s on an idle connection (its socket timeout) to look for a close,
# a keepalive or a rekey to do: ~36 us of CPU and a GIL grab each time, 0.36 of a core for 1,000 open hosts. None
# of those needs 0.1 s here (no keepalive, no rekey in a restart's few kilobytes, and close() shuts the socket down,
# which wakes the thread at once), so once the session is up the thread sleeps in recv() for this long instead.
IDLE_POLL_SECONDS = 5.0
# How often a running command's wait looks at the operator's cancel and the deadline (output and the exit status
# wake it at once).
COMMAND_POLL_SECONDS = 0.2
# TERM the process group $1, wait up to 1 s for it to go, then KILL what is left.
KILL_GROUP = Script(
    "kill_group",
    'kill -TERM "-$1" 2>/dev/null || exit 0; i=0; '
    'while kill -0 "-$1" 2>/dev/null && [ $i -lt 10 ]; do sleep 0.1; i=$((i+1)); done; '
    'kill -KILL "-$1" 2>/dev/null; exit 0',
)


class _ParsedFiles(Generic[T]):
    """Files parsed once and reused while they do not change (same inode, size, mtime and ctime).

    Hosts usually share one known_hosts file and one key: parsing them per connection cost N parses of an N-line
    file for N hosts (0.38 s of a 100-host run). A file that changes (a key accepted, a key rotated) is re-read.
    """

    def __init__(self, parse: Callable[[str], T]) -> None:
        self._parse = parse
        self._items: dict[str, tuple[tuple[int, ...], T]] = {}
        self._lock = threading.Lock()

    def get(self, path: os.PathLike[str] | str) -> T:
        name = str(path)
        st = os.stat(name)  # FileNotFoundError and friends reach the caller, as an open() would
        identity = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with self._lock:
            hit = self._items.get(name)
        if hit is not None and hit[0] == identity:
            return hit[1]
        value = self._parse(name)  # errors are not cached: the next connection tries again
        with self._lock:
            self._items[name] = (identity, value)
        return value


class KnownHosts:
    """A known_hosts file indexed by host name. paramiko's ``HostKeys.load`` checks each line against every line
    before it and each lookup scans them all: with 1,000 hosts, half a million comparisons per parse (#14). Same
    rules: comments and malformed lines skipped, hashed ``|1|`` names matched by their HMAC, and for each key type
    the key on the earliest line wins."""

    def __init__(self) -> None:
        self._plain: dict[str, dict[str, tuple[int, paramiko.PKey]]] = {}  # name -> key type -> (line, key)
        self._hashed: list[tuple[int, str, paramiko.PKey]] = []
        self._hashed_found: dict[str, dict[str, tuple[int, paramiko.PKey]]] = {}  # one HMAC per hashed line per name

    @classmethod
    def load(cls, path: str) -> KnownHosts:
        known = cls()
        with open(path, encoding="utf-8", errors="replace") as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                try:
                    entry = paramiko.hostkeys.HostKeyEntry.from_line(line, lineno)
                except paramiko.SSHException:
                    continue
                if entry is None:
                    continue
                for name in entry.hostnames:
                    if name.startswith("|1|"):
                        known._hashed.append((lineno, name, entry.key))
                    else:
                        known._plain.setdefault(name, {}).setdefault(entry.key.get_name(), (lineno, entry.key))
        return known

    def lookup(self, name: str) -> dict[str, paramiko.PKey]:
        """Key type -> key for ``name`` (empty if the file has none)."""
        if name not in self._hashed_found:
            matches: dict[str, tuple[int, paramiko.PKey]] = {}
            for lineno, hashed, key in self._hashed:
                if paramiko.HostKeys.hash_host(name, hashed) == hashed:
                    matches.setdefault(key.get_name(), (lineno, key))
            self._hashed_found[name] = matches
        found = dict(self._plain.get(name, {}))
        for key_type, (lineno, key) in self._hashed_found[name].items():
            if key_type not in found or lineno < found[key_type][0]:
                found[key_type] = (lineno, key)
        return {key_type: key for key_type, (_, key) in found.items()}


_KNOWN_HOSTS: _ParsedFiles[KnownHosts] = _ParsedFiles(KnownHosts.load)
_KEYS: _ParsedFiles[paramiko.PKey] = _ParsedFiles(paramiko.PKey.from_path)


def fingerprint(key: paramiko.PKey) -> str:
    return str(key.fingerprint)  # "SHA256:..." as OpenSSH prints it


def known_hosts_name(host: Host) -> str:
    return host.address if host.ssh_port == 22 else f"[{host.address}]:{host.ssh_port}"


class SSHSession:
    """A verified, authenticated connection to one host. Commands on it run one at a time."""

    def __init__(self, host: Host, *, accept_new_host_key: bool = False) -> None:
        self.host = host
        self.accept_new_host_key = accept_new_host_key
        self._transport: paramiko.Transport | None = None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> SSHSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._transport is not None and self._transport.is_active()

    def connect(self, *, deadline: float) -> list[str]:
        """Connect, verify the host key, authenticate. Returns notes worth logging (e.g. a key accepted)."""
        host, notes = self.host, []
        remaining = _remaining(deadline, f"connecting to {host.label}")
        try:
            sock = socket.create_connection((host.address, host.ssh_port), timeout=remaining)
        except OSError as exc:
            raise ConnectError(f"{host.label}: cannot connect: {exc.strerror or exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # 3 ms instead of 45 ms per command
        transport = paramiko.Transport(sock)
        try:
            remaining = _remaining(deadline, f"connecting to {host.label}")
            transport.banner_timeout = transport.handshake_timeout = transport.auth_timeout = remaining
            try:
                transport.start_client(timeout=remaining)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise ConnectError(f"{host.label}: SSH handshake failed: {exc or type(exc).__name__}") from None
            notes += self._verify_host_key(transport.get_remote_server_key())
            self._authenticate(transport)
        except BaseException:
            transport.close()
            raise
        sock.settimeout(IDLE_POLL_SECONDS)  # after the handshake, whose own timeouts rely on paramiko's 0.1 s
        self._transport, self._sock = transport, sock
        return notes

    def _verify_host_key(self, key: paramiko.PKey) -> list[str]:
        host, name = self.host, known_hosts_name(self.host)
        known = KnownHosts()
        try:
            known = _KNOWN_HOSTS.get(host.known_hosts)
        except FileNotFoundError:
            if not self.accept_new_host_key:
                raise HostKeyError(
                    f"{host.label}: known_hosts file {host.known_hosts} does not exist; cannot verify the host key "
                    f"{key.get_name()} {fingerprint(key)}. Nothing was executed."
                ) from None
        except (OSError, paramiko.SSHException) as exc:
            raise HostKeyError(f"{host.label}: cannot read known_hosts {host.known_hosts}: {exc}") from None
        entry = known.lookup(name)
        expected = entry.get(key.get_name())
        if expected is not None:
            if expected == key:
                return []
            raise HostKeyError(
                f"{host.label}: HOST KEY CHANGED. known_hosts {host.known_hosts} has {key.get_name()} "
                f"{fingerprint(expected)} for {name}, the host presented {fingerprint(key)}. "
                "Refusing to connect; nothing was executed. If the change is legitimate, update known_hosts."
            )
        if entry:
            raise HostKeyError(
                f"{host.label}: known_hosts has {sorted(entry.keys())} key(s) for {name}, the host presented "
                f"{key.get_name()} {fingerprint(key)}. Refusing to connect; nothing was executed."
            )
        if not self.accept_new_host_key:
            raise HostKeyError(
                f"{host.label}: host key {key.get_name()} {fingerprint(key)} is not in {host.known_hosts} "
                f"(looked up as {name}). Refusing to connect; nothing was executed. Add it to known_hosts, "
                "or opt in to accepting new host keys."
            )
        line = f"{name} {key.get_name()} {key.get_base64()}\n"
        host.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with open(host.known_hosts, "a", encoding="utf-8") as fh:
            fh.write(line)
        return [f"accepted NEW host key {key.get_name()} {fingerprint(key)} for {name}; added to {host.known_hosts}"]

    def _authenticate(self, transport: paramiko.Transport) -> None:
        host = self.host
        try:
            pkey = _KEYS.get(host.key_file)
        except FileNotFoundError:
            raise AuthenticationError(f"{host.label}: key file {host.key_file} not found") from None
        except paramiko.PasswordRequiredException:
            raise AuthenticationError(
                f"{host.label}: key file {host.key_file} is passphrase-protected, which is not supported yet; "
                "use a dedicated unencrypted deploy key"
            ) from None
        except (paramiko.SSHException, OSError, ValueError) as exc:
            raise AuthenticationError(f"{host.label}: cannot load key file {host.key_file}: {exc}") from None
        try:
            transport.auth_publickey(host.user, pkey)
        except paramiko.AuthenticationException:
            raise AuthenticationError(
                f"{host.label}: the host refused key {host.key_file} ({fingerprint(pkey)}) for user {host.user!r}"
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectError(f"{host.label}: authentication did not complete: {exc}") from None

    def close(self) -> None:
        if self._sock is not None:
            try:  # wakes the transport thread out of its recv() now, not IDLE_POLL_SECONDS later
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the host
        if self._transport is not None:
            self._transport.close()
        self._transport = self._sock = None

    def run(self, command: str, *, deadline: float, stop: Callable[[], bool] | None = None) -> CommandResult:
        """Run ``command`` (a shell string we built and quoted) before ``deadline``.

        Raises CommandTimeout (or SubtaskCancelled when ``stop()`` turns True) after killing the command's
        process group on the host.
        """
        with self._lock:
            return self._run(command, deadline, stop)

    def _run(self, command: str, deadline: float, stop: Callable[[], bool] | None) -> CommandResult:
        transport = self._transport
        if transport is None or not transport.is_active():
            raise ConnectError(f"{self.host.label}: not connected")
        started = time.monotonic()
        remaining = _remaining(deadline, f"running {command!r} on {self.host.label}")
        marker = new_marker()
        try:
            chan = transport.open_session(timeout=remaining)
            chan.exec_command(wrap(command, marker))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectError(f"{self.host.label}: cannot open a channel: {exc}") from None
        out, err = _Marked(marker), _Capped()
        try:
            while not chan.status_event.wait(min(COMMAND_POLL_SECONDS, max(0.0, deadline - time.monotonic()))):
                _drain(chan, out, err)
                if stop is not None and stop():
                    output, note = self._abort(chan, out, err)
                    raise SubtaskCancelled(
                        f"cancelled by an operator while {command!r} ran; {note}"
                        + (f"; its output:\n{output}" if output else "")
                    )
                if time.monotonic() >= deadline:
                    output, note = self._abort(chan, out, err)
                    raise CommandTimeout(
                        f"{self.host.label}: {command!r} did not finish within "
                        f"{time.monotonic() - started:.1f} s; {note}",
                        output=output,
                    )
                if chan.closed and not chan.exit_status_ready():
                    raise ConnectError(f"{self.host.label}: connection lost while running {command!r}")
            # sshd sends exit-status as soon as the process exits, and may still be forwarding its last output:
            # the output is complete only at EOF.
            while not chan.eof_received and not chan.closed and time.monotonic() < deadline:
                _drain(chan, out, err)
                time.sleep(0.001)
            _drain(chan, out, err)
            status = chan.recv_exit_status()  # already arrived: status_event is set
            if status == -1 and not chan.eof_received:
                # paramiko closes every channel of a dropped transport with no exit status (-1) and no EOF; sshd
                # sends EOF before closing even for a command a signal killed (#22's flaky fleet).
                text = _join(out.text(), err.text())
                raise ConnectError(
                    f"{self.host.label}: connection lost while running {command!r} (after "
                    f"{time.monotonic() - started:.2f} s; it may have gone on on the host)"
                    + (f"; it printed:\n{text}" if text else "")
                )
        finally:
            chan.close()
        if out.pgid is None:
            raise SSHError(
                f"{self.host.label}: the host did not run {command!r} as sent (no start marker in its output; "
                f"exit status {status})"
                + (f"; it printed:\n{_join(out.text(), err.text())}" if out.text() or err.text() else "")
            )
        return CommandResult(command, status, out.text(), err.text(), time.monotonic() - started)

    def _abort(self, chan: paramiko.Channel, out: _Marked, err: _Capped) -> tuple[str, str]:
        """Kill the command's process group on the host; returns (its output so far, what was done)."""
        pgid = out.pgid
        killed = self._kill_group(pgid)
        _drain(chan, out, err)
        note = (
            f"killed its process group {pgid} on the host"
            if killed
            else "could not kill it on the host (no process group id); it may still run"
        )
        return _join(out.text(), err.text()), note

    def _kill_group(self, pgid: int | None) -> bool:
        transport = self._transport
        if pgid is None or transport is None or not transport.is_active():
            return False
        try:
            chan = transport.open_session(timeout=5)
            chan.exec_command(kill_command(pgid))
            done: bool = chan.status_event.wait(_KILL_GRACE + 4)
            chan.close()
            return done
        except (paramiko.SSHException, OSError, EOFError):
            return False


class _Capped:
    """A byte buffer that keeps the first MAX_OUTPUT bytes and counts the rest."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        room = MAX_OUTPUT - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        self.dropped += max(0, len(chunk) - max(room, 0))

    def text(self) -> str:
        text = bytes(self.data).decode("utf-8", errors="replace")
        if self.dropped:
            text += f"\n[... {self.dropped} more bytes of output dropped]"
        return text


def new_marker() -> str:
    """A marker for one command: random, so that nothing printed before the command can forge its line."""
    return "ocp-restart-" + secrets.token_hex(8)


def wrap(command: str, marker: str) -> str:
    """What the login shell runs: print ``MARKER PGID``, then become ``/bin/sh -c COMMAND``.

    ``$$`` is the shell sshd started with setsid(): a session and process group leader; exec keeps the pid.
    """
    return shlex.join(["echo", marker]) + " $$; " + shlex.join(["exec", "/bin/sh", "-c", command])


def kill_command(pgid: int) -> str:
    """What the login shell runs to TERM, then KILL, process group ``pgid``."""
    return shlex.join(["exec", "/bin/sh", "-c", KILL_GROUP.render(*integers([pgid]))])


def find_marker(data: bytes, marker: str) -> tuple[int, int] | None:
    """(the pgid, where the command's own output begins) if ``data`` holds the line ``MARKER PGID``; else None.

    Whatever precedes the marker (a login banner, a line that looks like a number) is not the command's.
    """
    key = marker.encode() + b" "
    at = data.find(key)
    end = data.find(b"\n", at) if at >= 0 else -1
    if end < 0:
        return None  # not (all) there yet
    digits = data[at + len(key) : end].rstrip(b"\r")
    return (int(digits), end + 1) if digits.isdigit() and len(digits) <= 10 else None


class _Marked:
    """A command's stdout: bytes before its ``MARKER PGID`` line are set aside (at most MAX_NOISE of them), the
    pgid is read from that line however the output is chunked, and what follows is the command's (capped)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.pgid: int | None = None
        self.out = _Capped()
        self._head = bytearray()
        self.noise = b""  # what the host printed before the marker

    def add(self, chunk: bytes) -> None:
        if self.pgid is not None:
            self.out.add(chunk)
            return
        self._head += chunk
        found = find_marker(bytes(self._head), self.marker)
        if found is None:
            # Bound what we keep while waiting, but keep enough for a marker line split across chunks.
            if len(self._head) > MAX_NOISE:
                del self._head[: len(self._head) - MAX_NOISE]
            return
        self.pgid, begins = found
        self.noise = bytes(self._head[:begins]).rpartition(self.marker.encode())[0]
        rest = bytes(self._head[begins:])
        self._head = bytearray()
        self.out.add(rest)

    def text(self) -> str:
        """The command's stdout; before the marker arrives (the command never ran), what the host printed."""
        if self.pgid is None:
            return bytes(self._head).decode("utf-8", errors="replace")
        return self.out.text()


def _drain(chan: paramiko.Channel, out: _Marked | _Capped, err: _Capped) -> None:
    while chan.recv_ready():
        out.add(chan.recv(65536))
    while chan.recv_stderr_ready():
        err.add(chan.recv_stderr(65536))


def _join(*parts: str) -> str:
    return "\n".join(p.rstrip("\n") for p in parts if p.strip())


def _remaining(deadline: float, doing: str) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise CommandTimeout(f"deadline passed before {doing}")
    return remaining


__all__ = ["CommandResult", "Runner", "SSHSession", "SSHError", "fingerprint", "known_hosts_name"]
