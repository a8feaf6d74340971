import asyncio
from pathlib import Path

import numpy as np

from cnnkit.serving.memory import Trimmer


async def until(condition, timeout_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met")


def counting_trimmer(trims: list[int], *, after_bytes: int, min_bytes: int) -> Trimmer:
    """A started Trimmer looking every 20 ms whose trims are recorded in `trims` instead of run."""
    trimmer = Trimmer(interval_s=0.02, after_bytes=after_bytes, light_bytes=1000, min_bytes=min_bytes)
    trimmer.trim = lambda pad: trims.append(pad) or 1
    trimmer.start()
    return trimmer


def test_memory_is_trimmed_after_a_burst_and_once_more_when_it_ends() -> None:
    trims: list[int] = []

    async def main() -> None:
        trimmer = counting_trimmer(trims, after_bytes=1000, min_bytes=1)
        await asyncio.sleep(0.1)
        assert trims == []  # nothing passed through: nothing to trim
        trimmer.note(10)  # a little: trimmed once it is quiet
        await until(lambda: len(trims) == 1)
        await asyncio.sleep(0.1)
        assert len(trims) == 1  # quiet since: no more trims
        for _ in range(20):  # a steady stream over after_bytes: trimmed while it lasts
            trimmer.note(400)
            await asyncio.sleep(0.01)
        assert len(trims) >= 2
        await trimmer.stop()

    asyncio.run(main())


def test_an_answer_that_ends_after_the_last_trim_gets_one_more() -> None:
    trims: list[int] = []

    async def main() -> None:
        trimmer = counting_trimmer(trims, after_bytes=1000, min_bytes=1)
        trimmer.note(5000)  # a big request decoded: trimmed at the next look
        await until(lambda: len(trims) == 1)
        await asyncio.sleep(0.1)
        assert len(trims) == 1
        trimmer.finished()  # its answer went out only now, freeing what it held
        await until(lambda: len(trims) == 2)
        await asyncio.sleep(0.1)
        assert len(trims) == 2
        await trimmer.stop()

    asyncio.run(main())


def test_light_traffic_does_not_hold_back_the_trim_after_a_burst() -> None:
    trims: list[int] = []

    async def main() -> None:
        trimmer = counting_trimmer(trims, after_bytes=100_000, min_bytes=2000)
        trimmer.note(5000)  # a burst, under after_bytes: no trim while it is busy
        for _ in range(60):  # a health check every 5 ms: light traffic, never a silent interval
            trimmer.note(1)
            await asyncio.sleep(0.005)
        assert len(trims) == 1  # the burst's memory went back at the first light interval; the checks need none
        await trimmer.stop()

    asyncio.run(main())


def test_a_big_request_gets_memory_of_its_own_and_small_ones_share_mallocs() -> None:
    import mmap

    import numpy as np

    from cnnkit.serving.decoding import OWN_MAPPING_BYTES, _images_buffer

    big = _images_buffer((OWN_MAPPING_BYTES // (32 * 32 * 3 * 4) + 1, 32, 32, 3))
    assert isinstance(big.base.base, memoryview) and isinstance(big.base.base.obj, mmap.mmap)  # unmapped when freed
    big[:] = 7
    assert big.dtype == np.float32 and float(big.sum()) == 7 * big.size
    small = _images_buffer((2, 32, 32, 3))
    assert small.base is None and small.flags.writeable


def test_every_served_session_shares_one_arena(exported_run: Path) -> None:
    # One CPU arena for the process: with one per session, each lane's grew under floods and kept what it grew.
    import onnxruntime as ort

    from cnnkit.serving.runtime import session_options

    model = (exported_run / "export" / "model.onnx").read_bytes()
    options = [session_options(threads) for threads in (2, 1, 1)]  # registering the arena twice would raise
    assert all(o.get_session_config_entry("session.use_env_allocators") == "1" for o in options)
    sessions = [ort.InferenceSession(model, o, providers=["CPUExecutionProvider"]) for o in options]
    batch = np.zeros((3, 32, 32, 3), np.float32)
    outputs = [s.run(None, {s.get_inputs()[0].name: batch})[0] for s in sessions]
    assert all(np.allclose(outputs[0], out) for out in outputs[1:])
