"""Where a page was served from: a URL or a bare domain -> a validated host name and its registrable domain."""

from __future__ import annotations

import functools
import ipaddress
import re
from urllib.parse import urlsplit

from cnnkit.errors import CnnkitError

HOST = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+(xn--[a-z0-9-]{1,59}|[a-z]{2,63})$")


def host_of(text: str) -> str:
    """'https://Login.PayPal.com:443/x' or 'PayPal.com' -> 'login.paypal.com'; a clear error for anything else
    (a bare word, an IP address is allowed as it is, a URL of another scheme, spaces, an empty host)."""
    if not isinstance(text, str) or not text.strip():
        raise CnnkitError("a URL or domain is required (e.g. https://login.example.com/ or example.com)")
    raw = text.strip()
    candidate = raw if "://" in raw else f"http://{raw}"
    try:
        parts = urlsplit(candidate)
        host, port = parts.hostname, parts.port  # .port raises on a malformed port
    except ValueError as exc:
        raise CnnkitError(f"{raw!r} is not a URL or domain ({exc})") from None
    del port
    if parts.scheme not in ("http", "https"):
        raise CnnkitError(f"{raw!r}: only http(s) URLs or bare domains name where a page was served from")
    if not host or any(c.isspace() for c in raw):
        raise CnnkitError(f"{raw!r} is not a URL or domain")
    host = host.rstrip(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        host = host.encode("idna").decode("ascii")  # internationalised names compare in their xn-- form
    except UnicodeError:
        raise CnnkitError(f"{raw!r}: {host!r} is not a valid host name") from None
    if not HOST.match(host):
        raise CnnkitError(f"{raw!r}: {host!r} is not a domain name")
    return host


@functools.cache
def _extractor():  # noqa: ANN202 - tldextract's own type
    import tldextract

    # The public-suffix list bundled with the package: no download, ever (suffix_list_urls=()).
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def registrable(host: str) -> str:
    """The domain an organisation registers: 'login.paypal.co.uk' -> 'paypal.co.uk' (the public-suffix list)."""
    parts = _extractor()(host)
    return f"{parts.domain}.{parts.suffix}" if parts.domain and parts.suffix else host


def label(host: str) -> str:
    """The registered name without its public suffix: 'www.bankofindia.co.in' -> 'bankofindia'."""
    return _extractor()(host).domain or host.split(".")[0]
