"""cnnkit against Keras on the tutorial's transfer-learning workflow, in one run, on the same images.

    pip install -e '.[bench]'        # TensorFlow/Keras, for this benchmark only
    python bench/vs_keras_transfer.py [--folder PATH] [--images 360] [--epochs 2]

The workflow: an EfficientNet-B0 base, frozen, with a new head (global average pooling -> Dense 128 relu -> Dropout
0.3 -> Dense N), trained `--epochs` epochs at lr 1e-3; then the whole base unfrozen and trained `--epochs` more at lr
1e-5 (Adam, batch 64, 224 px, validation split 0.1). Keras runs `keras.applications.EfficientNetB0` with
`base(x, training=False)`, cnnkit runs `cnnkit train --model efficientnet_b0 --freeze-base --finetune-epochs`, both
from the same random base weights' architecture (speed only: `weights=None`, and a random timm state dict), each in
a process of its own, without and with augmentation (Keras: RandomFlip, RandomRotation(0.1), RandomZoom(0.1);
cnnkit: `--augment standard`). Images/s count training and validation images of each phase over its wall time;
peak RSS is the process's high-water mark within the phase (reset at each phase's start). cnnkit runs at its default
settings, and again with `--max-memory 4` (GiB). Then `efficientnet_lite0 --pretrained` (real ImageNet weights) on the
same folder, with the default settings, with `--max-memory 4`, and with whole batches (`--micro-batch 64`: no
micro-batches), and in fp32 throughout (`--precision fp32`: the default's bf16, where it chose it, against fp32), for
test accuracy (20% of the folder held out).

Without --folder, 12 classes of generated 224-px images (coloured shapes on noise) are written under
~/.cache/cnnkit/bench/transfer-N (speed is all they measure; bring photos with --folder for accuracy that means more).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_name, table  # noqa: E402

PEAK_HELPERS = r"""
def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM, the peak RSS, to the current RSS

def peak_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""

KERAS_SCRIPT = PEAK_HELPERS + r"""
import json, sys, time
import tensorflow as tf
import keras
from keras import layers

folder, epochs, augment = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
train, val = keras.utils.image_dataset_from_directory(folder, validation_split=0.1, subset="both", seed=0,
                                                      image_size=(224, 224), batch_size=64, verbose=False)
classes = len(train.class_names)
n_train = sum(int(b[0].shape[0]) for b in train)
n_val = sum(int(b[0].shape[0]) for b in val)
base = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(224, 224, 3))
base.trainable = False
inputs = keras.Input((224, 224, 3))
x = inputs
if augment:
    x = keras.Sequential([layers.RandomFlip("horizontal"), layers.RandomRotation(0.1), layers.RandomZoom(0.1)])(x)
x = base(x, training=False)
x = layers.GlobalAveragePooling2D()(x)
x = layers.Dense(128, activation="relu")(x)
x = layers.Dropout(0.3)(x)
outputs = layers.Dense(classes)(x)
model = keras.Model(inputs, outputs)
loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
phases = {}
for name, lr in (("frozen", 1e-3), ("finetune", 1e-5)):
    if name == "finetune":
        base.trainable = True
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss, metrics=["accuracy"])
    reset_peak()
    started = time.perf_counter()
    model.fit(train, validation_data=val, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - started
    phases[name] = {"seconds": seconds, "images": (n_train + n_val) * epochs, "peak_rss_mib": peak_mib()}
print(json.dumps(phases))
"""

CNNKIT_SCRIPT = PEAK_HELPERS + r"""
import json, sys
from pathlib import Path
from cnnkit.config import TrainConfig
from cnnkit.runtime.allocator import reuse_freed_memory
from cnnkit.runtime.parallel import process_group
from cnnkit.training.callbacks import Callback
from cnnkit.training.fit import Trainer

config = TrainConfig(**json.loads(sys.argv[1]))
reuse_freed_memory()  # as cnnkit.train does on a CPU
import torch
peaks, gpu_peaks = {}, {}

def gpu_peak_mib():
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None

class PhasePeak(Callback):
    current = None
    def on_phase_start(self, trainer, phase):
        if self.current:
            peaks[self.current], gpu_peaks[self.current] = peak_mib(), gpu_peak_mib()
        self.current = phase.name
        reset_peak()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

with process_group(config.device) as ctx:
    trainer = Trainer.prepare(config, ctx)
    watcher = PhasePeak()
    trainer.callbacks.append(watcher)
    result = trainer.fit()
peaks[watcher.current], gpu_peaks[watcher.current] = peak_mib(), gpu_peak_mib()
history = json.loads((Path(config.out) / "history.json").read_text())
metrics = json.loads((Path(config.out) / "metrics.json").read_text())
phases = {}
for row in history:
    name = {"head": "frozen"}.get(row["phase"], row["phase"])
    phase = phases.setdefault(name, {"seconds": 0.0, "epochs": 0, "peak_rss_mib": peaks.get(row["phase"]),
                                     "peak_gpu_mib": gpu_peaks.get(row["phase"])})
    phase["seconds"] += row["time_s"]
    phase["epochs"] += 1
sizes = {"train": len(trainer.data.train), "val": len(trainer.data.val) if trainer.data.val is not None else 0}
for phase in phases.values():
    phase["images"] = (sizes["train"] + sizes["val"]) * phase.pop("epochs")
phases["test_accuracy"] = metrics.get("accuracy")
print(json.dumps(phases))
"""


def generated_folder(images: int) -> Path:
    """12 classes of 224-px JPEGs: a shape and colour per class on noise, placed and sized at random."""
    import numpy as np
    from PIL import Image, ImageDraw

    root = Path.home() / ".cache" / "cnnkit" / "bench" / f"transfer-{images}"
    if (root / ".done").is_file():
        return root
    rng = np.random.default_rng(0)
    shapes = ("ellipse", "rectangle", "triangle")
    colours = ((220, 40, 40), (40, 180, 60), (40, 70, 220), (230, 200, 30))
    for i in range(images):
        label = i % 12
        shape, colour = shapes[label % 3], colours[label // 3]
        array = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) // 2 + 64
        image = Image.fromarray(array)
        draw = ImageDraw.Draw(image)
        size = int(rng.integers(60, 150))
        x, y = (int(v) for v in rng.integers(0, 224 - size, 2))
        if shape == "ellipse":
            draw.ellipse((x, y, x + size, y + size), fill=colour)
        elif shape == "rectangle":
            draw.rectangle((x, y, x + size, y + size), fill=colour)
        else:
            draw.polygon([(x + size // 2, y), (x, y + size), (x + size, y + size)], fill=colour)
        (root / f"class_{label:02d}").mkdir(parents=True, exist_ok=True)
        image.save(root / f"class_{label:02d}" / f"{i:05d}.jpg", quality=90)
    (root / ".done").touch()
    return root


def random_b0_weights(out: Path) -> Path:
    import timm
    from safetensors.torch import save_file

    path = out / "efficientnet_b0-random.safetensors"
    if not path.is_file():
        model = timm.create_model("efficientnet_b0", pretrained=False)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def child(script: str, *args: str) -> dict[str, Any]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    output = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env)
    if output.returncode != 0:
        raise SystemExit(f"child failed:\n{output.stderr[-3000:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])


def cnnkit(folder: Path, out: Path, epochs: int, **settings: Any) -> dict[str, Any]:
    config = {"data": f"folder:{folder}", "out": str(out), "overwrite": True, "input_size": 224, "batch_size": 64,
              "val_split": 0.1, "freeze_base": True, "epochs": epochs, "finetune_epochs": epochs, "lr": 1e-3,
              "finetune_lr": 1e-5, "quiet": True, **settings}
    return child(CNNKIT_SCRIPT, json.dumps(config))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, help="a folder of CLASS/ subfolders of images (default: generated)")
    parser.add_argument("--images", type=int, default=360, help="generated images when no --folder is given")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per phase")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-vs-keras-transfer"))
    parser.add_argument("--skip-keras", action="store_true")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                        help="cnnkit's device (Keras runs on the CPU here: compare with Keras on cpu only)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    folder = args.folder or generated_folder(args.images)
    weights = str(random_b0_weights(args.out))
    b0 = {"model": "efficientnet_b0", "weights": weights, "test_split": 0.0, "device": args.device}
    runs: dict[str, dict[str, Any]] = {}
    for augment in (False, True):
        tag = " + augment" if augment else ""
        if not args.skip_keras:
            runs[f"keras B0{tag}"] = child(KERAS_SCRIPT, str(folder), str(args.epochs), "1" if augment else "0")
        flags = {"augment": "standard"} if augment else {}
        runs[f"cnnkit B0{tag}"] = cnnkit(folder, args.out / f"b0{int(augment)}", args.epochs, **b0, **flags)
    runs["cnnkit B0 --max-memory 4"] = cnnkit(folder, args.out / "b0-4g", args.epochs, **b0, max_memory=4.0)
    lite = {"model": "efficientnet_lite0", "pretrained": True, "test_split": 0.2, "device": args.device}
    runs["cnnkit Lite0 pretrained"] = cnnkit(folder, args.out / "lite0", args.epochs, **lite)
    runs["cnnkit Lite0 pretrained --max-memory 4"] = cnnkit(folder, args.out / "lite0-4g", args.epochs, **lite,
                                                            max_memory=4.0)
    runs["cnnkit Lite0 pretrained --micro-batch 64"] = cnnkit(folder, args.out / "lite0-whole", args.epochs, **lite,
                                                              micro_batch=64)  # whole batches: as before micro-batches
    runs["cnnkit Lite0 pretrained --precision fp32"] = cnnkit(folder, args.out / "lite0-fp32", args.epochs, **lite,
                                                              precision="fp32")  # the default chose bf16 somewhere?
    rows = []
    for name, phases in runs.items():
        keras_name = "keras B0 + augment" if "augment" in name else "keras B0"
        for phase in ("frozen", "finetune"):
            p = phases[phase]
            speed = p["images"] / p["seconds"]
            base = runs.get(keras_name, {}).get(phase) if name.startswith("cnnkit B0") else None
            rows.append({"run": name, "phase": phase, "images_per_s": speed,
                         "vs_keras": f"{speed / (base['images'] / base['seconds']):.2f}x" if base else "-",
                         "peak_rss_mib": p["peak_rss_mib"], "test_accuracy": phases.get("test_accuracy") or "-"})
            if args.device != "cpu":
                rows[-1]["peak_gpu_mib"] = p.get("peak_gpu_mib") or "-"
    print(table(rows))
    print(f"\nfolder: {folder}; {args.epochs} epochs per phase; cnnkit on {args.device}; CPU: {cpu_name()}, "
          f"{os.cpu_count()} cores")


if __name__ == "__main__":
    main()
