"""Fixtures: small data sets the tests make themselves (see helpers.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import CLASSES, make_shapes, write_tree


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, each worker's PyTorch (and the commands it starts) gets its share of the cores: two workers
    of two threads each on two cores spent a fifth of their time waiting on each other."""
    import os

    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // int(workers))))


@pytest.fixture(scope="session", autouse=True)
def image_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Decoded-image caches go to a temporary folder, never the user's ~/.cache (also for CLI subprocesses)."""
    import os

    path = tmp_path_factory.mktemp("image-cache")
    os.environ["CNNKIT_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def shapes_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An .npz with x_train/y_train (3 x 80) and x_test/y_test (3 x 20) 32x32 images and class_names."""
    x_train, y_train = make_shapes(80, seed=1)
    x_test, y_test = make_shapes(20, seed=2)
    path = tmp_path_factory.mktemp("data") / "shapes.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, class_names=np.array(CLASSES))
    return path


@pytest.fixture(scope="session")
def shapes_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder tree with train/ (3 x 30 images) and test/ (3 x 10) subtrees."""
    root = tmp_path_factory.mktemp("tree")
    write_tree(root / "train", 30, seed=3)
    write_tree(root / "test", 10, seed=4)
    return root


@pytest.fixture(scope="session")
def exported_run(shapes_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simple-cnn run on the shapes data, trained ten epochs and exported to ONNX."""
    from cnnkit.config import ExportConfig, TrainConfig
    from cnnkit.deploy.onnx import export_run
    from cnnkit.training.fit import train

    out = tmp_path_factory.mktemp("served") / "shapes"
    train(TrainConfig(data=f"npz:{shapes_npz}", out=out, epochs=10, batch_size=32, lr=3e-3, quiet=True, device="cpu"))
    export_run(ExportConfig(run=out))
    return out


@pytest.fixture(scope="session")
def fast_run(shapes_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cifar-fast-net trained two epochs on the shapes data with the cifar-fast recipe (smaller batches, fp32)."""
    from cnnkit.config import train_config
    from cnnkit.training.fit import train

    out = tmp_path_factory.mktemp("fast") / "run"
    train(train_config(f"npz:{shapes_npz}", recipe="cifar-fast", epochs=2, batch_size=48, precision="fp32",
                       val_split=0.2, out=out, quiet=True, device="cpu"))
    return out


@pytest.fixture(scope="session")
def resized_run(shapes_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """simple-cnn at 40 px on the 32-px shapes arrays (fp32, so that PyTorch's and ONNX's test top-1 agree), exported
    to ONNX: arrays stored smaller than the model's input."""
    from cnnkit.config import ExportConfig, TrainConfig
    from cnnkit.deploy.onnx import export_run
    from cnnkit.training.fit import train

    out = tmp_path_factory.mktemp("resized") / "run"
    train(TrainConfig(data=f"npz:{shapes_npz}", out=out, input_size=40, epochs=4, batch_size=32, lr=3e-3,
                      precision="fp32", quiet=True, device="cpu"))
    export_run(ExportConfig(run=out))
    return out
