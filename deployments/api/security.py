"""Who is asking, as FastAPI dependencies: ``current_user`` proves it (HTTP Basic, or OCP's access-key signature;
see deployments/auth.py), counting failed logins against the login throttle; ``require(permission)`` checks the
user's roles.

Routes declare the user they need: ``user: AnyUser`` (any valid credentials), ``HostReader``, ``HostWriter``,
``TaskWriter``. A test replaces ``current_user`` with ``app.dependency_overrides`` to act as any user.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Annotated, NoReturn

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from flows.errors import UnknownTaskError
from flows.records import TaskRecord

from ..auth import (
    HOST_READ,
    HOST_WRITE,
    SIGNED_SCHEME,
    TASK_READ,
    TASK_WRITE,
    SignedRequest,
    User,
    client_address,
    date_error,
    sign,
    signature_matches,
    strings_to_sign,
)
from .envelope import ApiFailure
from .state import ApiState, StateDep

CHALLENGE = {"WWW-Authenticate": 'Basic realm="ocp-restart"'}
MAX_SIGNED_BODY = 1 << 20  # a signed request's body is read before its sender is known: at most 1 MiB
_DUMMY_SECRET = "not-a-secret-0123456789"  # signs for unknown access keys, so they cost what known ones do


async def current_user(request: Request, state: StateDep) -> User:
    """The user the request's credentials prove; 401 without valid ones, 429 while their sender is throttled.

    HTTP Basic is parsed here rather than by FastAPI's ``HTTPBasic``: that one decodes the credentials as ASCII
    (our passwords are UTF-8), answers malformed ones with its own 401 before we can count the failed login, and
    adds a security scheme to the OpenAPI document."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    client = client_address(
        request.client.host if request.client else "unknown",
        request.headers.getlist("x-forwarded-for"),
        state.trusted_proxies,
    )
    if scheme.lower() == "basic" and token:
        return await run_in_threadpool(_basic_login, state, client, token.strip())
    if scheme.upper().startswith("OCP-ACCESS-KEY-"):
        too_big = _unbounded_body(request)
        if too_big:
            raise ApiFailure(401, 3000, f"You are not logged on: {too_big}", CHALLENGE)
        signed = _signed_request(request, await request.body())
        return await run_in_threadpool(_signed_login, state, client, scheme, token.strip(), signed)
    raise ApiFailure(
        401,
        3000,
        "You are not logged on. Use HTTP Basic authentication or an OCP access key "
        f"(Authorization: {SIGNED_SCHEME} ACCESS_KEY_ID:SIGNATURE).",
        CHALLENGE,
    )


def require(permission: str):
    """A dependency: the current user, who must hold ``permission`` (403 otherwise)."""

    async def check(user: Annotated[User, Depends(current_user)]) -> User:
        if not user.can(permission):
            raise ApiFailure(
                403, 3100, f"You are not authorized to perform the corresponding operations ({permission} is needed)"
            )
        return user

    return check


AnyUser = Annotated[User, Depends(current_user)]
HostReader = Annotated[User, Depends(require(HOST_READ))]
HostWriter = Annotated[User, Depends(require(HOST_WRITE))]
TaskWriter = Annotated[User, Depends(require(TASK_WRITE))]


def may_read_task(user: User, record: TaskRecord) -> None:
    """A user without TASK:READ sees the tasks they created, no other — and cannot tell another's task from a
    missing one (a 403 told a HOST_VIEWER which task ids exist: #22), so both are OCP's 404 for a missing task."""
    if not user.can(TASK_READ) and record.task.creator != user.name:
        raise UnknownTaskError(record.task.id)


# ---- logins --------------------------------------------------------------------------------------------------


def _basic_login(state: ApiState, client: str, token: str) -> User:
    try:
        name, colon, password = base64.b64decode(token, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        name, colon, password = "", "", ""
    _not_throttled(state, name, client)
    user = state.users.authenticate(name, password) if colon else None
    if user is None:
        _refuse(state, name, client, "wrong user name or password")
    state.throttle.succeeded(name, client)
    return user


def _signed_login(state: ApiState, client: str, scheme: str, token: str, signed: SignedRequest) -> User:
    """OCP's access-key signature (see deployments/auth.py)."""
    if scheme != SIGNED_SCHEME:
        raise ApiFailure(
            401,
            3000,
            f"You are not logged on: the signature algorithm of {scheme!r} is not supported; use {SIGNED_SCHEME}",
            CHALLENGE,
        )
    key_id, colon, signature = token.partition(":")
    if not (colon and key_id and signature):
        raise ApiFailure(
            401,
            3000,
            f"You are not logged on: expected Authorization: {SIGNED_SCHEME} ACCESS_KEY_ID:SIGNATURE",
            CHALLENGE,
        )
    found = state.users.access_key(key_id)
    who = found.user.name if found else f"access key {key_id[:64]}"
    _not_throttled(state, who, client)
    stale = date_error(signed.date)
    if stale:
        _refuse(state, who, client, stale)
    if found is None:
        sign(_DUMMY_SECRET, strings_to_sign(signed)[0])  # the same work as a known key
        _refuse(state, who, client, f"no user holds the access key {key_id[:64]!r}")
    if not signature_matches(found.secret, signature, signed):
        _refuse(
            state,
            who,
            client,
            "the signature does not match the request; the server signed "
            f"{strings_to_sign(signed)[0]!r} (with the body's MD5 in hex, if any, and the "
            "query sorted)",
        )
    state.throttle.succeeded(who, client)
    return found.user


def _signed_request(request: Request, body: bytes) -> SignedRequest:
    """What of the request its signature covers, as received (the path and query still percent-encoded)."""
    return SignedRequest(
        method=request.method,
        path=request.scope.get("raw_path", b"").decode("latin-1") or request.url.path,
        query=request.scope.get("query_string", b"").decode("latin-1"),
        body=body,
        content_type=request.headers.get("content-type", ""),
        date=request.headers.get("date", ""),
        host=request.headers.get("host", ""),
        ocp_headers=tuple(request.headers.items()),
    )


def _unbounded_body(request: Request) -> str | None:
    """Why a signed request's body is not read to check its MD5 (chunked, or over MAX_SIGNED_BODY); None if it is."""
    if request.headers.get("transfer-encoding"):
        return "a signed request must send its body with a Content-Length, not chunked"
    declared = request.headers.get("content-length", "0")
    if not declared.isdigit() or int(declared) > MAX_SIGNED_BODY:
        return f"a signed request's body is at most {MAX_SIGNED_BODY} bytes, got Content-Length {declared[:20]!r}"
    return None


# ---- the login throttle ----------------------------------------------------------------------------------------


def _not_throttled(state: ApiState, who: str, client: str) -> None:
    wait = state.throttle.retry_after(who, client)
    if wait > 0:
        raise ApiFailure(
            429,
            0,
            "Excessive number of requests. Too many failed logins; try again later.",
            _rate_headers(state.throttle.limit, 0, wait),
        )


def _refuse(state: ApiState, who: str, client: str, why: str) -> NoReturn:
    """A failed login: counted against (who, client), answered 401 with the attempts left."""
    remaining = state.throttle.failed(who, client)
    raise ApiFailure(
        401,
        3000,
        f"You are not logged on: {why}.",
        {**CHALLENGE, **_rate_headers(state.throttle.limit, remaining, state.throttle.window)},
    )


def _rate_headers(limit: int, remaining: int, reset: float) -> dict[str, str]:
    """OCP's throttling headers (RateLimit-Limit/Remaining/Reset), and Retry-After when nothing remains."""
    headers = {
        "RateLimit-Limit": str(limit),
        "RateLimit-Remaining": str(remaining),
        "RateLimit-Reset": str(math.ceil(reset)),
    }
    if remaining == 0:
        headers["Retry-After"] = str(math.ceil(reset))
    return headers
