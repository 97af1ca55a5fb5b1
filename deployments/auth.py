"""Users, roles and permissions of the HTTP API (OCP's default roles and their permissions).

The users file is TOML, written 0600, holding bcrypt hashes only:

    [users.alice]
    password_hash = "$2b$12$..."
    roles = ["HOST_MANAGER"]
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from flows.errors import OcpRestartError
from flows.settings import Settings

HOST_READ, HOST_WRITE, TASK_READ, TASK_WRITE = "HOST:READ", "HOST:WRITE", "TASK:READ", "TASK:WRITE"
ROLES: dict[str, frozenset[str]] = {
    "ADMIN": frozenset({HOST_READ, HOST_WRITE, TASK_READ, TASK_WRITE}),
    "CLUSTER_MANAGER": frozenset({HOST_READ, HOST_WRITE, TASK_READ, TASK_WRITE}),
    "HOST_MANAGER": frozenset({HOST_READ, HOST_WRITE}),
    "TASK_MANAGER": frozenset({TASK_READ, TASK_WRITE}),
    "CLUSTER_VIEWER": frozenset({HOST_READ, TASK_READ}),
    "HOST_VIEWER": frozenset({HOST_READ}),
    "TASK_VIEWER": frozenset({TASK_READ}),  # OCP's docs cite it; it stands for TASK:*:READ
    "PROFILE": frozenset(),
}
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_CACHE_SECONDS = 300.0


class UsersFileError(OcpRestartError):
    code, http_status = 1003, 500


@dataclass(frozen=True)
class User:
    name: str
    roles: tuple[str, ...]

    @property
    def permissions(self) -> frozenset[str]:
        return frozenset().union(*(ROLES.get(r, frozenset()) for r in self.roles))

    def can(self, permission: str) -> bool:
        return permission in self.permissions


class Users:
    """Checks Basic-auth credentials against the users file, in constant time per attempt.

    bcrypt costs ~0.2 s per check; a client polling a task every second would spend a core on it. A verified
    (user, password) pair is remembered for five minutes as an HMAC under a per-process random key.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._users: dict[str, tuple[bytes, User]] = _read(self.path)
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()
        self._dummy = bcrypt.hashpw(b"not-a-password", bcrypt.gensalt(rounds=12))

    def authenticate(self, name: str, password: str) -> User | None:
        entry = self._users.get(name)
        mac = hmac.new(self._key, f"{name}\0{password}".encode(), hashlib.sha256).digest()
        with self._lock:
            cached = self._verified.get(name)
        if entry is not None and cached is not None and cached[1] > time.monotonic() and hmac.compare_digest(cached[0], mac):
            return entry[1]
        stored = entry[0] if entry is not None else self._dummy  # unknown users cost the same bcrypt check
        ok = bcrypt.checkpw(password.encode("utf-8"), stored) and entry is not None
        if not ok:
            return None
        with self._lock:
            self._verified[name] = (mac, time.monotonic() + _CACHE_SECONDS)
        return entry[1]


class LoginThrottle:
    """Failed logins per client in a sliding window; past the limit the client gets 429 until the window frees up.

    Counts wrong credentials only (a request without credentials is a 401, not an attempt). While a client is
    throttled even a correct password is refused, or guessing would go on at full speed.
    """

    def __init__(self, limit: int | None = None, window: float = 60.0) -> None:
        self.limit = limit if limit is not None else Settings().login_limit
        self.window = window
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> list[float]:
        recent = [t for t in self._failures.get(client, []) if now - t < self.window]
        self._failures[client] = recent
        return recent

    def retry_after(self, client: str) -> float:
        """Seconds until ``client`` may try again; 0 when it is not throttled."""
        now = time.monotonic()
        with self._lock:
            recent = self._recent(client, now)
            return recent[0] + self.window - now if len(recent) >= self.limit else 0.0

    def failed(self, client: str) -> int:
        """Record a failure; returns how many attempts remain in the window."""
        now = time.monotonic()
        with self._lock:
            recent = self._recent(client, now)
            recent.append(now)
            return max(0, self.limit - len(recent))

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)


def _read(path: Path) -> dict[str, tuple[bytes, User]]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsersFileError(f"{path}: users file not found; create one with `ocp-restart user add NAME --role ROLE`") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsersFileError(f"{path}: cannot read the users file: {exc}") from None
    users: dict[str, tuple[bytes, User]] = {}
    for name, entry in (raw.get("users") or {}).items():
        if not _NAME.match(name) or not isinstance(entry, dict):
            raise UsersFileError(f"{path}: user {name!r}: invalid name or entry")
        digest = entry.get("password_hash", "")
        if not isinstance(digest, str) or not digest.startswith(("$2a$", "$2b$", "$2y$")):
            raise UsersFileError(f"{path}: user {name!r}: field 'password_hash' must be a bcrypt hash (never a plain password)")
        roles = entry.get("roles", [])
        unknown = [r for r in roles if r not in ROLES]
        if not isinstance(roles, list) or unknown:
            raise UsersFileError(f"{path}: user {name!r}: field 'roles': unknown role(s) {unknown}; known: {sorted(ROLES)}")
        users[name] = (digest.encode(), User(name, tuple(roles)))
    if not users:
        raise UsersFileError(f"{path}: no users; add one with `ocp-restart user add NAME --role ROLE`")
    return users


def add_user(path: str | Path, name: str, password: str, roles: list[str]) -> None:
    """Add or replace a user in the users file (created 0600), storing only a bcrypt hash."""
    path = Path(path).expanduser()
    if not _NAME.match(name):
        raise UsersFileError(f"user name must match {_NAME.pattern}, got {name!r}")
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise UsersFileError(f"unknown role(s) {unknown or roles}; known: {sorted(ROLES)}")
    if len(password) < 8:
        raise UsersFileError("the password must have at least 8 characters")
    existing = tomllib.loads(path.read_text(encoding="utf-8")).get("users", {}) if path.exists() else {}
    existing[name] = {
        "password_hash": bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds=12)).decode(),
        "roles": roles,
    }
    lines = []
    for user, entry in sorted(existing.items()):
        roles_toml = ", ".join(f'"{r}"' for r in entry["roles"])
        lines += [f'[users."{user}"]', f'password_hash = "{entry["password_hash"]}"', f"roles = [{roles_toml}]", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
