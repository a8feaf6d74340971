"""Giving memory back to the operating system after a spike.

Request bodies and decoded images are freed when a request ends, but glibc's malloc keeps freed chunks in its heaps
for reuse, so a burst of large requests leaves the process's RSS at its peak for good. malloc_trim(0) returns the
free pages; it takes tens of milliseconds for a gigabyte, so it runs in a worker thread, at most once per interval:
while traffic is heavy, after every TRIM_AFTER_BYTES that pass through; and at the first light interval (under
LIGHT_BYTES noted in it) once MIN_TRIM_BYTES have passed since the last trim. A request's bytes are noted twice: as
they arrive and are decoded, and again when its answer has gone out, which is when they are free, so the last
answers of a burst are followed by a trim (one that ran while they were still being encoded and sent found their
memory in use). Light traffic does not stop the trim that follows a burst: an earlier rule waited for an interval
with no request at all, and a health check or a client every half second meant the memory of a flood was never
returned. Fixing glibc's memory-map threshold at 128 KB, so that every large block is unmapped when freed, was
measured too: RSS after a flood came closer to its start, but Lite0 served fewer requests/s at concurrency 32
(page faults on every image array; README: Security and limits), so it is not done; map_large_blocks fixes it at
LARGE_BLOCK_BYTES instead. Other C libraries (musl, macOS) have no malloc_trim: there this does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import threading
from collections.abc import Callable

TRIM_AFTER_BYTES = 32 * 1024 * 1024  # while traffic is heavy, a trim after every this many bytes
LIGHT_BYTES = 1024 * 1024  # bytes noted in an interval under which traffic counts as light
MIN_TRIM_BYTES = 1024 * 1024  # bytes since the last trim that make a trim worth it when traffic is light
INTERVAL_S = 1.0


M_MMAP_THRESHOLD = -3  # mallopt's parameter number (glibc)
LARGE_BLOCK_BYTES = 4 * 1024 * 1024


def map_large_blocks() -> bool:
    """Serve every malloc block of LARGE_BLOCK_BYTES or more from a memory map of its own, returned to the system
    when freed; whether it was set (glibc only). Fixing the threshold also stops glibc from raising it after each
    large free (up to 32 MB), which is how a burst's blocks (Pillow's image blocks for a 1 x 1,000,000 strip, a
    request's decoded images) ended up in heaps that stayed resident. What a served request allocates each time
    stays under it: a lane's batch has its own buffer (serving.batching), so only rare, large work pays page faults."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES))


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


class Trimmer:
    def __init__(self, *, interval_s: float = INTERVAL_S, after_bytes: int = TRIM_AFTER_BYTES,
                 light_bytes: int = LIGHT_BYTES, min_bytes: int = MIN_TRIM_BYTES) -> None:
        self.interval_s, self.after_bytes = interval_s, after_bytes
        self.light_bytes, self.min_bytes = light_bytes, min_bytes
        self.trim = _malloc_trim()
        self.trims = 0
        self._passed = 0  # bytes noted since the last trim
        self._recent = 0  # bytes noted in this interval
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None

    def note(self, nbytes: int) -> None:
        """`nbytes` of request memory were allocated (and will be freed); called from any thread."""
        with self._lock:
            self._passed += nbytes
            self._recent += nbytes

    def finished(self, nbytes: int = 0) -> None:
        """A request's answer went out: the `nbytes` it held (its body, say) are free now."""
        self.note(max(nbytes, 1))

    def start(self) -> None:
        if self.trim is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _due(self) -> bool:
        with self._lock:
            light = self._recent < self.light_bytes
            due = self._passed >= self.after_bytes or (light and self._passed >= self.min_bytes)
            if due:
                self._passed = 0
            self._recent = 0
            return due

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            if self._due() and self.trim is not None:
                await asyncio.to_thread(self.trim, 0)
                self.trims += 1
