"""Keys and one real OpenSSH sshd per sandbox host (a foreground child process on a loopback address)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

SSHD = "/usr/sbin/sshd"  # sshd refuses to re-exec unless started by absolute path
SSH_KEYGEN = "ssh-keygen"


class SandboxError(RuntimeError):
    """The sandbox could not be set up (a tool missing, a daemon that did not start, ...)."""


def keygen(paths: Iterable[Path], comment: str = "ocp-sandbox") -> None:
    """Create ed25519 key pairs (OpenSSH format, no passphrase, 0600) at ``paths``, in parallel."""
    procs = []
    for path in paths:
        for old in (path, path.with_name(path.name + ".pub")):
            old.unlink(missing_ok=True)
        cmd = [SSH_KEYGEN, "-t", "ed25519", "-N", "", "-q", "-C", comment, "-f", str(path)]
        try:
            procs.append(
                (
                    path,
                    subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT),
                )
            )
        except FileNotFoundError:
            raise SandboxError("ssh-keygen not found: install openssh-client") from None
    for path, proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SandboxError(f"ssh-keygen for {path} failed: {out.decode(errors='replace').strip()}")


def public_key(path: Path) -> str:
    """'ssh-ed25519 AAAA...' (without the comment) of the pair at ``path``."""
    return " ".join(path.with_name(path.name + ".pub").read_text().split()[:2])


def free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def accepts(address: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def write_config(path: Path, *, address: str, host_key: Path, pid_file: Path, authorized_keys: Path, user: str) -> None:
    path.write_text(
        f"ListenAddress {address}\n"
        f"HostKey {host_key}\n"
        f"PidFile {pid_file}\n"
        f"AuthorizedKeysFile {authorized_keys}\n"
        f"AllowUsers {user}\n"
        "PermitRootLogin no\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        "StrictModes no\n"
        "UseDNS no\n"
        "PrintMotd no\n"
        "MaxSessions 64\n"
        "MaxStartups 256\n"
        "LogLevel ERROR\n"
        "Subsystem sftp internal-sftp\n"
    )


def spawn(config: Path, port: int, log: Path) -> subprocess.Popen:
    """Start ``sshd -D`` (foreground: the returned process is the listener)."""
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege-separation dir
    if not os.access(SSHD, os.X_OK):
        raise SandboxError(f"{SSHD} not found: apt-get install -y openssh-server")
    return subprocess.Popen(
        [SSHD, "-D", "-f", str(config), "-p", str(port), "-E", str(log)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
    )


def wait_listening(proc: subprocess.Popen, address: str, port: int, timeout: float = 10.0) -> bool:
    """Poll until ``address:port`` accepts TCP. False when the process exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if accepts(address, port):
            return True
        time.sleep(0.005)
    return False
