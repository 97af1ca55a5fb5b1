"""The login user of the sandbox hosts: a dedicated unprivileged user as root, else the current user."""

from __future__ import annotations

import fcntl
import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .sshd import SandboxError

SANDBOX_USER = "ocpsandbox"
SANDBOX_HOME = Path("/var/lib/ocpsandbox")  # empty: no shell rc files to slow down every SSH exec


@dataclass(frozen=True)
class LoginUser:
    name: str
    uid: int
    gid: int
    home: Path

    @property
    def is_self(self) -> bool:
        return self.uid == os.geteuid()

    def can_traverse(self, path: Path) -> bool:
        """Whether this user may search (x) ``path`` and each of its ancestors."""
        if self.uid == 0:
            return True
        groups = set(os.getgrouplist(self.name, self.gid))
        for p in [path, *path.parents]:
            st = p.stat()
            if st.st_uid == self.uid:
                bit = 0o100
            elif st.st_gid in groups:
                bit = 0o010
            else:
                bit = 0o001
            if not st.st_mode & bit:
                return False
        return True


def _from_pwd(entry: pwd.struct_passwd) -> LoginUser:
    return LoginUser(entry.pw_name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))


def login_user() -> LoginUser:
    """As root: ``ocpsandbox`` (created if missing; shell /bin/sh; unlocked for key login with UsePAM no).
    Otherwise: the current user."""
    if os.geteuid() != 0:
        return _from_pwd(pwd.getpwuid(os.geteuid()))
    with open("/run/ocpsandbox-user.lock", "w") as lock:  # concurrent sandboxes (e.g. xdist) create it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            entry = pwd.getpwnam(SANDBOX_USER)
        except KeyError:
            _run(
                [
                    "useradd",
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--home-dir",
                    str(SANDBOX_HOME),
                    "--shell",
                    "/bin/sh",
                    "--comment",
                    "ocp-agent-restart sandbox hosts",
                    SANDBOX_USER,
                ]
            )
            entry = pwd.getpwnam(SANDBOX_USER)
        if _locked(SANDBOX_USER):
            _run(["usermod", "-p", "*", SANDBOX_USER])  # '!' (locked) is refused by sshd with UsePAM no
        home = Path(entry.pw_dir)
        if not home.is_dir():
            home.mkdir(mode=0o755, parents=True)
            os.chown(home, entry.pw_uid, entry.pw_gid)
    return _from_pwd(entry)


def _locked(name: str) -> bool:
    try:
        for line in Path("/etc/shadow").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name:
                return fields[1].startswith("!")
    except OSError:
        pass
    return False


def _run(cmd: list[str]) -> None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError:
        raise SandboxError(f"{cmd[0]} not found (package passwd)") from None
    if done.returncode != 0:
        raise SandboxError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
