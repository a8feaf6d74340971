"""Data-parallel scaling on this machine: simple-cnn on CIFAR-10 with 1 and 2 processes (torchrun, gloo).

    python bench/ddp_scaling.py [--epochs 2] [--batch-size 128] [--nprocs 1 2]

Same global batch and seed for every process count; prints training images/s per epoch (validation excluded is
not possible to separate, so time_s includes the per-epoch validation pass) and the speed-up over 1 process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cifar10_dir, table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--nprocs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-ddp"))
    args = parser.parse_args()
    rows = []
    for nproc in args.nprocs:
        out = args.out / f"nproc{nproc}"
        command = [sys.executable, "-m", "cnnkit", "train", "cifar10", "--data-dir", str(cifar10_dir()), "--out",
                   str(out), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--device",
                   args.device, "--overwrite", "--quiet", "--nproc", str(nproc)]
        subprocess.run(command, check=True)
        history = json.loads((out / "history.json").read_text())
        metrics = json.loads((out / "metrics.json").read_text())
        seconds = sum(row["time_s"] for row in history)
        rows.append({"processes": nproc, "epochs": len(history), "epoch_s": seconds / len(history),
                     "train_images_per_s": 45_000 * len(history) / seconds, "test_accuracy": metrics["accuracy"]})
    base = rows[0]["train_images_per_s"]
    for row in rows:
        row["speedup"] = row["train_images_per_s"] / base
    print(table(rows))


if __name__ == "__main__":
    main()
