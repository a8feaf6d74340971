"""Images by URL, as Keras and Ultralytics users pass them: `cnnkit predict RUN https://.../cat.png`,
`clf.predict("https://.../cat.png")`. Fetched with a time-out and a size limit, then decoded by the same guarded
decoder as files (Pillow's decompression-bomb limit, large images reduced while decoded). A URL that cannot be
fetched is an ImageError, so a bulk job records it as that row's error and goes on."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

from cnnkit.data.images import ImageError

URL = re.compile(r"^https?://", re.IGNORECASE)
FETCH_TIMEOUT_S = 15.0  # connect and each read
MAX_FETCH_BYTES = 32 * 2**20  # an image file larger than this is refused before it is all read
USER_AGENT = "cnnkit (image fetch for predict)"


def is_url(item: object) -> bool:
    return isinstance(item, str) and bool(URL.match(item))


def fetch(url: str, *, timeout_s: float = FETCH_TIMEOUT_S, max_bytes: int = MAX_FETCH_BYTES) -> bytes:
    """The body of `url`, at most `max_bytes`; an ImageError that says why otherwise."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - http(s) only, above
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise ImageError(f"{url}: {int(declared):,} bytes, over the {max_bytes:,}-byte limit for images")
            data = response.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        raise ImageError(f"{url}: the server answered HTTP {exc.code} ({exc.reason})") from None
    except urllib.error.URLError as exc:
        raise ImageError(f"{url}: could not fetch it ({exc.reason}); is the network reachable from here?") from None
    except TimeoutError:
        raise ImageError(f"{url}: no answer within {timeout_s:g} s") from None
    except OSError as exc:
        raise ImageError(f"{url}: could not fetch it ({exc})") from None
    if len(data) > max_bytes:
        raise ImageError(f"{url}: over the {max_bytes:,}-byte limit for images")
    return data
