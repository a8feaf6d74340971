"""`csv:PATH`: a table of image files and labels (cnnkit.data.table, the csv source in cnnkit.data.sources)."""

from pathlib import Path

import pytest
import torch
from helpers import CLASSES, write_tree

from cnnkit.data.preprocess import Preprocess
from cnnkit.data.sources import SourceOptions, load_data
from cnnkit.errors import CnnkitError

PRE32 = Preprocess(input_size=32)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A flat folder of images (the class folders' files moved up, renamed) and their labels, as Kaggle ships them."""
    root = tmp_path_factory.mktemp("kaggle")
    tree = write_tree(root / "tree", 12)
    flat = root / "images"
    flat.mkdir()
    lines = []
    for name in CLASSES:
        for file in sorted((tree / name).iterdir()):
            target = flat / f"{name}-{file.name}"
            file.rename(target)
            lines.append((target.name, name))
    (root / "labels.csv").write_text("\ufeffImage,Label\n" + "".join(f"images/{f},{c}\n" for f, c in lines))
    return root


def test_a_label_table_loads_like_a_folder_tree(images: Path) -> None:
    bundle = load_data(str(images / "labels.csv"), options=SourceOptions(preprocess=PRE32, test_split=0.25))
    assert bundle.class_names == sorted(CLASSES)
    assert len(bundle.train) == 27 and len(bundle.test) == 9 and torch.bincount(bundle.test.labels).tolist() == [3] * 3
    assert bundle.train.images.shape[1:] == (3, 32, 32)
    assert all(bundle.train.name(i).startswith(str(images / "images")) for i in range(len(bundle.train)))


def test_a_split_column_places_each_image_and_ids_find_their_extension(images: Path, tmp_path: Path) -> None:
    files = sorted((images / "images").iterdir())
    rows = [f"{f.stem if f.suffix == '.png' else f.name},{f.name.split('-')[0]},{('train', 'valid', 'test')[i % 3]}"
            for i, f in enumerate(files)]
    table = tmp_path / "split.csv"
    table.write_text("id,class,split\n" + "\n".join(rows) + "\n")
    bundle = load_data(f"csv:{table}", options=SourceOptions(preprocess=PRE32, data_dir=images / "images",
                                                             val_split=0.5))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (12, 12, 12)
    assert bundle.val_from == "the split column" and not bundle.skipped


def test_numeric_labels_sort_as_numbers_and_missing_files_are_skipped(images: Path, tmp_path: Path) -> None:
    files = sorted((images / "images").iterdir())
    rows = [f"{f},{(2, 10)[i % 2]}" for i, f in enumerate(files)] + [f"{images}/nowhere.png,2"]
    table = tmp_path / "numbers.csv"
    table.write_text("filename,target\n" + "\n".join(rows) + "\n")
    bundle = load_data(f"csv:{table}", options=SourceOptions(preprocess=PRE32, test_split=0))
    assert bundle.class_names == ["2", "10"] and len(bundle.train) == 36
    assert bundle.skipped == [f"{images}/nowhere.png: no such file"]
    with pytest.raises(CnnkitError, match="unusable file"):
        load_data(f"csv:{table}", options=SourceOptions(preprocess=PRE32, strict=True))


@pytest.mark.parametrize(("text", "message"), [
    ("name,label\na.png,x\n", "no image file column; expected one of file, filename"),
    ("file,kind\na.png,x\n", "no label column"),
    ("file,label\n", "no rows under the header"),
    ("file,label\na.png,x\nb.png,\n", "line 3: no label in column 'label'"),
    ("file,label,split\na.png,x,holdout\n", "line 2: split 'holdout'"),
    ("file,label\na.png,x\na.png,y\n", "line 3: a.png is listed with two labels, 'x' and 'y'"),
])
def test_a_bad_table_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    table = tmp_path / "bad.csv"
    table.write_text(text)
    with pytest.raises(CnnkitError, match=message):
        load_data(f"csv:{table}", options=SourceOptions(preprocess=PRE32))
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(CnnkitError, match="not a UTF-8 text file"):
        load_data(f"csv:{tmp_path / 'binary.csv'}", options=SourceOptions(preprocess=PRE32))
