"""Cross-site safety, before any route runs: the Host header must name this server (DNS rebinding), a request that
carries an Origin must come from this server's own page or an origin allowed with --cors-origin (a web page the
operator visits cannot post to a loopback server), and every answer says nosniff; the web page has a strict CSP.

Clients that send no Origin (curl, TF Serving client libraries, scripts) are not affected, whatever Content-Type
they send. A pure ASGI middleware: refused requests (and those with more than --max-headers header fields) are
answered before their body is read.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARD_BINDS = ("0.0.0.0", "::", "")


def default_hosts(bind: str) -> tuple[str, ...] | None:
    """Hosts a Host header may name: the bound address and loopback names; None (any) for a wildcard bind, where
    the server's names are unknown (give --allowed-hosts to restrict them)."""
    if bind in WILDCARD_BINDS:
        return None
    return tuple(dict.fromkeys((bind.strip("[]").lower(), *LOOPBACK)))


def page_csp(html: str) -> str:
    """A Content-Security-Policy allowing the page's own inline script and style (by hash) and nothing else."""
    def hashes(tag: str) -> str:
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.S)
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in bodies)

    return (f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; connect-src 'self'; "
            "img-src 'self' data: blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class Guard:
    def __init__(self, app: ASGIApp, *, hosts: tuple[str, ...] | None, origins: tuple[str, ...], csp: str,
                 max_headers: int) -> None:
        self.app, self.hosts, self.origins, self.csp = app, hosts, origins, csp
        self.max_headers = max_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if len(scope["headers"]) > self.max_headers:
            await _refuse(send, 431, f"{len(scope['headers'])} header fields, over the limit of {self.max_headers} "
                                     "(--max-headers)")
            return
        if sum(1 for k, _ in scope["headers"] if k.lower() == b"host") > 1:
            # Which one a proxy or this server reads differs: request smuggling's favourite ambiguity (RFC 9112 3.2).
            await _refuse(send, 400, "more than one Host header")
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if self.hosts is not None and _hostname(host) not in self.hosts:
            await _refuse(send, 400, f"Host {host!r} is not served here (--allowed-hosts)")
            return
        authority = scope.get("cnnkit.authority")
        if authority is not None and (_hostname(authority) != _hostname(host)
                                      or (self.hosts is not None and _hostname(authority) not in self.hosts)):
            await _refuse(send, 400, f"request target names host {authority!r}, not served here (--allowed-hosts)")
            return
        origin = headers.get("origin")
        if origin is not None and not self._origin_allowed(origin, host):
            await _refuse(send, 403, f"cross-origin request from {origin!r} refused (--cors-origin)")
            return
        page = scope.get("path") == "/"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(b"x-content-type-options", b"nosniff")]
                if page:
                    extra.append((b"content-security-policy", self.csp.encode()))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _origin_allowed(self, origin: str, host: str) -> bool:
        if origin in self.origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()  # the server's own page


def _hostname(host: str) -> str:
    """'127.0.0.1:8501' -> '127.0.0.1', '[::1]:8501' -> '::1', 'Example.com' -> 'example.com'."""
    if host.startswith("["):
        return host[1 : host.find("]")].lower() if "]" in host else host.lower()
    return host.rsplit(":", 1)[0].lower() if host.count(":") == 1 else host.lower()


async def _refuse(send: Send, status: int, message: str) -> None:
    body = orjson.dumps({"error": message})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"x-content-type-options", b"nosniff"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
