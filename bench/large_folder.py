"""Data beyond memory: the decoded-image cache and bulk prediction on a folder of large screenshots.

    python bench/large_folder.py [--count 50000] [--memory-count 10000] [--steps 200] [--root DIR]

Makes (once, under --root, default ~/.cache/cnnkit/bench) a folder of --count synthetic 1280x800 page screenshots
in two classes, half PNG and half JPEG, and a folder of CIFAR-10's 50,000 training images as PNG. Each figure comes
from a fresh process (its own peak RSS, from getrusage), at --input-size 224:

- cache build: first-run decode of the whole folder into the cache, seconds and images/s;
- second run: data start-up (file stats, key, opening the cache), seconds;
- training: --steps steps of simple-cnn (batch 32) from the cache on the whole folder, against today's in-memory
  path on the first --memory-count images (it holds every decoded image: 147 KB each at 224 px); peak RSS;
- bulk prediction (`cnnkit predict --csv` with an ONNX export) over 5,000 and over all images: images/s, peak RSS;
- CIFAR-10 (32 px): training steps/s from the cache against the in-memory path, same steps, same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cifar10_dir, cpu_name, table  # noqa: E402

CLASSES = ("legitimate", "phishing")


# --- data ----------------------------------------------------------------------------------------------------------
def _screenshot(args: tuple[Path, int]) -> None:
    import numpy as np
    from PIL import Image, ImageDraw

    path, seed = args
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (1280, 800), tuple(int(v) for v in rng.integers(150, 255, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = int(rng.integers(0, 1200)), int(rng.integers(0, 760))
        draw.rectangle([x, y, x + int(rng.integers(20, 300)), y + int(rng.integers(10, 120))],
                       fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    for _ in range(8):
        draw.text((int(rng.integers(0, 1100)), int(rng.integers(0, 780))), "Sign in to your account", fill=(0, 0, 0))
    image.save(path, quality=85)


def screenshots(root: Path, count: int) -> Path:
    folder = root / f"screenshots-{count}"
    if (folder / "complete").is_file():
        return folder
    jobs = []
    for i in range(count):
        cls = CLASSES[i % 2]
        (folder / cls).mkdir(parents=True, exist_ok=True)
        jobs.append((folder / cls / f"{i:06d}.{'png' if i % 4 < 2 else 'jpg'}", i))
    started = time.perf_counter()
    with Pool(os.cpu_count()) as pool:
        pool.map(_screenshot, jobs, chunksize=64)
    (folder / "complete").write_text(f"{time.perf_counter() - started:.0f} s\n")
    return folder


def first_of(folder: Path, count: int, root: Path) -> Path:
    """A folder of symbolic links to the first `count` images of `folder` (half of each class)."""
    subset = root / f"{folder.name}-first-{count}"
    if (subset / "complete").is_file():
        return subset
    for cls in CLASSES:
        (subset / cls).mkdir(parents=True, exist_ok=True)
        for path in sorted((folder / cls).iterdir())[: count // 2]:
            link = subset / cls / path.name
            if not link.exists():
                link.symlink_to(path)
    (subset / "complete").write_text("")
    return subset


def cifar_folder(root: Path) -> Path:
    import numpy as np
    from PIL import Image

    folder = root / "cifar10-train-png"
    if (folder / "complete").is_file():
        return folder
    with np.load(cifar10_dir() / "train.npz") as data:
        x, y = data["x"], data["y"]
    for i, (image, label) in enumerate(zip(x, y)):
        (folder / str(int(label))).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / str(int(label)) / f"{i:05d}.png")
    (folder / "complete").write_text("")
    return folder


# --- measurements, each in a fresh process -------------------------------------------------------------------------
def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Load a folder (from the cache or into memory) and optionally train `steps` steps; time and peak RSS."""
    import torch

    from cnnkit.data.loader import epoch_order, iterate, shard_batches
    from cnnkit.data.preprocess import Preprocess
    from cnnkit.data.sources import SourceOptions, load_data
    from cnnkit.models.registry import create_model
    from cnnkit.runtime.allocator import reuse_freed_memory

    torch.set_num_threads(os.cpu_count() or 1)
    reuse_freed_memory()  # as cnnkit's training does on a CPU
    preprocess = Preprocess(input_size=spec["size"])
    started = time.perf_counter()
    bundle = load_data(f"folder:{spec['folder']}", options=SourceOptions(
        preprocess=preprocess, test_split=0.0, workers=os.cpu_count() or 1, quiet=True,
        cache_dir=Path(spec["cache"]) if spec["cache"] else None))
    result: dict[str, Any] = {"load_s": time.perf_counter() - started, "images": len(bundle.train or [])}
    if spec["steps"]:
        train = bundle.train
        assert train is not None
        model = create_model("simple-cnn", num_classes=bundle.num_classes, input_size=spec["size"])
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        batches = shard_batches(epoch_order(len(train), seed=0, epoch=0, shuffle=True), batch_size=32)
        index = [b.index for b in batches[: spec["steps"]]]
        started, steps = time.perf_counter(), 0
        for images, labels in iterate(train, index, device=torch.device("cpu")):
            loss = torch.nn.functional.cross_entropy(model(preprocess(images)), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
        result |= {"steps": steps, "steps_per_s": steps / (time.perf_counter() - started)}
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not getrusage's ru_maxrss: Linux carries that over from the parent across
    fork and exec, so a child would report the bench's own peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(folder: Path, *, cache: Path | None, size: int, steps: int) -> dict[str, Any]:
    spec = json.dumps({"folder": str(folder), "cache": str(cache) if cache else "", "size": size, "steps": steps})
    done = subprocess.run([sys.executable, __file__, "--worker", spec], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def bulk_predict(export: Path, images: list[str], out: Path) -> dict[str, Any]:
    """`cnnkit predict EXPORT @LIST --csv OUT` in a fresh process: images/s and its peak RSS."""
    listing = out.with_suffix(".txt")
    listing.write_text("\n".join(images) + "\n")
    code = ("import runpy, sys; sys.argv = ['cnnkit'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('cnnkit', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
            "print('PEAK', int(hwm) / 1024, file=sys.stderr)")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, "predict", str(export), f"@{listing}", "--csv", str(out)],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    peak = float(done.stderr.rsplit("PEAK", 1)[1].split()[0])
    return {"images": len(images), "seconds": seconds, "images_per_s": len(images) / seconds, "peak_rss_mb": peak}


def tiny_export(folder: Path, out: Path, cache: Path) -> Path:
    from cnnkit.config import ExportConfig, TrainConfig
    from cnnkit.deploy.onnx import export_run
    from cnnkit.training.fit import train

    train(TrainConfig(data=f"folder:{folder}", out=out, epochs=1, input_size=224, quiet=True, device="cpu",
                      overwrite=True, cache_dir=cache, test_split=0.2))
    export_run(ExportConfig(run=out))
    return out / "export"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--memory-count", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--root", type=Path, default=Path.home() / ".cache" / "cnnkit" / "bench")
    parser.add_argument("--no-predict", action="store_true", help="leave out bulk prediction")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    root = args.root
    folder = screenshots(root, args.count)
    cache = root / "image-cache"
    shutil.rmtree(cache, ignore_errors=True)
    rows: list[dict[str, Any]] = []

    first = measure(folder, cache=cache, size=224, steps=0)
    rows.append({"what": f"cache build, {first['images']} screenshots", "seconds": first["load_s"],
                 "images_per_s": first["images"] / first["load_s"], "peak_rss_mb": first["peak_rss_mb"]})
    second = measure(folder, cache=cache, size=224, steps=0)
    rows.append({"what": "second run: data start-up", "seconds": second["load_s"], "images_per_s": None,
                 "peak_rss_mb": second["peak_rss_mb"]})
    cached = measure(folder, cache=cache, size=224, steps=args.steps)
    rows.append({"what": f"train {cached['steps']} steps from the cache ({cached['images']} images)",
                 "seconds": cached["load_s"], "images_per_s": 32 * cached["steps_per_s"],
                 "peak_rss_mb": cached["peak_rss_mb"]})
    subset = first_of(folder, args.memory_count, root)
    memory = measure(subset, cache=None, size=224, steps=args.steps)
    rows.append({"what": f"train {memory['steps']} steps in memory ({memory['images']} images, --no-cache)",
                 "seconds": memory["load_s"], "images_per_s": 32 * memory["steps_per_s"],
                 "peak_rss_mb": memory["peak_rss_mb"]})

    export = tiny_export(first_of(folder, 400, root), root / "bench-run", cache)
    images = sorted(str(p) for cls in CLASSES for p in (folder / cls).iterdir())
    for n in [] if args.no_predict else sorted({min(5_000, len(images)), len(images)}):
        result = bulk_predict(export, images[:n], root / f"predictions-{n}.csv")
        rows.append({"what": f"cnnkit predict --csv, {n} images", "seconds": result["seconds"],
                     "images_per_s": result["images_per_s"], "peak_rss_mb": result["peak_rss_mb"]})

    cifar = cifar_folder(root)
    cifar_cache = root / "cifar-cache"
    measure(cifar, cache=cifar_cache, size=32, steps=0)  # build
    steps = 4 * args.steps
    from_cache = measure(cifar, cache=cifar_cache, size=32, steps=steps)
    in_memory = measure(cifar, cache=None, size=32, steps=steps)
    for label, result in (("cache", from_cache), ("in memory", in_memory)):
        rows.append({"what": f"CIFAR-10 folder, train {result['steps']} steps, {label}", "seconds": result["load_s"],
                     "images_per_s": 32 * result["steps_per_s"], "peak_rss_mb": result["peak_rss_mb"]})
    print(table(rows))
    ratio = from_cache["steps_per_s"] / in_memory["steps_per_s"]
    print(f"CIFAR-10 training throughput, cache / in memory: {ratio:.2f}")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
