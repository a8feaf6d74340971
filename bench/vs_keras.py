"""cnnkit against the tutorial's Keras code on the same CIFAR-10 arrays, in one run.

    pip install -e '.[bench]'        # TensorFlow/Keras, for this benchmark only
    python bench/vs_keras.py [--epochs 10]

Runs (1) the tutorial's Keras model as written (Conv 32-64-64 + Dense 64, Adam, batch 64, 10 epochs,
validation_split 0.1, pixels / 255) and (2) `cnnkit train --model simple-cnn` with the same epochs and batch size,
at its default settings (`--precision auto`: what it chose is printed) and with `--precision fp32`, each in its own
process; prints training images/s, the wall time of fit, test accuracy, and the
ratios. `--repeats N` runs the three N times in turn (Keras, default, fp32, Keras, ...): on a shared machine whose
speed drifts by 10-20% over minutes, each repeat's ratios compare runs made back to back, and their median is the
figure to quote. Then (3) time to the tutorial's 71.2% test accuracy: cnnkit with a faster recipe (one-cycle
schedule, larger batch, bf16), evaluated on the test set after every epoch.

cnnkit's training commands run with tcmalloc where it is installed (cnnkit/runtime/allocator.py); the Keras code
runs with the allocator a Python process starts with. `--keras-tcmalloc` adds the Keras code run with the same
tcmalloc preloaded, to show how much of the difference the allocator alone makes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cifar10_dir, table  # noqa: E402

from cnnkit.runtime.allocator import installed_tcmalloc  # noqa: E402

TUTORIAL_ACCURACY = 0.712

KERAS_SCRIPT = r"""
import json, sys, time
import numpy as np
import tensorflow as tf
from tensorflow.keras import layers, models

data = sys.argv[1]; epochs = int(sys.argv[2])
train, test = np.load(f"{data}/train.npz"), np.load(f"{data}/test.npz")
train_images, train_labels = train["x"] / 255.0, train["y"].astype("int64")
test_images, test_labels = test["x"] / 255.0, test["y"].astype("int64")

model = models.Sequential()
model.add(layers.Input(shape=(32, 32, 3)))
model.add(layers.Conv2D(32, (3, 3), activation="relu"))
model.add(layers.MaxPooling2D((2, 2)))
model.add(layers.Conv2D(64, (3, 3), activation="relu"))
model.add(layers.MaxPooling2D((2, 2)))
model.add(layers.Conv2D(64, (3, 3), activation="relu"))
model.add(layers.Flatten())
model.add(layers.Dense(64, activation="relu"))
model.add(layers.Dense(10))
model.compile(optimizer="adam", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
started = time.perf_counter()
history = model.fit(train_images, train_labels, epochs=epochs, batch_size=64, validation_split=0.1, verbose=0)
fit_s = time.perf_counter() - started
test_loss, test_acc = model.evaluate(test_images, test_labels, verbose=0)
print(json.dumps({"fit_s": fit_s, "test_accuracy": float(test_acc),
                  "train_accuracy": float(history.history["accuracy"][-1])}))
"""


def keras(data: Path, epochs: int, *, preload: str | None = None) -> dict[str, float]:
    env = dict(os.environ) | ({"LD_PRELOAD": preload} if preload else {})
    output = subprocess.run([sys.executable, "-c", KERAS_SCRIPT, str(data), str(epochs)], capture_output=True,
                            text=True, check=True, env=env)
    return json.loads(output.stdout.strip().splitlines()[-1])


def cnnkit_run(data: Path, out: Path, *flags: str) -> dict[str, float]:
    command = [sys.executable, "-m", "cnnkit", "train", "cifar10", "--data-dir", str(data), "--model", "simple-cnn",
               "--out", str(out), "--overwrite", "--device", "cpu", "--quiet", *flags]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - started
    history = json.loads((out / "history.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    return {"fit_s": sum(row["time_s"] for row in history), "test_accuracy": metrics["accuracy"],
            "train_accuracy": history[-1]["accuracy"], "process_wall_s": wall}


def time_to_accuracy(data: Path, out: Path, epochs: int) -> tuple[list[dict[str, float]], float | None]:
    """The fast recipe with a test evaluation after every epoch; fit seconds until 71.2% test accuracy."""
    cnnkit_run(data, out, "--epochs", str(epochs), "--batch-size", "128", "--lr", "4e-3", "--scheduler", "onecycle",
               "--precision", "bf16", "--val-split", "0.1", "--test-every-epoch")
    history = json.loads((out / "history.json").read_text())
    elapsed, reached, rows = 0.0, None, []
    for row in history:
        elapsed += row["time_s"]  # training and validation only; the extra test pass is timed apart
        rows.append({"epoch": row["epoch"], "fit_s": elapsed, "test_accuracy": row["test_accuracy"]})
        if reached is None and row["test_accuracy"] >= TUTORIAL_ACCURACY:
            reached = elapsed
    return rows, reached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--fast-epochs", type=int, default=8, help="length of the time-to-accuracy recipe")
    parser.add_argument("--repeats", type=int, default=1, help="Keras / cnnkit pairs, run in turn")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-vs-keras"))
    parser.add_argument("--keras-tcmalloc", action="store_true",
                        help="also run the Keras code with the tcmalloc that cnnkit preloads")
    args = parser.parse_args()
    tcmalloc = installed_tcmalloc() if args.keras_tcmalloc else None
    if args.keras_tcmalloc and tcmalloc is None:
        parser.error("--keras-tcmalloc: no tcmalloc installed (Debian and Ubuntu: libtcmalloc-minimal4)")
    data = cifar10_dir()
    common = ["--epochs", str(args.epochs), "--batch-size", "64", "--lr", "1e-3", "--val-split", "0.1"]
    images = 45_000 * args.epochs
    rows: list[dict] = []
    ratios: dict[str, list[float]] = {name: [] for name in (
        ["keras, tcmalloc preloaded"] if tcmalloc else []) + ["cnnkit default", "cnnkit --precision fp32"]}
    for repeat in range(1, args.repeats + 1):
        results = {"keras (tutorial code)": keras(data, args.epochs),
                   **({"keras, tcmalloc preloaded": keras(data, args.epochs, preload=tcmalloc)} if tcmalloc else {}),
                   "cnnkit default": cnnkit_run(data, args.out / "default", *common),
                   "cnnkit --precision fp32": cnnkit_run(data, args.out / "fp32", *common, "--precision", "fp32")}
        base = results["keras (tutorial code)"]
        for name, r in results.items():
            speed = base["fit_s"] / r["fit_s"]
            if name in ratios:
                ratios[name].append(speed)
            rows.append({"repeat": repeat, "run": name, "train_images_per_s": images / r["fit_s"], "fit_s": r["fit_s"],
                         "test_accuracy": r["test_accuracy"], "speed_vs_keras": speed,
                         "accuracy_vs_keras": r["test_accuracy"] - base["test_accuracy"]})
    print(table(rows))
    if args.repeats > 1:
        print()
        print(table([{"run": name, "repeats": len(values), "median_speed_vs_keras": statistics.median(values),
                      "lowest": min(values), "highest": max(values)} for name, values in ratios.items()]))
    default = json.loads((args.out / "default" / "config.json").read_text())
    print(f"default precision chose: {default['precision_used']}; memory allocator: {default['allocator']} "
          "(cnnkit/runtime/allocator.py)")
    curve, reached = time_to_accuracy(data, args.out / "fast", epochs=args.fast_epochs)
    print()
    print(table(curve))
    keras_s = statistics.median(row["fit_s"] for row in rows if row["run"] == "keras (tutorial code)")
    if reached is None:
        print(f"\nthe fast recipe did not reach {TUTORIAL_ACCURACY:.1%} in {args.fast_epochs} epochs")
    else:
        print(f"\ntime to {TUTORIAL_ACCURACY:.1%} test accuracy: cnnkit {reached:.1f} s against {keras_s:.1f} s "
              f"for the Keras code's {args.epochs} epochs (median) ({reached / keras_s:.2f}x)")


if __name__ == "__main__":
    main()
