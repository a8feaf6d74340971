"""Sanity checks on a loaded data set, before training: class balance, classes too small to learn or measure,
shortcuts, and test or validation images that are copies of training images."""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnkit.data.datasets import ArrayData, DataBundle
from cnnkit.data.images import peek
from cnnkit.errors import CnnkitError

MIN_TRAIN_IMAGES = 5  # per class; fewer cannot be learned, and metrics on them mean little
BALANCE_CLASSES_SHOWN = 12
SHORTCUT_AUC = 0.9  # a one-number feature that ranks a class above the rest this well is a shortcut to learn
SHORTCUT_MIN_IMAGES = 10  # per class, before the shortcut check says anything
SHORTCUT_SAMPLE = 20_000  # images (or files) the shortcut checks look at, at most
TOP_BAND = 0.08  # of the height: where a browser's tab strip and address bar sit in a screenshot
IMBALANCE_RATIO = 3  # largest class over smallest, in training images: from here accuracy mostly rewards the large
DUPLICATE_CHECK_BYTES = 4 << 30  # decoded pixels hashed at most (4 GiB: ImageNet-size sets are left unchecked)


@dataclass(frozen=True)
class DataReport:
    balance: str  # one line: images per class in each split
    warnings: list[str]
    fingerprints: dict[str, dict[str, object]]  # per split: what `fingerprint` says of it


def fingerprint(split: ArrayData, digests: list[bytes] | None) -> dict[str, object]:
    """What identifies a split's images: their number, and a sha256 of their labels and (given their `digests`,
    from budgeted_digests) their pixels, in order. A run records it, so that resuming it or evaluating it on its
    own data again can tell when that data changed since (files added or removed re-cut every split: the test images
    could then include training images)."""
    labels = split.labels.to(torch.int64).numpy().tobytes()
    found: dict[str, object] = {"images": len(split), "labels_sha256": hashlib.sha256(labels).hexdigest()}
    if digests is not None:
        found["pixels_sha256"] = hashlib.sha256(b"".join(digests)).hexdigest()
    return found


def changed_splits(saved: dict[str, dict[str, object]], now: dict[str, dict[str, object]]) -> list[str]:
    """The splits whose fingerprints differ, comparing only what both recorded ('test: 60 images, now 75')."""
    changed = []
    for name in sorted(saved.keys() & now.keys()):
        shared = saved[name].keys() & now[name].keys()
        if any(saved[name][k] != now[name][k] for k in shared):
            count = (f"{saved[name]['images']} images, now {now[name]['images']}"
                     if saved[name].get("images") != now[name].get("images") else "other images or labels")
            changed.append(f"{name}: {count}")
    return changed


def changed_since(recorded: dict[str, dict[str, object]], splits: dict[str, ArrayData | None]) -> list[str]:
    """How the given splits differ from the fingerprints a run recorded (its data.json), one line a split
    ('test: 60 images, now 75'); empty when they match."""
    present = {name: split for name, split in splits.items() if split is not None}
    digests = budgeted_digests(present)
    return changed_splits(recorded, {name: fingerprint(split, digests[name] if digests else None)
                                     for name, split in present.items()})


def check_data(bundle: DataBundle) -> DataReport:
    """Images per class in each split, and a warning (saying what it means) for each class that is too small."""
    splits = {name: split for name, split in (("train", bundle.train), ("val", bundle.val), ("test", bundle.test))
              if split is not None}
    counts = {name: _counts(split, bundle.num_classes) for name, split in splits.items()}
    warnings = list(bundle.warnings)
    for index, cls in enumerate(bundle.class_names):
        n_train = counts.get("train", [0] * bundle.num_classes)[index]
        if n_train < MIN_TRAIN_IMAGES:
            warnings.append(f"class {cls!r} has {n_train} training image(s): fewer than {MIN_TRAIN_IMAGES} cannot be "
                            "learned reliably; add images or drop the class")
        if "val" in counts and counts["val"][index] == 0:
            warnings.append(f"class {cls!r} has no validation images: the best epoch is chosen without it")
        if "test" in counts and counts["test"][index] == 0:
            warnings.append(f"class {cls!r} has no test images: its test metrics cannot be measured, and test "
                            "accuracy says nothing about it")
    if bundle.train is not None:
        warnings += shortcut_warnings(bundle.train, bundle.class_names)
    warnings += file_shortcut_warnings(bundle.files, bundle.class_names)
    digests = budgeted_digests(splits)
    if digests is not None:
        warnings += duplicate_warnings(splits, digests, bundle.class_names)
    fingerprints = {name: fingerprint(split, digests[name] if digests else None) for name, split in splits.items()}
    return DataReport(_balance(bundle.class_names, counts), warnings, fingerprints)


def imbalance(train: ArrayData, class_names: list[str]) -> str | None:
    """A note when the largest class has IMBALANCE_RATIO times the training images of the smallest (that has any)."""
    counts = _counts(train, len(class_names))
    present = [(n, name) for n, name in zip(counts, class_names) if n > 0]
    if len(present) < 2:
        return None
    (most, big), (fewest, small) = max(present), min(present)
    if most < IMBALANCE_RATIO * fewest:
        return None
    return (f"the classes are imbalanced ({big!r} has {most} training images, {small!r} {fewest}): accuracy rewards "
            "the large classes; read the per-class recall, and consider --class-weight balanced or --sampler balanced")


def budgeted_digests(splits: dict[str, ArrayData]) -> dict[str, list[bytes]] | None:
    """Each split's image_digests, or None when they hold more than DUPLICATE_CHECK_BYTES of pixels together."""
    if sum(len(split) * 3 * math.prod(split.image_size) for split in splits.values()) > DUPLICATE_CHECK_BYTES:
        return None
    return {name: image_digests(split) for name, split in splits.items()}


def image_digests(split: ArrayData, *, chunk: int = 1024) -> list[bytes]:
    """A 16-byte hash of each image's decoded pixels, in order."""
    found = []
    for start in range(0, len(split), chunk):
        images = split.batch(torch.arange(start, min(len(split), start + chunk))).numpy()
        found += [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in images.reshape(len(images), -1)]
    return found


def duplicate_warnings(splits: dict[str, ArrayData], digests: dict[str, list[bytes]],
                       class_names: list[str]) -> list[str]:
    """Exact copies, pixel for pixel at the input size (`digests`: each split's, from image_digests): validation or test
    images that are also training images (their accuracy then measures memory, not generalisation), test images
    that are also validation images (the best epoch was chosen on them), and images filed under two classes."""
    seen = {name: set(found) for name, found in digests.items()}
    labels_of: dict[bytes, set[int]] = defaultdict(set)
    for name, split in splits.items():
        for digest, label in zip(digests[name], split.labels.tolist()):
            labels_of[digest].add(label)
    warnings = []
    train = seen.get("train", set())
    for name in ("val", "test"):
        if name in seen:
            copies = len(seen[name] & train)
            if copies:
                what = "validation" if name == "val" else "test"
                warnings.append(f"{copies} distinct {what} image(s) are exact copies of training images: {what} "
                                "accuracy on them measures memory, not how the model does on new images; remove "
                                "the copies from one side")
    shared = len(seen["test"] & seen["val"] - train) if "val" in seen and "test" in seen else 0
    if shared:
        warnings.append(f"{shared} distinct test image(s) are exact copies of validation images: the best epoch "
                        "was chosen on them, so test accuracy on them is optimistic; remove the copies from one side")
    both = [labels for labels in labels_of.values() if len(labels) > 1]
    if both:
        pairs = sorted({" / ".join(class_names[i] for i in sorted(labels)) for labels in both})
        warnings.append(f"{len(both)} image(s) appear under more than one class ({', '.join(pairs[:3])}"
                        f"{', ...' if len(pairs) > 3 else ''}): no model can be right on both; fix their labels")
    return warnings


def trivial_features(data: ArrayData, *, limit: int, chunk: int = 256) -> dict[str, torch.Tensor]:
    """For the first `limit` images, numbers that say nothing of their content: brightness, colour, contrast, white
    space, and the look of the top band (a browser frame: grey, flat). A chunk at a time (bounded memory)."""
    n = min(limit, len(data))
    parts = [_features(data.batch(torch.arange(i, min(n, i + chunk)))) for i in range(0, n, chunk)]
    return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}


def _features(images: torch.Tensor) -> dict[str, torch.Tensor]:
    x = images.float() / 255  # N, 3, H, W
    band = x[:, :, : max(1, round(x.shape[2] * TOP_BAND))]
    gray = x.mean(dim=1)
    return {"mean brightness": gray.mean(dim=(1, 2)), "contrast": gray.std(dim=(1, 2)),
            "redness": (x[:, 0] - x[:, 2]).mean(dim=(1, 2)), "white space": (gray > 0.95).float().mean(dim=(1, 2)),
            "top-band brightness": band.mean(dim=(1, 2, 3)), "top-band flatness": -band.std(dim=(1, 2, 3))}


def shortcut_warnings(train: ArrayData, class_names: list[str]) -> list[str]:
    """A warning for each trivial feature of the pixels that alone separates a class from the others in the
    training data."""
    if int(torch.bincount(train.labels, minlength=len(class_names)).min()) < SHORTCUT_MIN_IMAGES:
        return []
    return _separating(trivial_features(train, limit=SHORTCUT_SAMPLE), train.labels[:SHORTCUT_SAMPLE], class_names,
                       where="in the training data")


def file_shortcut_warnings(files: list[tuple[Path, int]], class_names: list[str], *, seed: int = 0) -> list[str]:
    """The same check on what the image files are rather than what they show: width, height, aspect ratio, file
    format and bytes per pixel (how hard they were compressed), from each file's header (no decoding), for a
    seeded sample of `files` ((path, label) pairs). Resizing hides these from the pixel check, but not from a
    model: a resize leaves traces of the original size, and an encoding its artefacts."""
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    if len(files) == 0 or int(torch.bincount(labels, minlength=len(class_names)).min()) < SHORTCUT_MIN_IMAGES:
        return []
    chosen = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed))[:SHORTCUT_SAMPLE].tolist()
    rows, kept = [], []
    for i in chosen:
        try:
            info = peek(files[i][0])
            rows.append((info.width, info.height, info.format or "?", files[i][0].stat().st_size))
            kept.append(i)
        except (OSError, CnnkitError):
            continue  # the decoder reports unusable files
    if not rows:
        return []
    width, height = (torch.tensor([r[k] for r in rows], dtype=torch.float64) for k in (0, 1))
    features = {"image width": width, "image height": height, "aspect ratio": width / height,
                "bytes per pixel": torch.tensor([r[3] for r in rows], dtype=torch.float64) / (width * height)}
    formats = sorted({r[2] for r in rows})
    if len(formats) > 1:
        features |= {f"file format {f}": torch.tensor([float(r[2] == f) for r in rows]) for f in formats}
    return _separating(features, labels[kept], class_names, where="in the image files")


def _separating(features: dict[str, torch.Tensor], labels: torch.Tensor, class_names: list[str], *,
                where: str) -> list[str]:
    from sklearn.metrics import roc_auc_score  # loaded where used: a second off every command's start

    warnings = []
    for name, values in features.items():
        if bool((values == values[0]).all()):
            continue
        for index, cls in enumerate(class_names[: 1 if len(class_names) == 2 else None]):
            members = (labels == index).numpy()
            if members.all() or not members.any():
                continue
            auc = float(roc_auc_score(members, values.numpy()))
            if max(auc, 1 - auc) >= SHORTCUT_AUC:
                what = f"{cls!r} from {class_names[1 - index]!r}" if len(class_names) == 2 else f"{cls!r} from the rest"
                warnings.append(f"{name} alone separates {what} {where} (AUC {max(auc, 1 - auc):.2f}): a possible "
                                "shortcut (cnnkit check-data says more)")
    return warnings


SHORTCUT_ADVICE = (
    "A possible shortcut: a number that says nothing of what an image shows (its brightness, its size, how it was "
    "encoded) separates a class on its own, and a model learns such a thing first. It comes from how the images were "
    "captured or collected: one class photographed in daylight, scanned at another size, saved as PNG while the other "
    "is JPEG, screenshots of one class with a browser frame. Capture, crop and encode every class alike (for "
    "screenshots: --crop-browser-frame, --first-screen), and look at what drives the model with cnnkit explain. "
    "Where the feature is the content itself (bright sky in 'beach' photos), ignore it.")


def _counts(split: ArrayData, num_classes: int) -> list[int]:
    return torch.bincount(split.labels, minlength=num_classes).tolist()


def _balance(class_names: list[str], counts: dict[str, list[int]]) -> str:
    header = "/".join(counts)
    per_class = [f"{name} {'/'.join(str(counts[s][i]) for s in counts)}" for i, name in enumerate(class_names)]
    if len(per_class) > BALANCE_CLASSES_SHOWN:
        train = counts.get("train") or next(iter(counts.values()))
        per_class = [f"{len(class_names)} classes, {min(train)} to {max(train)} training images each"]
    return f"Images per class ({header}): " + ", ".join(per_class)
