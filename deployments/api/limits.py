"""Limits on every request's body: its size and how long it may take to arrive (#22).

A client could send a 10 MB body to any route (it was read and parsed) or a chunked body that never ends (its
connection stayed open, with no timeout). Every body is now at most ``MAX_BODY_BYTES`` — refused at once when its
Content-Length says more, or as soon as more has arrived — and must arrive within ``BODY_SECONDS`` of the first
read: 413 or 408 with OCP's error envelope. The headers before them must arrive within ``HEADER_SECONDS`` of the
connection's start or its last answer (``header_deadline``, uvicorn's protocol for ``serve``), else it is closed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .envelope import ApiFailure, failure

MAX_BODY_BYTES = 1 << 20  # the largest legitimate body, 2,000 host ids, is ~30 KB
BODY_SECONDS = 30.0


class BodyLimits:
    """ASGI middleware enforcing ``max_bytes`` and ``seconds`` on request bodies."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES, seconds: float = BODY_SECONDS) -> None:
        self.app, self.max_bytes, self.seconds = app, max_bytes, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            answer = failure(Request(scope), 413, 1003, self._too_big(f"Content-Length {declared}"))
            await answer(scope, receive, send)
            return
        await self.app(scope, _LimitedReceive(receive, self.max_bytes, self.seconds, self._too_big), send)

    def _too_big(self, what: str) -> str:
        return f"The request body is at most {self.max_bytes} bytes, got {what}"


class _LimitedReceive:
    """``receive`` for the app: counts the body's bytes and times its arrival; raises ApiFailure past a limit
    (the route reading the body answers it with OCP's envelope)."""

    def __init__(self, receive: Receive, max_bytes: int, seconds: float, too_big: Any) -> None:
        self.receive, self.max_bytes, self.seconds, self.too_big = receive, max_bytes, seconds, too_big
        self.received, self.deadline, self.complete = 0, 0.0, False

    async def __call__(self) -> Message:
        if self.complete:  # the body is in: what follows (a disconnect) may come whenever it comes
            return await self.receive()
        if not self.deadline:
            self.deadline = time.monotonic() + self.seconds
        try:
            message = await asyncio.wait_for(self.receive(), max(0.0, self.deadline - time.monotonic()))
        except TimeoutError:
            raise ApiFailure(408, 1003, f"The request body did not arrive within {self.seconds:g} s") from None
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.max_bytes:
                raise ApiFailure(413, 1003, self.too_big(f"more than that ({self.received} bytes so far)"))
            self.complete = not message.get("more_body", False)
        return message


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


HEADER_SECONDS = 10.0


def header_deadline(seconds: float = HEADER_SECONDS) -> type:
    """uvicorn's h11 protocol with a deadline for a request's headers (#22): uvicorn has none, so a connection that
    sends nothing, or headers that never end, stayed open forever (measured: still open after 20 s; BodyLimits
    cannot see it, the app is only called once the headers are in). The connection is closed when no request is
    under way ``seconds`` after it opened or after its last answer; a request being served is never cut here."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadline(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(seconds, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            under_way = self.cycle is not None and not self.cycle.response_complete
            if not under_way and not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadline
