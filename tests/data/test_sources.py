import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CLASSES, make_shapes, write_tree

from cnnkit.config import TrainConfig
from cnnkit.data.checks import check_data
from cnnkit.data.cifar10 import download_cifar10, find_or_download_cifar10
from cnnkit.data.datasets import ArrayData, stratified_split
from cnnkit.data.preprocess import Preprocess
from cnnkit.data.sources import SOURCES, SourceOptions, load_data
from cnnkit.errors import CnnkitError

PRE32 = Preprocess(input_size=32)


def test_npz_with_train_and_test_and_a_stratified_validation_split(shapes_npz: Path) -> None:
    bundle = load_data(f"npz:{shapes_npz}", options=SourceOptions(val_split=0.25, seed=0))
    assert bundle.class_names == CLASSES
    assert len(bundle.train) == 180 and len(bundle.val) == 60 and len(bundle.test) == 60
    assert torch.bincount(bundle.val.labels).tolist() == [20, 20, 20]
    assert bundle.train.images.dtype == torch.uint8 and bundle.train.images.shape[1:] == (3, 32, 32)
    again = load_data(f"npz:{shapes_npz}", options=SourceOptions(val_split=0.25, seed=0))
    assert torch.equal(again.val.labels, bundle.val.labels) and torch.equal(again.val.images, bundle.val.images)


def test_stratified_split_is_disjoint_and_complete() -> None:
    labels = torch.tensor([0] * 10 + [1] * 30)
    keep, held = stratified_split(labels, fraction=0.1, seed=3)
    assert sorted(keep.tolist() + held.tolist()) == list(range(40))
    assert torch.bincount(labels[held]).tolist() == [1, 3]


def test_npz_grayscale_and_float_arrays_are_converted(tmp_path: Path) -> None:
    path = tmp_path / "gray.npz"
    np.savez(path, x=np.random.rand(6, 28, 28).astype(np.float32), y=np.array([0, 1, 0, 1, 0, 1]))
    bundle = load_data(str(path), options=SourceOptions(test_split=0))
    assert bundle.train.images.shape == (6, 3, 28, 28) and bundle.class_names == ["0", "1"]


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (np.zeros((4, 32, 32, 5), np.uint8), np.zeros(4, int), "C in 1, 3, 4"),
        (np.zeros((4, 32), np.uint8), np.zeros(4, int), "got shape"),
        (np.zeros((4, 8, 8, 3), np.uint8), np.zeros(3, int), "4 images but 3 labels"),
        (np.zeros((4, 8, 8, 3), np.int32), np.zeros(4, int), "uint8 or float"),
        (np.zeros((4, 8, 8, 3), np.uint8), np.zeros(4, int), "at least 2 classes"),
        (np.zeros((4, 8, 8, 3), np.uint8), np.array([0, 1, -1, 1]), "non-negative whole numbers .* got -1"),
        (np.zeros((4, 8, 8, 3), np.uint8), np.array([0, 1.5, 1, 0]), "float64 values that are not all whole"),
        (np.zeros((4, 8, 8, 3), np.uint8), np.array([[1, 1], [0, 1], [1, 0], [0, 1]]), "must be one-hot rows"),
    ],
)
def test_bad_npz_arrays_are_clear_errors(tmp_path: Path, x: np.ndarray, y: np.ndarray, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, x=x, y=y)
    with pytest.raises(CnnkitError, match=message):
        load_data(f"npz:{path}", options=SourceOptions())


def test_one_hot_and_whole_number_float_labels_are_class_indices(tmp_path: Path) -> None:
    """Keras users' labels: to_categorical's one-hot rows, floats from a CSV round trip, a [N, 1] column."""
    x, indices = np.zeros((6, 8, 8, 3), np.uint8), np.array([0, 2, 1, 2, 0, 1])
    for y in (np.eye(3, dtype=np.float32)[indices], indices.astype(np.float32), indices[:, None]):
        np.savez(tmp_path / "labels.npz", x=x, y=y)
        bundle = load_data(f"npz:{tmp_path / 'labels.npz'}", options=SourceOptions(test_split=0))
        assert bundle.train.labels.tolist() == indices.tolist() and bundle.num_classes == 3
    np.savez(tmp_path / "labels.npz", x=x, y=np.eye(4)[indices])  # one-hot over 4 classes, the last without images
    assert load_data(f"npz:{tmp_path / 'labels.npz'}", options=SourceOptions(test_split=0)).class_names == [
        "0", "1", "2", "3"]


def test_an_npz_of_x_and_y_holds_out_a_test_split_as_a_single_folder_tree_does(tmp_path: Path) -> None:
    x, y = make_shapes(10, seed=3)
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    bundle = load_data(f"npz:{tmp_path / 'xy.npz'}", options=SourceOptions(test_split=0.2))
    assert len(bundle.train) == 24 and len(bundle.test) == 6  # 20%, stratified: 2 of each class's 10
    assert sorted(bundle.test.labels.tolist()) == [0, 0, 1, 1, 2, 2]
    again = load_data(f"npz:{tmp_path / 'xy.npz'}", options=SourceOptions(test_split=0.2))
    assert torch.equal(bundle.test.images, again.test.images)  # seeded: the same test images every time
    whole = load_data(f"npz:{tmp_path / 'xy.npz'}", options=SourceOptions(test_split=0))
    assert len(whole.train) == 30 and whole.test is None


def test_folder_with_train_and_test_subtrees(shapes_tree: Path) -> None:
    bundle = load_data(f"folder:{shapes_tree}", options=SourceOptions(preprocess=PRE32))
    assert bundle.class_names == CLASSES
    assert len(bundle.train) == 90 and len(bundle.test) == 30 and not bundle.skipped
    assert bundle.train.images.shape[1:] == (3, 32, 32)


def test_single_folder_tree_is_split_by_ratio(tmp_path: Path) -> None:
    write_tree(tmp_path, 10)
    bundle = load_data(str(tmp_path), options=SourceOptions(preprocess=PRE32, test_split=0.2))
    assert len(bundle.train) == 24 and len(bundle.test) == 6


def test_corrupt_files_are_skipped_and_reported_or_stop_with_strict(tmp_path: Path) -> None:
    write_tree(tmp_path, 4)
    (tmp_path / "circle" / "zero.png").write_bytes(b"")
    (tmp_path / "square" / "notes.txt").write_text("not an image")
    good = (tmp_path / "cross" / "000.png").read_bytes()
    (tmp_path / "cross" / "truncated.png").write_bytes(good[: len(good) // 2])
    bundle = load_data(str(tmp_path), options=SourceOptions(preprocess=PRE32, test_split=0))
    assert len(bundle.train) == 12
    assert len(bundle.skipped) == 3 and any("truncated.png" in s for s in bundle.skipped)
    with pytest.raises(CnnkitError, match="3 unusable file"):
        load_data(str(tmp_path), options=SourceOptions(preprocess=PRE32, strict=True))


def test_empty_class_folder_and_single_class_are_errors(tmp_path: Path) -> None:
    write_tree(tmp_path, 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CnnkitError, match="empty.*class folder is empty"):
        load_data(str(tmp_path), options=SourceOptions(preprocess=PRE32))
    shutil.rmtree(tmp_path / "empty")
    shutil.rmtree(tmp_path / "square")
    shutil.rmtree(tmp_path / "cross")
    with pytest.raises(CnnkitError, match="at least 2 class folders, found 1"):
        load_data(str(tmp_path), options=SourceOptions(preprocess=PRE32))


def test_unknown_source_lists_valid_ones() -> None:
    with pytest.raises(CnnkitError, match="unknown data source 'mnist': expected cifar10, folder:PATH, npz:PATH"):
        load_data("mnist", options=SourceOptions())
    assert list(SOURCES) == ["cifar10", "csv", "folder", "npz"]


def test_cifar10_is_read_from_a_local_folder(tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(0, 255, (20, 32, 32, 3), dtype=np.uint8)
    y = np.arange(20) % 10
    for name in ("train", "test"):
        np.savez(tmp_path / f"{name}.npz", x=x, y=y, class_names=np.array(["c%d" % i for i in range(10)]))
    assert find_or_download_cifar10(tmp_path) == tmp_path
    bundle = load_data("cifar10", options=SourceOptions(data_dir=tmp_path))
    assert len(bundle.train) == 20 and bundle.class_names[0] == "c0"
    with pytest.raises(CnnkitError, match=r"--data-dir .*/nowhere: no such folder; .* folder:PATH"):
        find_or_download_cifar10(tmp_path / "nowhere")
    (tmp_path / "test.npz").unlink()
    with pytest.raises(CnnkitError, match="no train.npz and test.npz there"):
        find_or_download_cifar10(tmp_path)


def test_cifar10_download_without_network_fails_fast_with_advice(tmp_path: Path) -> None:
    import time

    started = time.monotonic()
    with pytest.raises(CnnkitError, match="CNNKIT_DATA"):
        download_cifar10(tmp_path, url="http://127.0.0.1:9/cifar-10-binary.tar.gz")  # port 9: nothing listens
    assert time.monotonic() - started < 15
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*tmp"))


def test_array_data_rejects_wrong_layout() -> None:
    with pytest.raises(CnnkitError, match="uint8"):
        ArrayData(torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.long))


def test_a_tree_of_sources_trains_on_some_and_tests_on_the_others(tmp_path: Path) -> None:
    import shutil

    from helpers import write_tree

    write_tree(tmp_path / "crawl-a", 6, size=20, seed=1)
    write_tree(tmp_path / "crawl-b", 4, size=20, seed=2)
    write_tree(tmp_path / "crawl-c", 3, size=20, seed=3)
    shutil.rmtree(tmp_path / "crawl-c" / "square")  # a source may lack a class
    options = SourceOptions(preprocess=Preprocess(input_size=16), test_sources=("crawl-b",))
    bundle = load_data(f"folder:{tmp_path}", options=options)
    assert bundle.class_names == ["circle", "cross", "square"]
    assert len(bundle.test) == 3 * 4 and len(bundle.train) == 3 * 6 + 2 * 3
    with pytest.raises(CnnkitError, match="--test-source .crawl-d.: no such source folder .* did you mean crawl-c"):
        load_data(f"folder:{tmp_path}", options=SourceOptions(preprocess=Preprocess(input_size=16),
                                                              test_sources=("crawl-d",)))


@pytest.mark.parametrize("val_dir", ["val", "valid", "validation"])
def test_a_validation_tree_beside_train_is_the_validation_split(tmp_path: Path, val_dir: str) -> None:
    """train/ val/ test/ (Keras tutorials, Kaggle and Roboflow exports): the val/ folder is validated on, as it is,
    instead of a random --val-split of train/ (it was left out with no word said)."""
    write_tree(tmp_path / "train", 10, seed=1)
    write_tree(tmp_path / val_dir, 3, seed=2)
    write_tree(tmp_path / "test", 4, seed=3)
    bundle = load_data(f"folder:{tmp_path}", options=SourceOptions(preprocess=PRE32, val_split=0.5))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (30, 9, 12)
    assert bundle.val_from == f"{val_dir}/" and not bundle.warnings
    assert torch.bincount(bundle.val.labels).tolist() == [3, 3, 3]
    # each image knows its file (reports point at it), through splits and subsets
    assert Path(bundle.test.name(0)).parent.parent == tmp_path / "test"
    assert bundle.val.subset(torch.tensor([4])).name(0) == bundle.val.name(4)
    assert Path(bundle.whole().name(30)).parent.parent == tmp_path / val_dir


def test_folders_the_split_layout_leaves_out_are_warned_about(tmp_path: Path) -> None:
    """A test class that train/ lacks (a model cannot be scored on a class it never saw) and a folder beside the
    splits: each is a warning naming it and how many files it holds, not a silent drop; two validation trees are
    ambiguous and refused."""
    write_tree(tmp_path / "train", 6, seed=1)
    write_tree(tmp_path / "test", 2, seed=2)
    shutil.copytree(tmp_path / "test" / CLASSES[0], tmp_path / "test" / "horse")
    write_tree(tmp_path / "extra", 1, seed=4)
    bundle = load_data(f"folder:{tmp_path}", options=SourceOptions(preprocess=PRE32))
    assert len(bundle.test) == 6 and bundle.val is None and bundle.val_from == ""
    assert bundle.warnings == [f"{tmp_path / 'extra'}: not a split folder (train/, test/), left out",
                               f"{tmp_path / 'test' / 'horse'}: class 'horse' is not in {tmp_path / 'train'} "
                               "(2 files), left out of the test split"]
    shutil.rmtree(tmp_path / "test" / CLASSES[1])  # a class the test split lacks: its metrics are not measured
    bundle = load_data(f"folder:{tmp_path}", options=SourceOptions(preprocess=PRE32))
    assert torch.bincount(bundle.test.labels, minlength=3).tolist() == [2, 0, 2]
    assert f"class {CLASSES[1]!r} has no test images: its test metrics cannot be measured, and test accuracy says " \
           "nothing about it" in check_data(bundle).warnings
    write_tree(tmp_path / "val", 1, seed=5)
    write_tree(tmp_path / "validation", 1, seed=6)
    with pytest.raises(CnnkitError, match="both val/ and validation/"):
        load_data(f"folder:{tmp_path}", options=SourceOptions(preprocess=PRE32))


def test_npz_validation_arrays_are_the_validation_split(tmp_path: Path) -> None:
    x, y = np.random.default_rng(0).integers(0, 255, (12, 8, 8, 3), dtype=np.uint8), np.arange(12) % 3
    np.savez(tmp_path / "one.npz", x_train=x, y_train=y, x_val=x[:6], y_val=y[:6], x_test=x[:3], y_test=y[:3])
    bundle = load_data(f"npz:{tmp_path / 'one.npz'}", options=SourceOptions(val_split=0.25))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (12, 6, 3) and bundle.val_from == "x_val/y_val"
    for split, n in (("train", 12), ("val", 3)):
        np.savez(tmp_path / f"{split}.npz", x=x[:n], y=y[:n])
    bundle = load_data(f"npz:{tmp_path}", options=SourceOptions(val_split=0.25))
    assert (len(bundle.train), len(bundle.val), bundle.test) == (12, 3, None) and bundle.val_from == "val.npz"
    np.savez(tmp_path / "half.npz", x_train=x, y_train=y, x_val=x)
    with pytest.raises(CnnkitError, match="x_val without y_val"):
        load_data(f"npz:{tmp_path / 'half.npz'}", options=SourceOptions())


def test_a_tree_of_sources_without_test_source_pools_them_by_their_class_folders(tmp_path: Path) -> None:
    """ROOT/SOURCE/CLASS without --test-source: the classes are the inner folders, pooled over the sources (the
    outer folders as classes would train a model to tell the crawls apart), and a note says so."""
    write_tree(tmp_path / "crawl-a", 6, size=20, seed=1)
    write_tree(tmp_path / "crawl-b", 4, size=20, seed=2)
    bundle = load_data(f"folder:{tmp_path}", options=SourceOptions(preprocess=Preprocess(input_size=16),
                                                                   test_split=0.2))
    assert bundle.class_names == ["circle", "cross", "square"]
    assert len(bundle.train) + len(bundle.test) == 3 * 10 and torch.bincount(bundle.test.labels).tolist() == [2] * 3
    assert any("crawl-a, crawl-b" in note and "--test-source" in note for note in bundle.notes)
    # Different inner folders are an ordinary tree whose classes hold subfolders.
    write_tree(tmp_path / "other" / "crawl-c" / "kind", 2, size=20, seed=3)
    (tmp_path / "other" / "crawl-d" / "sort").mkdir(parents=True)
    write_tree(tmp_path / "other" / "crawl-d" / "sort", 2, size=20, seed=4)
    plain = load_data(f"folder:{tmp_path / 'other'}", options=SourceOptions(preprocess=Preprocess(input_size=16),
                                                                            test_split=0))
    assert plain.class_names == ["crawl-c", "crawl-d"] and not plain.notes



def test_the_folder_layout_can_be_given_instead_of_guessed(tmp_path: Path) -> None:
    """cat/2019, cat/2020, dog/2019, dog/2020 looks like two sources of the classes 2019 and 2020: --folder-layout
    classes reads it as torchvision's ImageFolder does, and sources reads a tree the guess would not."""
    for animal, seed in (("cat", 1), ("dog", 2)):
        write_tree(tmp_path / "animals" / animal, 3, size=20, seed=seed)  # circle/ cross/ square/ under each
    root = f"folder:{tmp_path / 'animals'}"
    options = SourceOptions(preprocess=Preprocess(input_size=16), test_split=0)
    guessed = load_data(root, options=options)
    assert guessed.class_names == ["circle", "cross", "square"] and "--folder-layout classes" in guessed.notes[0]
    given = load_data(root, options=replace(options, folder_layout="classes"))
    assert given.class_names == ["cat", "dog"] and len(given.train) == 18 and not given.notes
    assert torch.bincount(given.train.labels).tolist() == [9, 9]
    # One source holds a class folder the other lacks: no guess of sources, but they can be given.
    write_tree(tmp_path / "uneven" / "site-a", 2, size=20, seed=3)
    write_tree(tmp_path / "uneven" / "site-b", 2, size=20, seed=4)
    shutil.rmtree(tmp_path / "uneven" / "site-b" / "cross")
    uneven = f"folder:{tmp_path / 'uneven'}"
    assert load_data(uneven, options=options).class_names == ["site-a", "site-b"]
    assert load_data(uneven, options=replace(options, folder_layout="sources")).class_names == [
        "circle", "cross", "square"]
    with pytest.raises(CnnkitError, match="--test-source names SOURCE folders: it needs --folder-layout sources"):
        TrainConfig(data=root, test_source="cat", folder_layout="classes")


def test_data_specs_are_values_equal_however_they_are_written(shapes_npz: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnkit.data.sources import DataSpec, same_data

    monkeypatch.chdir(shapes_npz.parent)
    assert DataSpec.parse(shapes_npz.name) == DataSpec.parse(f"npz:{shapes_npz}") == DataSpec("npz", shapes_npz)
    assert str(DataSpec.parse(shapes_npz.name)) == f"npz:{shapes_npz.resolve()}"
    assert DataSpec.parse("cifar10") == DataSpec("cifar10") and str(DataSpec("cifar10")) == "cifar10"
    (tmp_path / "photos").mkdir()
    monkeypatch.chdir(tmp_path)
    assert same_data("photos", f"folder:{tmp_path / 'photos'}") and not same_data("photos", None)
    assert not same_data("photos", "cifar10")
