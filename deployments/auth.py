"""Users, roles and permissions of the HTTP API (OCP's default roles and their permissions), how a request proves
who sent it (HTTP Basic, or OCP's access-key signature), and the login throttle.

The users file is TOML, written 0600: bcrypt hashes of passwords, and the access keys OCP's signature needs in
the clear (``ocp-restart user access-key NAME``; a file holding them must not be readable by others):

    [users.alice]
    password_hash = "$2b$12$..."
    roles = ["HOST_MANAGER"]
    access_keys = [{ id = "6f1c...", secret = "...", created = "2026-11-27T02:10:04.565+00:00" }]

A running server re-reads the file when it changes (a broken file is reported and the last good one kept).

Access-key signatures (OCP's API authentication page; the client oceanbase/mcp-oceanbase signs the same way):

    Authorization: OCP-ACCESS-KEY-HMACSHA1 <AK>:base64(HMAC-SHA1(<SK>, toSignString))
    Date: Tue, 17 Jan 2023 03:36:01 GMT                  (RFC 1123; less than 15 minutes from the server's clock)
    toSignString = HttpMethod \n Md5Payload \n ContentType \n Date \n Host \n OCP-Headers \n PathAndQueryParams

``Md5Payload``: the MD5 of the body, hex or base64 (empty for no body); ``OCP-Headers``: the ``x-ocp-*`` headers as
``name:value`` lines, names in lower case, sorted; ``PathAndQueryParams``: the path, then ``?`` and the query
parameters sorted by name, names and values percent-encoded (or the query exactly as sent).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import stat
import threading
import time
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import parse_qsl, quote

import bcrypt
import tomli_w

from flows.errors import OcpRestartError
from flows.models import format_time, now

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
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_KEY = re.compile(r"[A-Za-z0-9_-]{16,128}")
_CACHE_SECONDS = 300.0
SIGNED_SCHEME = "OCP-ACCESS-KEY-HMACSHA1"
MAX_CLOCK_SKEW = 15 * 60.0  # seconds between a signed request's Date and our clock: OCP's "less than 15 minutes"
logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class AccessKey:
    """An access key of the users file: the secret that signs requests, and the user they act as."""

    secret: str
    user: User


class Users:
    """Checks credentials against the users file, in constant time per attempt, re-reading the file when it changes.

    bcrypt costs ~0.2 s per check; a client polling a task every second would spend a core on it. A verified
    (user, password) pair is remembered for five minutes as an HMAC under a per-process random key (forgotten
    when the file changes).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        self._stamp = _stamp(self.path)
        self._users, self._keys = _read(self.path)
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, tuple[bytes, float]] = {}
        self._dummy = bcrypt.hashpw(b"not-a-password", bcrypt.gensalt(rounds=12))

    def _current(self) -> tuple[dict[str, tuple[bytes, User]], dict[str, tuple[str, str]]]:
        """The users and access keys of the file as it is now; the last good ones while it is broken."""
        stamp = _stamp(self.path)
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    self._stamp = stamp
                    try:
                        self._users, self._keys = _read(self.path)
                        self._verified.clear()
                        logger.warning("%s changed: %d user(s) now", self.path, len(self._users))
                    except UsersFileError as exc:
                        logger.error("%s; still using the users file as it was before", exc.message)
        return self._users, self._keys

    def authenticate(self, name: str, password: str) -> User | None:
        users, _ = self._current()
        entry = users.get(name)
        mac = hmac.new(self._key, f"{name}\0{password}".encode(), hashlib.sha256).digest()
        with self._lock:
            cached = self._verified.get(name)
        if (
            entry is not None
            and cached is not None
            and cached[1] > time.monotonic()
            and hmac.compare_digest(cached[0], mac)
        ):
            return entry[1]
        stored = entry[0] if entry is not None else self._dummy  # unknown users cost the same bcrypt check
        ok = bcrypt.checkpw(password.encode("utf-8"), stored) and entry is not None
        if not ok:
            return None
        with self._lock:
            self._verified[name] = (mac, time.monotonic() + _CACHE_SECONDS)
        return entry[1]

    def access_key(self, key_id: str) -> AccessKey | None:
        """The access key ``key_id`` and the user holding it; None when no user holds it."""
        users, keys = self._current()
        found = keys.get(key_id)
        if found is None or found[1] not in users:
            return None
        return AccessKey(secret=found[0], user=users[found[1]][1])


def _stamp(path: Path) -> tuple[int, ...] | None:
    """What changes when the file is rewritten (``os.replace`` gives it a new inode), or None when it is missing."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size, st.st_mode)


class LoginThrottle:
    """Failed logins per (user, client) in a sliding window; past the limit that user gets 429 from that client
    until the window frees up. Keyed by both, so a flood of bad logins for one user, or from one client behind a
    shared proxy, locks out no one else; a successful login clears its counter.

    Counts wrong credentials only (a request without credentials is a 401, not an attempt). While a (user, client)
    is throttled even a correct password is refused, or guessing would go on at full speed. At most ``max_keys``
    counters are kept (the oldest are dropped first), so made-up user names cannot fill the memory.
    """

    def __init__(self, limit: int, window: float = 60.0, max_keys: int = 10_000) -> None:
        self.limit = limit  # the API passes Settings.login_limit (OCP_RESTART_LOGIN_LIMIT)
        self.window, self.max_keys = window, max_keys
        self._failures: dict[tuple[str, str], list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> list[float]:
        recent = [t for t in self._failures.get(key, []) if now - t < self.window]
        if recent:
            self._failures[key] = recent
        else:
            self._failures.pop(key, None)
        return recent

    def retry_after(self, user: str, client: str) -> float:
        """Seconds until ``user`` may try again from ``client``; 0 when it is not throttled."""
        now = time.monotonic()
        with self._lock:
            recent = self._recent((user, client), now)
            return recent[0] + self.window - now if len(recent) >= self.limit else 0.0

    def failed(self, user: str, client: str) -> int:
        """Record a failure; returns how many attempts remain in the window."""
        now = time.monotonic()
        with self._lock:
            recent = self._recent((user, client), now)
            recent.append(now)
            self._failures[(user, client)] = recent
            if len(self._failures) > self.max_keys:
                self._prune(now)
            return max(0, self.limit - len(recent))

    def succeeded(self, user: str, client: str) -> None:
        with self._lock:
            self._failures.pop((user, client), None)

    def _prune(self, now: float) -> None:
        for key in [k for k, times in self._failures.items() if now - times[-1] >= self.window]:
            del self._failures[key]
        for key in sorted(self._failures, key=lambda k: self._failures[k][-1])[: len(self._failures) - self.max_keys]:
            del self._failures[key]


def trusted_networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``OCP_RESTART_TRUSTED_PROXIES``: a comma list of addresses or networks (``10.0.0.5, 10.1.0.0/16``)."""
    networks = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise UsersFileError(
                f"OCP_RESTART_TRUSTED_PROXIES: {item!r} is not an IP address or network "
                "(expected e.g. 10.0.0.5 or 10.1.0.0/16)"
            ) from None
    return tuple(networks)


def _trusted(address: str, networks: Sequence) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(peer: str, forwarded_for: Iterable[str], networks: Sequence) -> str:
    """Who the client is: the TCP peer, unless that peer is a trusted proxy; then the nearest address in
    ``X-Forwarded-For`` that is not itself a trusted proxy (each proxy appends the address it received from, so
    only the entries our own proxies wrote are believed)."""
    if not _trusted(peer, networks):
        return peer
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            return hop
    return hops[0] if hops else peer


# ---- OCP's access-key signature ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedRequest:
    """What of a request its signature covers, as received."""

    method: str
    path: str  # the path as sent (percent-encoded)
    query: str  # the query string as sent, without "?"
    body: bytes
    content_type: str
    date: str
    host: str
    ocp_headers: tuple[tuple[str, str], ...]  # (name, value) of every x-ocp-* header


def string_to_sign(
    method: str, md5_payload: str, content_type: str, date: str, host: str, ocp_headers: str, path_and_query: str
) -> str:
    """OCP's toSignString: the seven parts joined by line feeds."""
    return "\n".join([method, md5_payload, content_type, date, host, ocp_headers, path_and_query])


def sign(secret: str, text: str) -> str:
    """base64(HMAC-SHA1(secret, text)), as OCP's signature."""
    return base64.b64encode(hmac.new(secret.encode("utf-8"), text.encode("utf-8"), hashlib.sha1).digest()).decode()


def ocp_headers_part(headers: Iterable[tuple[str, str]]) -> str:
    """The ``x-ocp-*`` headers as ``name:value`` lines: names in lower case, sorted; repeated ones joined by commas."""
    merged: dict[str, list[str]] = {}
    for name, value in headers:
        if name.lower().startswith("x-ocp-"):
            merged.setdefault(name.lower(), []).append(value.strip())
    return "\n".join(f"{name}:{','.join(values)}" for name, values in sorted(merged.items()))


def canonical_query(query: str) -> str:
    """Query parameters sorted by name (then value), names and values percent-encoded as ``quote(safe="")`` does."""
    pairs = sorted(parse_qsl(query, keep_blank_values=True))
    return "&".join(f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in pairs)


def payload_digests(body: bytes) -> list[str]:
    """The Md5Payload values a body may be signed with: its MD5 as hex or base64; for no body also the empty string."""
    digest = hashlib.md5(body).digest()
    forms = [digest.hex(), base64.b64encode(digest).decode()]
    return ["", *forms] if not body else forms


def strings_to_sign(request: SignedRequest) -> list[str]:
    """Every toSignString the request's signature may cover: the body's MD5 in its forms, the query as sent or in
    canonical order. The first is the canonical one (hex MD5 or none, sorted query)."""
    paths = [request.path + (f"?{canonical_query(request.query)}" if request.query else "")]
    if request.query:
        paths.append(f"{request.path}?{request.query}")
    headers = ocp_headers_part(request.ocp_headers)
    return [
        string_to_sign(request.method, md5, request.content_type, request.date, request.host, headers, path)
        for md5 in payload_digests(request.body)
        for path in dict.fromkeys(paths)
    ]


def signature_matches(secret: str, signature: str, request: SignedRequest) -> bool:
    """Whether ``signature`` signs the request under ``secret``, compared in constant time."""
    return any(hmac.compare_digest(sign(secret, text), signature) for text in strings_to_sign(request))


def date_error(date: str, clock: datetime | None = None) -> str | None:
    """Why a signed request's ``Date`` is refused (missing, not RFC 1123, 15 minutes or more from our clock); None
    when it is fine."""
    if not date:
        return f"the Date header is missing; {SIGNED_SCHEME} requests carry it, e.g. Tue, 17 Jan 2023 03:36:01 GMT"
    try:
        when = parsedate_to_datetime(date)
    except (TypeError, ValueError, IndexError):
        when = None
    if when is None:
        return f"the Date header must be an RFC 1123 date such as Tue, 17 Jan 2023 03:36:01 GMT, got {date!r}"
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    skew = ((clock or datetime.now(UTC)) - when).total_seconds()
    if abs(skew) >= MAX_CLOCK_SKEW:
        return (
            f"the Date header {date!r} is {abs(skew):.0f} s {'behind' if skew > 0 else 'ahead of'} the server's "
            f"clock; it must be less than {MAX_CLOCK_SKEW:.0f} s away"
        )
    return None


def _read(path: Path) -> tuple[dict[str, tuple[bytes, User]], dict[str, tuple[str, str]]]:
    """The users file: name -> (bcrypt hash, User), and access key id -> (secret, user name)."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        raise UsersFileError(
            f"{path}: users file not found; create one with `ocp-restart user add NAME --role ROLE`"
        ) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsersFileError(f"{path}: cannot read the users file: {exc}") from None
    except RecursionError:  # tomllib recurses per nested array or table (#22's Hypothesis pass)
        raise UsersFileError(f"{path}: cannot read the users file: arrays or tables nested too deep") from None
    users: dict[str, tuple[bytes, User]] = {}
    keys: dict[str, tuple[str, str]] = {}
    tables = raw.get("users") or {}
    if not isinstance(tables, dict):
        raise UsersFileError(f"{path}: 'users' must be a table of [users.NAME] tables, got {type(tables).__name__}")
    for name, entry in tables.items():
        if not _NAME.fullmatch(name):
            raise UsersFileError(f"{path}: user {name!r}: a user name is 1-64 of A-Z a-z 0-9 _ . @ -")
        if not isinstance(entry, dict):
            raise UsersFileError(f"{path}: user {name!r}: must be a [users.{name}] table, got {type(entry).__name__}")
        digest = entry.get("password_hash", "")
        if not isinstance(digest, str) or not digest.startswith(("$2a$", "$2b$", "$2y$")):
            raise UsersFileError(
                f"{path}: user {name!r}: field 'password_hash' must be a bcrypt hash (never a plain password)"
            )
        roles = entry.get("roles", [])
        unknown = [r for r in roles if not isinstance(r, str) or r not in ROLES] if isinstance(roles, list) else roles
        if not isinstance(roles, list) or unknown:
            raise UsersFileError(
                f"{path}: user {name!r}: field 'roles': unknown role(s) {unknown}; known: {sorted(ROLES)}"
            )
        users[name] = (digest.encode(), User(name, tuple(roles)))
        for key_id, secret in _access_keys(path, name, entry.get("access_keys", [])):
            if key_id in keys:
                raise UsersFileError(f"{path}: access key {key_id} is held by both {keys[key_id][1]!r} and {name!r}")
            keys[key_id] = (secret, name)
    if not users:
        raise UsersFileError(f"{path}: no users; add one with `ocp-restart user add NAME --role ROLE`")
    if keys and mode & 0o077:
        raise UsersFileError(
            f"{path}: holds access key secrets but its mode is {mode:04o}, readable by other users; chmod 600 {path}"
        )
    return users, keys


def _access_keys(path: Path, name: str, entries: object) -> list[tuple[str, str]]:
    """A user's ``access_keys``: (id, secret) pairs, each field checked."""
    if not isinstance(entries, list):
        raise UsersFileError(f"{path}: user {name!r}: field 'access_keys' must be a list of {{id, secret}} tables")
    pairs = []
    for index, entry in enumerate(entries):
        key_id = entry.get("id") if isinstance(entry, dict) else None
        secret = entry.get("secret") if isinstance(entry, dict) else None
        if not (
            isinstance(key_id, str) and _KEY.fullmatch(key_id) and isinstance(secret, str) and _KEY.fullmatch(secret)
        ):
            raise UsersFileError(
                f"{path}: user {name!r}: access key #{index + 1}: 'id' and 'secret' must be strings "
                "of 16-128 letters, digits, '-' or '_' (create keys with "
                f"`ocp-restart user access-key {name}`)"
            )
        pairs.append((key_id, secret))
    return pairs


def add_user(path: str | Path, name: str, password: str, roles: list[str]) -> None:
    """Add or replace a user in the users file (created 0600), storing only a bcrypt hash; the user's access keys
    are kept."""
    path = Path(path).expanduser()
    if not _NAME.fullmatch(name):
        raise UsersFileError(f"user name must match {_NAME.pattern}, got {name!r}")
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise UsersFileError(f"unknown role(s) {unknown or roles}; known: {sorted(ROLES)}")
    if len(password) < 8:
        raise UsersFileError("the password must have at least 8 characters")
    existing = _entries(path)
    existing[name] = {
        "password_hash": bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds=12)).decode(),
        "roles": roles,
        "access_keys": existing.get(name, {}).get("access_keys", []),
    }
    _write(path, existing)


def add_access_key(path: str | Path, name: str) -> tuple[str, str]:
    """Create an access key pair for an existing user; returns (AccessKey ID, AccessKey Secret). The secret is in
    the users file alone (0600): show it once, never log it."""
    path = Path(path).expanduser()
    existing = _entries(path)
    if name not in existing:
        raise UsersFileError(
            f"{path}: no user {name!r}; add it first with `ocp-restart user add {name} --role ROLE`"
            f" (users: {', '.join(sorted(existing)) or 'none'})"
        )
    key_id, secret = secrets.token_hex(12), secrets.token_urlsafe(30)
    keys = list(existing[name].get("access_keys", []))
    keys.append({"id": key_id, "secret": secret, "created": format_time(now())})
    existing[name] = {**existing[name], "access_keys": keys}
    _write(path, existing)
    return key_id, secret


def _entries(path: Path) -> dict[str, dict]:
    """The users file's tables as they are (none when there is no file)."""
    if not path.exists():
        return {}
    try:
        tables = tomllib.loads(path.read_text(encoding="utf-8")).get("users", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsersFileError(f"{path}: cannot read the users file: {exc}") from None
    except RecursionError:
        raise UsersFileError(f"{path}: cannot read the users file: arrays or tables nested too deep") from None
    if not isinstance(tables, dict) or not all(isinstance(entry, dict) for entry in tables.values()):
        raise UsersFileError(f"{path}: 'users' must be a table of [users.NAME] tables; fix or remove the file")
    return dict(tables)


def _write(path: Path, entries: dict[str, dict]) -> None:
    """Write the users file atomically, mode 0600, owned by whoever owned it before (when we are root)."""
    users = {
        user: {
            "password_hash": entry["password_hash"],
            "roles": list(entry["roles"]),
            **(
                {"access_keys": [{k: str(v) for k, v in key.items()} for key in entry["access_keys"]]}
                if entry.get("access_keys")
                else {}
            ),
        }
        for user, entry in sorted(entries.items())
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(tomli_w.dumps({"users": users}))
    os.chmod(tmp, 0o600)
    if path.exists() and os.geteuid() == 0:
        st = path.stat()
        os.chown(tmp, st.st_uid, st.st_gid)
    os.replace(tmp, path)
