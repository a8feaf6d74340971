"""HTTP/1.1 limits that uvicorn does not enforce on its own: the size of a request head, a cap on open connections,
and time limits on a request head and body. Built on uvicorn's httptools protocol (its fastest parser, which has no
header limits of its own); uvicorn takes the protocol class as its `http` setting, so nothing of uvicorn's is
patched.

- A request line and headers over --max-header-kb are refused (400, or 431 while a header is still arriving) as
  they arrive, never buffered whole.
- At --max-connections, a new connection closes the one that has waited longest without sending a request head
  (408); if every connection is busy with a request, the new one is answered 503 and closed. Idle sockets can
  neither exhaust the process's file descriptors nor lock active clients out.
- A request line and headers must arrive within --header-timeout seconds of the connection (or of their first byte,
  on a kept-alive connection); else 408 and close. This ends idle connections and slowloris heads alike.
- A body still arriving --body-timeout seconds after its head (plus a grace second: the app answers 408 first when
  it is reading) has its connection closed, also where no route reads it.
"""

from __future__ import annotations

import asyncio
import resource
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_MAX_CONNECTIONS = 1000
RESERVED_FDS = 100  # file descriptors kept for model files, logs and the listening socket
GRACE_S = 1.0


@dataclass(frozen=True)
class HttpLimits:
    max_connections: int
    max_head_bytes: int
    header_timeout_s: float
    body_timeout_s: float


class HeadTooLarge(Exception):
    """Raised inside a parser callback: httptools stops parsing and uvicorn answers 400."""


def max_connections(configured: int) -> int:
    """The configured cap, or 1,000 or the file-descriptor limit less RESERVED_FDS, whichever is lower."""
    if configured:
        return configured
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return DEFAULT_MAX_CONNECTIONS
    return max(16, min(DEFAULT_MAX_CONNECTIONS, soft - RESERVED_FDS))


def limited_protocol(limits: HttpLimits) -> type[HttpToolsProtocol]:
    """A protocol class for uvicorn's `http` setting, enforcing `limits`."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[HttpLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._phase: str | None = None  # "head" or "body": what is arriving, and timed
        self._head_bytes = 0  # of the request line and headers parsed so far
        self._head_received = 0  # bytes received while the head was incomplete
        self._head_since = 0.0  # loop time the head phase began

    # connection events ------------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections and not self._evict_one():
            self._refuse(503, "too many open connections (--max-connections)")
            return
        self._time("head")

    def connection_lost(self, exc: Exception | None) -> None:
        self._time(None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        before = self._phase
        super().data_received(data)
        # The parser hands a header to on_header only once it is whole, buffering it (quadratically) until then: a
        # 100 MB header must be cut off as its bytes arrive, not when it ends.
        if self._phase == "head" and before in ("head", None) and not self.transport.is_closing():
            self._head_received += len(data)
            if self._head_received > self.limits.max_head_bytes:
                self._refuse(431, f"request head over {self.limits.max_head_bytes} bytes (--max-header-kb)")

    def _evict_one(self) -> bool:
        """At the cap, close the connection that has waited longest without sending a whole request head (an idle
        or slow client), so that a flood of idle connections cannot lock active clients out."""
        waiting = [c for c in self.connections if isinstance(c, LimitedHttpToolsProtocol) and c is not self
                   and c._phase == "head" and not c.transport.is_closing()]
        if not waiting:
            return False
        min(waiting, key=lambda c: c._head_since)._refuse(408, "closed to make room: no request head arrived "
                                                                "(--max-connections)")
        return True

    # parser callbacks -------------------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        if self._phase != "head":  # a kept-alive connection's next request: its head is timed from its first byte
            self._time("head")

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._time("body")
        url = getattr(self, "url", b"")
        super().on_headers_complete()
        if url[:7].lower() == b"http://" or url[:8].lower() == b"https://":
            # Absolute-form request target (`GET http://host/path`): uvicorn keeps only its path, so the authority
            # goes into the scope for the Guard to check against --allowed-hosts, as it checks Host.
            import httptools

            authority = httptools.parse_url(url).host or b""
            self.scope["cnnkit.authority"] = authority.decode("latin-1")  # type: ignore[typeddict-unknown-key]

    def on_message_complete(self) -> None:
        self._time(None)
        super().on_message_complete()

    # limits -----------------------------------------------------------------------------------------------------
    def _count(self, nbytes: int) -> None:
        self._head_bytes += nbytes
        if self._head_bytes > self.limits.max_head_bytes:
            raise HeadTooLarge  # parsing stops; uvicorn answers 400

    def _time(self, phase: str | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._phase = None, phase
        if phase == "head":
            self._head_since, self._head_received = self.loop.time(), 0
            self._timer = self.loop.call_later(self.limits.header_timeout_s, self._expired)
        elif phase == "body":
            self._timer = self.loop.call_later(self.limits.body_timeout_s + GRACE_S, self._expired)

    def _expired(self) -> None:
        phase = self._phase
        self._timer, self._phase = None, None
        if self.transport.is_closing():
            return
        if phase == "head":
            self._refuse(408, f"the request head took over {self.limits.header_timeout_s:g} s (--header-timeout)")
        else:
            self.transport.close()  # a response may already be under way: no status line can be added now

    def _refuse(self, status: int, message: str) -> None:
        """Answer outside the request cycle (no request was parsed) and close."""
        reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large", 503: b"Service Unavailable"}[status]
        body = b'{"error": "' + message.encode() + b'"}'
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                             b"connection: close\r\n\r\n%s" % (status, reason, len(body), body))
        self.transport.close()
