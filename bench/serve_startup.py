"""Server start-up time and memory: `cnnkit serve RUN` from process start to the first /healthz answer, and the
server's resident memory then, over a few starts. Whether the server process loaded PyTorch is read from its
memory map.

    python bench/serve_startup.py                     # this checkout
    python bench/serve_startup.py --source OTHER_SRC  # another checkout's cnnkit (e.g. a git worktree), same run

The run is a small simple-cnn trained and exported by this checkout (cached under --work).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1] / "tests")]
from common import table  # noqa: E402
from helpers import free_port  # noqa: E402
from serve_load import wait_ready  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def exported_run(work: Path) -> Path:
    run = work / "startup-run"
    if not (run / "export" / "model.onnx").is_file():
        import numpy as np

        from cnnkit.config import ExportConfig, TrainConfig
        from cnnkit.deploy.onnx import export_run
        from cnnkit.training.fit import train

        rng = np.random.default_rng(0)
        data = work / "startup.npz"
        np.savez(data, x=rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8), y=rng.integers(0, 3, 200))
        train(TrainConfig(data=f"npz:{data}", out=run, epochs=1, quiet=True, device="cpu", overwrite=True))
        export_run(ExportConfig(run=run))
    return run


def one_start(source: Path, run: Path) -> dict[str, object]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(source)}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "cnnkit", "serve", str(run), "--port", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=source)
    try:
        wait_ready(port, process, poll_s=0.02)  # polled finely: the wait is what is measured
        seconds = time.perf_counter() - started
        status = Path(f"/proc/{process.pid}/status").read_text()
        rss_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
        maps = Path(f"/proc/{process.pid}/maps").read_text()
        return {"seconds": seconds, "rss_mib": rss_kib / 1024, "torch": "libtorch" in maps}
    finally:
        process.terminate()
        process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, action="append", help="a checkout whose cnnkit to start (repeatable)")
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("/tmp/cnnkit-bench"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    run = exported_run(args.work)
    rows = []
    for source in args.source or [ROOT]:
        one_start(source, run)  # warm the page cache
        starts = [one_start(source, run) for _ in range(args.starts)]
        rows.append({"source": str(source), "starts": len(starts),
                     "start-up s (median)": statistics.median(s["seconds"] for s in starts),
                     "start-up s (min)": min(s["seconds"] for s in starts),
                     "RSS MiB (median)": statistics.median(s["rss_mib"] for s in starts),
                     "torch loaded": starts[0]["torch"]})
    print(table(rows))


if __name__ == "__main__":
    main()
