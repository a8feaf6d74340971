"""simple-cnn on the full CIFAR-10 (JPEG copy) with the tutorial's settings: accuracy, wall time, images/s.

    python bench/cifar10_simple_cnn.py [--epochs 10] [--precision fp32|bf16] [--out runs/bench-simple-cnn]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cifar10_dir, table  # noqa: E402

from cnnkit.config import TrainConfig  # noqa: E402
from cnnkit.training.fit import train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--normalize", default="auto")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-simple-cnn"))
    args = parser.parse_args()
    config = TrainConfig(data="cifar10", data_dir=cifar10_dir(), out=args.out, model="simple-cnn",
                         epochs=args.epochs, batch_size=args.batch_size, lr=1e-3, val_split=0.1,
                         precision=args.precision, normalize=args.normalize, overwrite=True, device="cpu")
    started = time.perf_counter()
    result = train(config)
    wall = time.perf_counter() - started
    history = result.history
    train_images = 45_000 * len(history)
    train_seconds = sum(row["time_s"] for row in history)  # includes the per-epoch validation pass
    print()
    print(table([{
        "model": "simple-cnn", "precision": args.precision, "epochs": len(history),
        "test_accuracy": result.metrics["accuracy"], "final_train_accuracy": history[-1]["accuracy"],
        "fit_wall_s": train_seconds, "total_wall_s": wall, "train_images_per_s": train_images / train_seconds,
    }]))


if __name__ == "__main__":
    main()
