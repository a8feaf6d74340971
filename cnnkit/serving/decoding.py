"""Decoding request images under a budget, on thread pools of their own.

What a request will cost is known before any pixel is decoded: each encoded image's header gives its size and mode.
So a request over its own limit is refused (413) and one that would push the images being decoded at once past the
server's memory budget is refused too (429 with Retry-After), instead of queueing work the server cannot afford.
Admitted work runs on one of two pools, apart from asyncio's default pool and the model lanes: requests of at most
LIGHT_PIXELS decode on the light pool; bigger ones on a heavy pool half its size, so a flood of huge images takes at
most half the cores and ordinary requests never queue behind it.
"""

from __future__ import annotations

import asyncio
import collections
import mmap
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from cnnkit.data.images import ImageError
from cnnkit.serving.batching import moving_average, seconds_left
from cnnkit.serving.memory import LARGE_BLOCK_BYTES
from cnnkit.serving.runtime import ServedVersion
from cnnkit.serving.tfserving import Encoded, Item, RequestError, too_many_pixels

T = TypeVar("T")
LIGHT_PIXELS = 4_000_000  # a request's encoded images together; two full-HD screenshots
LIGHT_BODY_BYTES = 1024 * 1024  # bodies up to this size are parsed on the light pool
RETRY_AFTER_S = 1
# A request's decoded images over this get memory of their own (_images_buffer): the limit `cnnkit serve` gives
# malloc, so that servers embedding the app without it behave alike.
OWN_MAPPING_BYTES = LARGE_BLOCK_BYTES


class Budget:
    """A quantity (bytes) that concurrent work reserves and gives back; thread-safe, never waits."""

    def __init__(self, limit: int, *, what: str, flag: str) -> None:
        self.limit, self.what, self.flag = limit, what, flag
        self.used = 0
        self._lock = threading.Lock()

    def reserve(self, amount: int) -> None:
        """Take `amount`, or raise a 429. A request alone may take more than the limit (its own limits bound it),
        so that whatever a request is allowed to ask for eventually runs."""
        with self._lock:
            if self.used and self.used + amount > self.limit:
                raise RequestError(429, f"server busy: {self.what} at its {self.limit // 2**20} MiB budget "
                                        f"({self.flag}); retry later", retry_after_s=RETRY_AFTER_S)
            self.used += amount

    def release(self, amount: int) -> None:
        with self._lock:
            self.used -= amount


class Backlog:
    """Work queued on a pool and not yet started, in units of cost per kind of work (parsing: body bytes; decoding:
    pixels), and the seconds a unit of each kind takes: how long new work would wait (for load shedding). The
    kinds are timed apart, as their units differ a thousandfold. Thread-safe."""

    def __init__(self, workers: int, *, prior_s: float) -> None:
        """`prior_s`: the seconds a unit is taken to cost until work of its kind has been timed, so that a burst
        arriving at a cold server is not all admitted on no estimate."""
        self.workers = workers
        self.prior_s = prior_s
        self.units: dict[str, int] = collections.defaultdict(int)
        self.rate: dict[str, float] = {}  # seconds a unit of each kind, a moving average of recent works
        self._lock = threading.Lock()

    def seconds_per_unit(self, kind: str) -> float:
        """A moving average of the recent works' cost a unit (the prior before any). It follows the server's load
        (work takes longer on a busy machine), which is what a queued request will wait for: a median of recent
        costs was tried and shed too little under a flood (bench/README.md)."""
        return self.rate.get(kind, self.prior_s)

    def wait_s(self) -> float:
        with self._lock:
            return sum(units * self.seconds_per_unit(kind) for kind, units in self.units.items()) / self.workers

    def run(self, work: Callable[[], T], units: int, *, kind: str) -> Callable[[], T]:
        """`work`, counted as `units` of `kind` queued until it starts, then timed."""
        with self._lock:
            self.units[kind] += units

        def counted() -> T:
            with self._lock:
                self.units[kind] -= units
            started = time.perf_counter()
            try:
                return work()
            finally:
                rate = (time.perf_counter() - started) / max(units, 1)
                with self._lock:
                    self.rate[kind] = moving_average(self.rate.get(kind), rate)

        return counted


IMAGE_UNITS = 100_000  # a decode's cost in pixels, plus this per image: small images cost their calls, not pixels
PRIOR_S_PER_UNIT = 5e-9  # until measured: 0.5 ms a small image, 80 ms for 16 Mpx, 75 ms to parse 15 MB


class Decoder:
    """Parses and decodes request images off the event loop, within per-request and per-server budgets. Work that
    would wait past its request's deadline behind what is queued on its pool is refused at once (429), not queued."""

    def __init__(self, *, threads: int, budget_bytes: int, max_request_pixels: int, timeout_s: float) -> None:
        threads = threads or os.cpu_count() or 1
        self.light = ThreadPoolExecutor(threads, thread_name_prefix="cnnkit-decode")
        self.heavy = ThreadPoolExecutor(max(1, threads // 2), thread_name_prefix="cnnkit-decode-large")
        self.backlogs = {self.light: Backlog(threads, prior_s=PRIOR_S_PER_UNIT),
                         self.heavy: Backlog(max(1, threads // 2), prior_s=PRIOR_S_PER_UNIT)}
        self.budget = Budget(budget_bytes, what="images being decoded", flag="--decode-budget-mb")
        self.max_request_pixels = max_request_pixels
        self.timeout_s = timeout_s
        self.on_decoded: Callable[[int], None] = lambda nbytes: None  # told the memory each decode held

    async def parse(self, work: Callable[[], T], *, body_bytes: int, deadline: float | None = None) -> T:
        """Run JSON parsing (and header reading) for a body of `body_bytes` on the pool its size calls for, unless
        the work queued there would take longer than is left until `deadline` (None: no limit)."""
        pool = self.light if body_bytes <= LIGHT_BODY_BYTES else self.heavy
        self._shed(pool, deadline)
        return await asyncio.wrap_future(pool.submit(self.backlogs[pool].run(work, body_bytes, kind="parse")))

    def _shed(self, pool: ThreadPoolExecutor, deadline: float | None) -> None:
        if deadline is None:
            return
        wait, allowed = self.backlogs[pool].wait_s(), seconds_left(deadline)
        if wait > allowed:
            raise RequestError(429, f"server busy: about {wait:.1f} s of parsing and decoding queued ahead, over the "
                                    f"{allowed:.1f} s this request has left to wait (--max-queue-wait); retry later",
                               retry_after_s=RETRY_AFTER_S)

    async def decode(self, items: list[Item], served: ServedVersion, *, deadline: float | None = None) -> np.ndarray:
        """float32 [N, H, W, 3] model inputs of a parsed request, decoded within the budgets (and, as parse, shed
        when the queue ahead is longer than the request may still wait)."""
        encoded = [item for item in items if isinstance(item, Encoded)]
        pixels = sum(item.info.pixels for item in encoded)
        if pixels > self.max_request_pixels:
            raise too_many_pixels(pixels, self.max_request_pixels)
        cost = sum(item.info.decoded_bytes for item in encoded)
        pool = self.light if pixels <= LIGHT_PIXELS else self.heavy
        self._shed(pool, deadline)
        self.budget.reserve(cost)
        units = pixels + IMAGE_UNITS * len(encoded)
        try:
            future = pool.submit(self.backlogs[pool].run(lambda: _decode_all(items, served, self.timeout_s), units,
                                                         kind="decode"))
        except BaseException:
            self.budget.release(cost)
            raise
        # Released when the work ends, not when the request does: a client that hangs up does not stop a decode.
        future.add_done_callback(lambda _: self._done(cost))
        return await asyncio.wrap_future(future)

    def _done(self, cost: int) -> None:
        self.budget.release(cost)
        self.on_decoded(cost)

    def close(self) -> None:
        self.light.shutdown(wait=False, cancel_futures=True)
        self.heavy.shutdown(wait=False, cancel_futures=True)


def _decode_all(items: list[Item], served: ServedVersion, timeout_s: float) -> np.ndarray:
    deadline = time.monotonic() + timeout_s
    images = _images_buffer((len(items), *served.input_shape))
    for i, item in enumerate(items):
        if not isinstance(item, Encoded):
            images[i] = item
            continue
        if time.monotonic() > deadline:
            raise RequestError(503, f"decoding the request's images took over {timeout_s:g} s (--decode-timeout)",
                               retry_after_s=RETRY_AFTER_S)
        try:
            images[i] = served.preprocess.load(item.raw, name=f"image {item.index}")
        except ImageError as exc:
            raise RequestError(400, str(exc)) from None
    return images


def _images_buffer(shape: tuple[int, ...]) -> np.ndarray:
    """float32 memory for a request's images. Over OWN_MAPPING_BYTES it is a mapping of its own, unmapped as soon as
    the request's last view of it is freed: from malloc, such a block came from heaps that glibc sized by earlier
    blocks and kept (after a flood of 1,024-image requests, 12 MB blocks stayed resident).
    Smaller blocks stay with malloc: a mapping's fresh pages cost page faults on every request."""
    nbytes = int(np.prod(shape)) * 4
    if nbytes < OWN_MAPPING_BYTES:
        return np.empty(shape, np.float32)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype=np.float32).reshape(shape)
