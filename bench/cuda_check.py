"""The same API on a GPU, end to end: `device="auto"` must pick CUDA. Trains the tutorial CNN and the cifar-fast
recipe on CIFAR-10 (or the part of it given), a Lite0 transfer run (frozen head, then fine-tuning) on generated
images, resumes a run, predicts through `cnnkit.load` on the GPU and exports a GPU-trained run to ONNX. Prints
one row per step: device, epochs, training images/s (validation included), test accuracy, wall seconds.

    python bench/cuda_check.py --cifar ../shared/data/cifar10 [--work /tmp/cnnkit-cuda]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests")]

from common import table  # noqa: E402
from helpers import write_tree  # noqa: E402

import cnnkit  # noqa: E402


def row(step: str, result: object, seconds: float, images: int) -> dict[str, object]:
    import torch

    history = result.history  # type: ignore[attr-defined]
    train_s = sum(r["time_s"] for r in history)
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    return {"step": step, "epochs": len(history), "images/s": images * len(history) / max(train_s, 1e-9),
            "test acc": result.metrics.get("accuracy"), "wall s": seconds,  # type: ignore[attr-defined]
            "peak GPU GiB": peak}


def timed(step: str, images: int, **kwargs: object) -> dict[str, object]:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    result = cnnkit.train(**kwargs)
    done = row(step, result, time.perf_counter() - started, images)
    print(done, flush=True)  # as it comes, in case a later step fails
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cifar", type=Path, required=True, help="a folder with train.npz and test.npz")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cnnkit-cuda"))
    parser.add_argument("--fast-epochs", type=int, default=10)
    args = parser.parse_args()
    import numpy as np
    import torch

    print(f"torch {torch.__version__}; CUDA: {torch.cuda.is_available()} "
          f"({torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'})", flush=True)
    n_train = int(len(np.load(args.cifar / "train.npz")["y"]) * 0.9)
    common = {"data": "cifar10", "data_dir": args.cifar, "project": args.work, "exist_ok": True, "quiet": True}
    rows = [
        timed("simple-cnn, defaults", n_train, name="simple", epochs=3, **common),
        timed("simple-cnn, bf16", n_train, name="simple-bf16", epochs=3, precision="bf16", **common),
        timed("simple-cnn, fp16 + loss scaling", n_train, name="simple-fp16", epochs=3, precision="fp16", **common),
        timed("cifar-fast recipe", n_train, name="fast", recipe="cifar-fast", epochs=args.fast_epochs, **common),
    ]
    started = time.perf_counter()
    resumed = cnnkit.train(resume=args.work / "simple", epochs=5, quiet=True)
    rows.append(row("simple-cnn, resumed to 5", resumed, time.perf_counter() - started, n_train))
    print(rows[-1], flush=True)
    photos = args.work / "photos"
    if not photos.is_dir():
        write_tree(photos, 60, size=128, seed=0)
    rows.append(timed("lite0 head + fine-tune", int(180 * 0.8 * 0.9), data=f"folder:{photos}",
                      model="efficientnet_lite0", pretrained=True, freeze_base=True, epochs=2, finetune_epochs=2,
                      finetune_lr=1e-4, augment="standard", project=args.work, name="lite0", exist_ok=True,
                      quiet=True))
    clf = cnnkit.load(args.work / "fast")
    device = next(clf._model.model.parameters()).device  # noqa: SLF001 - where the loaded model lives
    images = np.load(args.cifar / "test.npz")["x"][:256]
    started = time.perf_counter()
    predictions = clf.predict(images)
    predict_s = time.perf_counter() - started
    export = cnnkit.export(args.work / "fast")
    onnx = cnnkit.load(args.work / "fast" / "export")
    agree = np.mean([a.label == b.label for a, b in zip(predictions, onnx.predict(images))])
    print(table(rows))
    print(f"predict on {device}: 256 images in {predict_s:.2f} s; export parity {export.max_abs_diff:.2e}; "
          f"ONNX and PyTorch agree on {agree:.1%} of the top-1 labels")


if __name__ == "__main__":
    main()
