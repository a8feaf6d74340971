"""Dynamic micro-batching: concurrent requests for one model version share one ONNX Runtime call."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


class Overloaded(Exception):
    """The queue is full: answer 429 and let the client retry."""


@dataclass
class _Job:
    images: np.ndarray
    future: asyncio.Future[np.ndarray]


class MicroBatcher:
    """Collects requests for up to `max_wait_ms` or until `max_batch` images, then runs them together.

    One worker task per batcher feeds ONNX Runtime from a thread of its own, so the event loop keeps accepting
    requests while a batch runs and the next batch fills meanwhile. That thread is not asyncio's default pool, where
    request parsing runs: a model call never waits behind a queue of requests being decoded.
    """

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], *, max_batch: int, max_wait_ms: float,
                 max_queue: int, on_batch: Callable[[int], None] = lambda n: None) -> None:
        self._run = run
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=max_queue)
        self._on_batch = on_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cnnkit-infer")
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, images: np.ndarray) -> np.ndarray:
        """Probabilities for `images` [n, H, W, 3]; raises Overloaded when the queue is full."""
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._serve())
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Job(images, future))
        except asyncio.QueueFull:
            raise Overloaded("server overloaded: too many requests waiting; retry later") from None
        return await future

    async def _serve(self) -> None:
        """Take whatever is queued (up to max_batch images) and run it; while it runs, the next batch queues up.

        Under light load a request runs at once (no added latency); under heavy load batches fill by themselves.
        With max_wait_ms > 0 a batch that is not full also waits that long for company.
        """
        loop = asyncio.get_running_loop()
        carry: _Job | None = None
        while True:
            jobs = [carry if carry is not None else await self._queue.get()]
            carry = None
            size = len(jobs[0].images)
            deadline = loop.time() + self.max_wait_s
            while size < self.max_batch:
                try:
                    job = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    timeout = deadline - loop.time()
                    if timeout <= 0:
                        break
                    try:
                        job = await asyncio.wait_for(self._queue.get(), timeout)
                    except asyncio.TimeoutError:
                        break
                if size + len(job.images) > self.max_batch:
                    carry = job  # would overflow this batch: it opens the next one
                    break
                jobs.append(job)
                size += len(job.images)
            await self._execute(jobs)

    async def _execute(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        batch = np.concatenate([job.images for job in jobs]) if len(jobs) > 1 else jobs[0].images
        self._on_batch(len(batch))
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(self._executor, self._run, batch)
        except Exception as exc:  # noqa: BLE001 - handed to every waiting request, never lost
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        start = 0
        for job in jobs:
            n = len(job.images)
            if not job.future.done():
                job.future.set_result(outputs[start : start + n])
            start += n

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._executor.shutdown(wait=False, cancel_futures=True)
