"""Dynamic micro-batching: concurrent requests for one model version share one ONNX Runtime call."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

COST_WEIGHT = 0.2  # weight of the newest timing in the moving average of a unit of work's cost


def moving_average(old: float | None, new: float) -> float:
    """The cost estimate after one more timed piece of work: it follows the machine's current load."""
    return new if old is None else (1 - COST_WEIGHT) * old + COST_WEIGHT * new


def seconds_left(deadline: float) -> float:
    """Seconds until `deadline` (time.monotonic()), the longest new work may still wait in a queue."""
    return max(0.0, deadline - time.monotonic())


class Overloaded(Exception):
    """The queue is full: answer 429 and let the client retry."""


@dataclass
class _Job:
    images: np.ndarray
    future: asyncio.Future[np.ndarray]


class MicroBatcher:
    """Collects requests for up to `max_wait_ms` or until `max_batch` images, then runs them together.

    `lanes` worker tasks each take a batch and run it from a thread of their own, so up to `lanes` model calls run
    at once while the event loop keeps accepting requests and the next batches fill. A batch that finds no other
    lane busy and nobody waiting runs on `run_alone` (every core: lowest latency) instead of `run` (one lane's
    share). The threads are not asyncio's default pool, where request parsing runs: a model call never waits behind
    a queue of requests being decoded.
    """

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], *, max_batch: int, max_wait_ms: float,
                 max_queue: int, lanes: int = 1, run_alone: Callable[[np.ndarray], np.ndarray] | None = None,
                 on_batch: Callable[[int], None] = lambda n: None) -> None:
        self._run = run
        self._run_alone = run_alone or run
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.lanes = lanes
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=max_queue)
        self._on_batch = on_batch
        self._executor = ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="cnnkit-infer")
        self._workers: list[asyncio.Task[None]] = []
        self._busy = 0  # lanes running (or gathering) a batch
        # Load shedding: queued images times the measured seconds an image takes, over the lanes, is how long a new
        # request would wait before its turn; past its deadline it is refused at once, not queued.
        self._queued_images = 0
        self.seconds_per_image: float | None = None  # a moving average of the model calls' time per image

    @property
    def waiting(self) -> int:
        """Requests queued for a model call."""
        return self._queue.qsize()

    @property
    def busy(self) -> int:
        """Lanes running (or gathering) a batch."""
        return self._busy

    async def submit(self, images: np.ndarray, *, deadline: float | None = None) -> np.ndarray:
        """Probabilities for `images` [n, H, W, 3]; raises Overloaded when the queue is full, or when the work queued
        ahead would take longer than is left until `deadline` (time.monotonic(); None: no limit).

        A request of more than max_batch images is queued as several jobs: no model call is ever larger than
        max_batch, so ONNX Runtime's memory arena (which keeps its largest size) stays bounded."""
        if len(self._workers) < self.lanes or any(worker.done() for worker in self._workers):
            loop = asyncio.get_running_loop()  # started here, where the loop runs; replaced if one ever died
            self._workers = [worker for worker in self._workers if not worker.done()]
            self._workers += [loop.create_task(self._serve()) for _ in range(self.lanes - len(self._workers))]
        parts = [images[start : start + self.max_batch] for start in range(0, len(images), self.max_batch)]
        if self._queue.maxsize - self._queue.qsize() < len(parts):
            raise Overloaded("server overloaded: too many requests waiting; retry later")
        wait, allowed = self.expected_wait(), seconds_left(deadline) if deadline is not None else None
        if allowed is not None and wait > allowed:
            raise Overloaded(f"server busy: about {wait:.1f} s of model work queued ahead, over the {allowed:.1f} s "
                             "this request has left to wait (--max-queue-wait); retry later")
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[np.ndarray]] = []
        for part in parts:
            futures.append(loop.create_future())
            self._queue.put_nowait(_Job(part, futures[-1]))
            self._queued_images += len(part)
        if len(futures) == 1:
            return await futures[0]
        return np.concatenate(await asyncio.gather(*futures))

    def expected_wait(self) -> float:
        """Seconds a new request would wait behind the work queued ahead of it, by the measured time per image (0
        before any model call was timed). A request's own size is not counted: a large request to an idle server
        always runs."""
        per_image = self.seconds_per_image
        return 0.0 if per_image is None else self._queued_images * per_image / self.lanes

    def _took(self, job: _Job) -> _Job:
        self._queued_images -= len(job.images)
        return job

    async def _serve(self) -> None:
        """One lane: take whatever is queued (up to max_batch images and its share of a backlog) and run it; while
        it runs, the next batch queues up.

        Under light load a request runs at once (no added latency); under heavy load batches fill by themselves.
        With max_wait_ms > 0 a batch that is not full also waits that long for company.
        """
        carry: _Job | None = None
        scratch: list[np.ndarray] = []  # this lane's batch buffer, made at its first batch of several requests
        while True:
            first = carry if carry is not None else self._took(await self._queue.get())
            self._busy += 1
            try:
                jobs, carry = await self._gather(first)
                alone = self._busy == 1 and self._queue.empty() and carry is None
                await self._execute(jobs, self._run_alone if alone else self._run, scratch)
            finally:
                self._busy -= 1
                # A lane waiting for its next job must not keep its last one alive: a job's images are a view of
                # the whole request's decoded array (12 MB for 1,024 32-px images), held until the lane's next job.
                first = jobs = None  # type: ignore[assignment]

    async def _gather(self, first: _Job) -> tuple[list[_Job], _Job | None]:
        """`first` and the jobs that join its batch; the job that would overflow it is carried to the next one."""
        loop = asyncio.get_running_loop()
        # A lane takes its share of a backlog, not all of it: the first lane to wake would otherwise run a long batch
        # on its one core while the others idle, and those requests would wait (the tail latency measured: README,
        # "Serving").
        share = -(-(self._queue.qsize() + 1) // self.lanes) if self._queue.qsize() else self.max_batch
        jobs, size = [first], len(first.images)
        deadline = loop.time() + self.max_wait_s
        while size < self.max_batch and len(jobs) < share:
            try:
                job = self._took(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    job = self._took(await asyncio.wait_for(self._queue.get(), timeout))
                except TimeoutError:
                    break
            if size + len(job.images) > self.max_batch:
                return jobs, job  # would overflow this batch: it opens the next one
            jobs.append(job)
            size += len(job.images)
        return jobs, None

    async def _execute(self, jobs: list[_Job], run: Callable[[np.ndarray], np.ndarray],
                       scratch: list[np.ndarray]) -> None:
        batch = jobs[0].images
        if len(jobs) > 1:
            # Requests are put together in the lane's own buffer, made once at max_batch images: a new array every
            # batch (19 MB for 32 224-px images) was fresh memory to fault in, or heap that stayed resident.
            if not scratch:
                scratch.append(np.empty((self.max_batch, *batch.shape[1:]), batch.dtype))
            size = sum(len(job.images) for job in jobs)
            batch = np.concatenate([job.images for job in jobs], out=scratch[0][:size])
        self._on_batch(len(batch))
        started = time.perf_counter()
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(self._executor, run, batch)
            per_image = (time.perf_counter() - started) / max(len(batch), 1)
            self.seconds_per_image = moving_average(self.seconds_per_image, per_image)
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
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._executor.shutdown(wait=False, cancel_futures=True)
