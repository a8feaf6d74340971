"""`--recipe cifar-fast` on the full CIFAR-10: test accuracy against training wall time after every epoch.

    python bench/cifar10_fast.py [--epochs 10] [--out runs/bench-cifar-fast]

Prints one row per epoch (cumulative training seconds, test accuracy with the recipe's test-time augmentation) and
the first times at which 90%, 93% and 94% were reached. Test accuracy is measured each epoch for this report only;
the run picks its weights on its validation split.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cifar10_dir, table  # noqa: E402

MILESTONES = (0.90, 0.93, 0.94)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-cifar-fast"))
    args = parser.parse_args()
    command = [sys.executable, "-m", "cnnkit", "train", "cifar10", "--data-dir", str(cifar10_dir()), "--recipe",
               "cifar-fast", "--epochs", str(args.epochs), "--out", str(args.out), "--overwrite", "--device", "cpu",
               "--test-every-epoch"]
    subprocess.run(command, check=True)
    history = json.loads((args.out / "history.json").read_text())
    elapsed, rows, reached = 0.0, [], {}
    for row in history:
        elapsed += row["time_s"]
        rows.append({"epoch": row["epoch"], "train_s": elapsed, "train_accuracy": row["accuracy"],
                     "val_accuracy": row.get("val_accuracy"), "test_accuracy": row["test_accuracy"]})
        for milestone in MILESTONES:
            if milestone not in reached and row["test_accuracy"] >= milestone:
                reached[milestone] = elapsed
    print(table(rows))
    print()
    for milestone in MILESTONES:
        value = f"{reached[milestone] / 60:.1f} min" if milestone in reached else "not reached"
        print(f"time to {milestone:.0%} test accuracy: {value}")


if __name__ == "__main__":
    main()
