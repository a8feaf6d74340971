import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from cnnkit.serving.batching import MicroBatcher, Overloaded


def slow_identity(calls: list[int], seconds: float = 0.05):  # type: ignore[no-untyped-def]
    def run(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        time.sleep(seconds)
        return batch * 2

    return run


def one_image_requests(run: Callable[[np.ndarray], np.ndarray], *, count: int, max_batch: int) -> list[np.ndarray]:
    """The answers to `count` concurrent one-image requests (image i filled with i) to a MicroBatcher over `run`."""

    async def main() -> list[np.ndarray]:
        batcher = MicroBatcher(run, max_batch=max_batch, max_wait_ms=0, max_queue=100)
        try:
            return await asyncio.gather(*(batcher.submit(np.full((1, 2), i, np.float32)) for i in range(count)))
        finally:
            await batcher.close()

    return asyncio.run(main())


def test_concurrent_requests_share_calls_and_get_their_own_rows() -> None:
    calls: list[int] = []

    answers = one_image_requests(slow_identity(calls), count=20, max_batch=8)
    assert [float(a[0, 0]) for a in answers] == [2.0 * i for i in range(20)]
    assert sum(calls) == 20 and max(calls) <= 8 and len(calls) < 20


def test_a_full_queue_answers_overloaded_and_keeps_serving() -> None:
    calls: list[int] = []

    async def main() -> list[object]:
        batcher = MicroBatcher(slow_identity(calls, 0.2), max_batch=1, max_wait_ms=0, max_queue=1)
        try:
            results = await asyncio.gather(*(batcher.submit(np.zeros((1, 2), np.float32)) for _ in range(5)),
                                           return_exceptions=True)
            later = await batcher.submit(np.ones((1, 2), np.float32))  # the queue drained: served again
            return [*results, later]
        finally:
            await batcher.close()

    results = asyncio.run(main())
    assert any(isinstance(r, Overloaded) for r in results[:5])
    assert any(isinstance(r, np.ndarray) for r in results[:5])
    assert isinstance(results[-1], np.ndarray) and float(results[-1][0, 0]) == 2.0


def test_a_failing_batch_fails_its_requests_not_the_batcher() -> None:
    def broken(batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("model exploded")

    async def main() -> None:
        batcher = MicroBatcher(broken, max_batch=4, max_wait_ms=0, max_queue=10)
        with pytest.raises(RuntimeError, match="exploded"):
            await batcher.submit(np.zeros((1, 2), np.float32))
        await batcher.close()

    asyncio.run(main())


def test_model_calls_do_not_wait_behind_the_default_thread_pool() -> None:
    # Request parsing runs in asyncio's default pool; a backlog there must not delay the model's own calls.
    import threading

    release = threading.Event()

    async def main() -> int:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=2))
        batcher = MicroBatcher(lambda batch: batch, max_batch=4, max_wait_ms=0, max_queue=10)
        backlog = [asyncio.create_task(asyncio.to_thread(release.wait, 60)) for _ in range(8)]
        await asyncio.sleep(0)  # both default-pool threads are held, with more work queued behind them
        try:
            await asyncio.wait_for(batcher.submit(np.zeros((1, 2), np.float32)), timeout=60)  # a hang guard
            return sum(task.done() for task in backlog)
        finally:
            release.set()
            await batcher.close()
            await asyncio.gather(*backlog)

    assert asyncio.run(main()) == 0, "the model call was answered while the whole backlog still waited"


def recording(log: list[tuple[str, int, float, float]], label: str, seconds: float = 0.1):  # type: ignore[no-untyped-def]
    def run(batch: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        time.sleep(seconds)
        log.append((label, len(batch), started, time.perf_counter()))
        return batch * 2

    return run


def test_lanes_run_batches_at_once_and_split_a_backlog() -> None:
    log: list[tuple[str, int, float, float]] = []

    async def main() -> list[np.ndarray]:
        batcher = MicroBatcher(recording(log, "lane"), run_alone=recording(log, "alone"), lanes=2, max_batch=32,
                               max_wait_ms=0, max_queue=100)
        try:
            answers = asyncio.gather(*(batcher.submit(np.full((1, 2), i, np.float32)) for i in range(16)))
            await asyncio.sleep(0.05)  # both lanes are inside their 0.1 s calls
            busy.append((batcher.busy, batcher.waiting))
            return await answers
        finally:
            await batcher.close()

    busy: list[tuple[int, int]] = []
    answers = asyncio.run(main())
    assert [float(a[0, 0]) for a in answers] == [2.0 * i for i in range(16)]
    assert sum(n for _, n, _, _ in log) == 16 and busy[0][0] == 2
    assert max(n for _, n, _, _ in log) == 8  # no lane takes more than its share of the 16 waiting
    first, second = sorted(log, key=lambda call: call[2])[:2]
    assert first[0] == second[0] == "lane" and second[2] < first[3]  # two batches at the same time


def test_a_lone_request_runs_on_every_thread() -> None:
    log: list[tuple[str, int, float, float]] = []

    async def main() -> None:
        batcher = MicroBatcher(recording(log, "lane", 0.01), run_alone=recording(log, "alone", 0.01), lanes=2,
                               max_batch=32, max_wait_ms=0, max_queue=100)
        try:
            for i in range(3):
                await batcher.submit(np.full((1, 2), i, np.float32))
        finally:
            await batcher.close()

    asyncio.run(main())
    assert [label for label, *_ in log] == ["alone"] * 3


def test_a_request_larger_than_max_batch_runs_in_calls_of_at_most_max_batch() -> None:
    calls: list[int] = []

    async def main() -> np.ndarray:
        batcher = MicroBatcher(slow_identity(calls, 0.0), max_batch=32, max_wait_ms=0, max_queue=100)
        try:
            return await batcher.submit(np.arange(70 * 2, dtype=np.float32).reshape(70, 2))
        finally:
            await batcher.close()

    answer = asyncio.run(main())
    assert np.array_equal(answer, 2 * np.arange(70 * 2, dtype=np.float32).reshape(70, 2))  # rows in order
    assert max(calls) <= 32 and sum(calls) == 70  # ONNX Runtime's arena never sees a 70-image batch


def test_a_request_that_does_not_fit_the_queue_is_refused_whole() -> None:
    calls: list[int] = []

    async def main() -> None:
        batcher = MicroBatcher(slow_identity(calls, 0.0), max_batch=4, max_wait_ms=0, max_queue=2)
        try:
            with pytest.raises(Overloaded):
                await batcher.submit(np.zeros((12, 2), np.float32))  # three calls' worth, room for two
        finally:
            await batcher.close()

    asyncio.run(main())
    assert calls == []


def test_a_lane_puts_batches_together_in_one_buffer_made_once() -> None:
    buffers: list[int] = []

    def run(batch: np.ndarray) -> np.ndarray:
        if batch.base is not None and len(batch) > 1:
            buffers.append(id(batch.base))
        time.sleep(0.05)
        return batch * 2  # new memory: answers do not alias the buffer that the next batch overwrites

    answers = one_image_requests(run, count=13, max_batch=4)
    assert [float(a[0, 0]) for a in answers] == [2.0 * i for i in range(13)]
    assert len(buffers) >= 2 and len(set(buffers)) == 1  # several multi-request batches, one buffer


def test_a_request_that_would_wait_past_the_deadline_is_shed_at_once() -> None:
    """The lane is held on an event (no clock in the assertion): once a call has been timed, requests that find more
    queued work ahead than --max-queue-wait are refused at once, while the queued ones are all answered."""
    import threading

    gate = threading.Event()

    def run(batch: np.ndarray) -> np.ndarray:
        time.sleep(0.02)  # at least 20 ms an image: the measured rate the deadline is judged by
        gate.wait(timeout=60)
        return batch

    async def main() -> tuple[int, int, list[str], bool]:
        batcher = MicroBatcher(run, max_batch=1, max_wait_ms=0, max_queue=1000)
        try:
            gate.set()
            await batcher.submit(np.zeros((1, 2), np.float32))  # times one call
            assert batcher.seconds_per_image is not None and batcher.seconds_per_image >= 0.02
            gate.clear()
            # 80 requests while the lane is held: the first ones queue (25 images at 20 ms is 0.5 s), the rest are shed
            deadline = time.monotonic() + 0.5
            requests = [asyncio.ensure_future(batcher.submit(np.zeros((1, 2), np.float32), deadline=deadline))
                        for _ in range(80)]
            await asyncio.sleep(0.05)
            gate.set()
            results = await asyncio.gather(*requests, return_exceptions=True)
            shed = [str(r) for r in results if isinstance(r, Overloaded)]
            answered = sum(isinstance(r, np.ndarray) for r in results)
            idle = await batcher.submit(np.zeros((40, 2), np.float32))  # a large request to an idle server runs
            return answered, len(shed), shed, len(idle) == 40
        finally:
            gate.set()
            await batcher.close()

    answered, shed, messages, idle_ok = asyncio.run(main())
    assert answered >= 1 and shed >= 1 and answered + shed == 80 and idle_ok
    assert all("--max-queue-wait" in m for m in messages)


def test_a_request_is_shed_where_the_queue_ahead_outlasts_what_is_left_of_its_own_deadline() -> None:
    """--max-queue-wait is one budget over every queue a request passes: a request that already spent its time in
    parsing and decoding is refused at the model queue, even where that queue alone is within the limit."""
    import threading

    gate = threading.Event()

    def run(batch: np.ndarray) -> np.ndarray:
        time.sleep(0.02)  # at least 20 ms an image
        gate.wait(timeout=60)
        return batch

    async def main() -> tuple[bool, bool]:
        batcher = MicroBatcher(run, max_batch=1, max_wait_ms=0, max_queue=1000)
        try:
            gate.set()
            await batcher.submit(np.zeros((1, 2), np.float32))  # times one call
            gate.clear()
            held = [asyncio.ensure_future(batcher.submit(np.zeros((1, 2), np.float32))) for _ in range(6)]
            await asyncio.sleep(0)  # queued: at least 5 x 20 ms ahead of the next request
            spent = batcher.submit(np.zeros((1, 2), np.float32), deadline=time.monotonic() + 0.01)
            try:
                await spent
                refused = False
            except Overloaded as exc:
                refused = "this request has left to wait" in str(exc)
            patient = asyncio.ensure_future(batcher.submit(np.zeros((1, 2), np.float32),
                                                           deadline=time.monotonic() + 600))
            gate.set()
            await asyncio.gather(*held)
            return refused, len(await patient) == 1
        finally:
            gate.set()
            await batcher.close()

    refused, answered = asyncio.run(main())
    assert refused, "the queue ahead outlasts the 10 ms left: refused at once"
    assert answered, "with time left, the same queue is waited through"
