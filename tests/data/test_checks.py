"""Data sanity checks: class balance, small classes, shortcuts a model could learn instead of the content, and
copies across splits."""

from pathlib import Path

import torch
from PIL import Image

from cnnkit.data.checks import file_shortcut_warnings, shortcut_warnings


def pages(n: int, *, frame: bool, seed: int) -> torch.Tensor:
    """White pages with random dark content; `frame` adds a flat grey top band, as a browser's tab strip."""
    g = torch.Generator().manual_seed(seed)
    images = torch.full((n, 3, 64, 64), 250, dtype=torch.uint8)
    images[:, :, 10:] = torch.where(torch.rand(n, 1, 54, 64, generator=g) < 0.2, 30, 250).to(torch.uint8)
    if frame:
        images[:, :, :5] = 200
    return images


def test_a_browser_frame_on_one_class_is_flagged_as_a_shortcut() -> None:
    from cnnkit.data.datasets import ArrayData

    images = torch.cat([pages(20, frame=True, seed=0), pages(20, frame=False, seed=1)])
    data = ArrayData(images, torch.tensor([0] * 20 + [1] * 20))
    warnings = shortcut_warnings(data, ["legitimate", "phishing"])
    assert any(w.startswith("top-band brightness alone separates 'legitimate' from 'phishing'") for w in warnings)
    same = ArrayData(torch.cat([pages(20, frame=False, seed=2), pages(20, frame=False, seed=3)]), data.labels)
    assert shortcut_warnings(same, ["legitimate", "phishing"]) == []


def test_classes_saved_in_different_formats_are_flagged_from_the_file_headers(tmp_path: Path) -> None:
    names = ["legitimate", "phishing"]
    files = []
    for i, image in enumerate(pages(24, frame=False, seed=4)):
        label = i % 2
        path = tmp_path / f"{i}.{'jpg' if label == 0 else 'png'}"
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
        files.append((path, label))
    warnings = file_shortcut_warnings(files, names)
    assert any(w.startswith("file format JPEG alone separates 'legitimate' from 'phishing' in the image files")
               for w in warnings)
    assert any(w.startswith("bytes per pixel alone separates") for w in warnings)
    assert not any("width" in w or "height" in w or "aspect" in w for w in warnings)  # all are 64x64


def test_files_captured_alike_raise_no_warning_and_unreadable_ones_are_left_to_the_decoder(tmp_path: Path) -> None:
    files = []
    for i, image in enumerate(pages(24, frame=False, seed=5)):
        path = tmp_path / f"{i}.png"
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
        files.append((path, i % 2))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert file_shortcut_warnings([*files, (tmp_path / "bad.png", 0)], ["legitimate", "phishing"]) == []


def test_test_images_copied_from_training_and_images_under_two_classes_are_flagged() -> None:
    from cnnkit.data.checks import duplicate_warnings, image_digests
    from cnnkit.data.datasets import ArrayData

    images = pages(30, frame=False, seed=4)
    labels = torch.tensor([0, 1] * 15)
    train = ArrayData(images[:20], labels[:20])
    clean = {"train": train, "val": ArrayData(images[20:25], labels[20:25]),
             "test": ArrayData(images[25:], labels[25:])}
    assert duplicate_warnings(clean, {k: image_digests(v) for k, v in clean.items()}, ["a", "b"]) == []
    # three training images again in the test split (one of them twice), one under the other class
    leaked = ArrayData(torch.cat([images[25:], images[[0, 1, 1, 2]]]),
                       torch.cat([labels[25:], torch.tensor([0, 1, 1, 1])]))
    splits = {**clean, "test": leaked}
    warnings = duplicate_warnings(splits, {k: image_digests(v) for k, v in splits.items()}, ["a", "b"])
    assert warnings[0].startswith("3 distinct test image(s) are exact copies of training images")
    assert warnings[1].startswith("1 image(s) appear under more than one class (a / b)")
    assert len(warnings) == 2


def test_test_images_copied_from_the_validation_split_are_flagged() -> None:
    """A val/ folder filled from test/ (or the reverse): the best epoch is chosen on the images the test measures."""
    from cnnkit.data.checks import duplicate_warnings, image_digests
    from cnnkit.data.datasets import ArrayData

    images, labels = pages(30, frame=False, seed=5), torch.tensor([0, 1] * 15)
    splits = {"train": ArrayData(images[:20], labels[:20]), "val": ArrayData(images[20:25], labels[20:25]),
              "test": ArrayData(torch.cat([images[25:], images[20:22]]), torch.cat([labels[25:], labels[20:22]]))}
    warnings = duplicate_warnings(splits, {k: image_digests(v) for k, v in splits.items()}, ["a", "b"])
    assert warnings == ["2 distinct test image(s) are exact copies of validation images: the best epoch was chosen "
                        "on them, so test accuracy on them is optimistic; remove the copies from one side"]


def test_shortcut_warnings_are_one_short_line_and_the_advice_is_said_once() -> None:
    from cnnkit.data.checks import SHORTCUT_ADVICE
    from cnnkit.data.datasets import ArrayData

    bright, dark = pages(20, frame=True, seed=0), pages(20, frame=False, seed=1) // 3
    warnings = shortcut_warnings(ArrayData(torch.cat([bright, dark]), torch.tensor([0] * 20 + [1] * 20)),
                                 ["circle", "square"])
    assert warnings and all(len(w) <= 240 and w.endswith("a possible shortcut (cnnkit check-data says more)")
                            for w in warnings), warnings
    assert not any("browser" in w or "home pages" in w for w in warnings), "worded for any images, not screenshots"
    assert "cnnkit explain" in SHORTCUT_ADVICE and "--crop-browser-frame" in SHORTCUT_ADVICE
