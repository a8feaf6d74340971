"""Giving memory back to the operating system after a spike.

Request bodies and decoded images are freed when a request ends, but glibc's malloc keeps freed chunks in its heaps
for reuse, so a burst of large requests leaves the process's RSS at its peak for good. malloc_trim(0) returns the
free pages; it takes tens of milliseconds for a gigabyte, so it runs in a worker thread, at most once per interval:
after TRIM_AFTER_BYTES have passed through, and once more after the last answer of a burst has gone out (a trim
that ran while answers were still being encoded and sent found their memory still in use). Fixing glibc's
memory-map threshold at 128 KB, so that every large block is unmapped when freed, was measured too: RSS after a
flood came closer to its start, but Lite0 served 13% fewer requests/s at concurrency 32 (page faults on every
image array), so it is not done. Other C libraries (musl, macOS) have no malloc_trim: there this does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import threading
from collections.abc import Callable

TRIM_AFTER_BYTES = 32 * 1024 * 1024
INTERVAL_S = 1.0


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


class Trimmer:
    def __init__(self, *, interval_s: float = INTERVAL_S, after_bytes: int = TRIM_AFTER_BYTES) -> None:
        self.interval_s, self.after_bytes = interval_s, after_bytes
        self.trim = _malloc_trim()
        self.trims = 0
        self._passed = 0
        self._quiet = True  # nothing noted since the last look
        self._finished = False  # a request ended since the last trim
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None

    def note(self, nbytes: int) -> None:
        """`nbytes` of request memory were allocated (and will be freed); called from any thread."""
        with self._lock:
            self._passed += nbytes
            self._quiet = False

    def finished(self) -> None:
        """A request's answer went out: what it held is free now, so the next quiet interval trims even if a
        trim ran while it was still being answered."""
        with self._lock:
            self._finished = True
            self._quiet = False

    def start(self) -> None:
        if self.trim is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            with self._lock:
                due = self._passed >= self.after_bytes or ((self._passed > 0 or self._finished) and self._quiet)
                if due:
                    self._passed, self._finished = 0, False
                self._quiet = True
            if due and self.trim is not None:
                await asyncio.to_thread(self.trim, 0)
                self.trims += 1
