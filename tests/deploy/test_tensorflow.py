"""SavedModel and TFLite export: converted from the checked ONNX model, each checked against PyTorch, laid out and
named as TensorFlow Serving and LiteRT clients expect; stale files removed when the model changes."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cnnkit.config import ExportConfig
from cnnkit.deploy import tensorflow as tfx
from cnnkit.deploy.onnx import export_run
from cnnkit.errors import CnnkitError
from cnnkit.runtime.model import load_run_model

HAVE_TF = all(importlib.util.find_spec(m) is not None for m in tfx.MODULES)
needs_tf = pytest.mark.skipif(not HAVE_TF, reason="TensorFlow and onnx2tf not installed: pip install 'cnnkit[tf]'")


@pytest.fixture(scope="module")
def run(exported_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("tf") / "run"
    shutil.copytree(exported_run, copy)
    return copy


@pytest.fixture(scope="module")
def exported(run: Path) -> Path:
    export_run(ExportConfig(run=run, format="all"))
    return run / "export"


def _images(run: Path, n: int = 5) -> np.ndarray:
    size = json.loads((run / "preprocess.json").read_text())["input_size"]
    return np.random.default_rng(7).integers(0, 256, (n, size, size, 3)).astype(np.float32)


@needs_tf
def test_saved_model_is_laid_out_and_signed_as_tensorflow_serving_expects(run: Path, exported: Path) -> None:
    import tensorflow as tf

    version = exported / "saved_model" / "1"
    assert (version / "saved_model.pb").is_file() and (version / "variables").is_dir()
    signature = tf.saved_model.load(str(version)).signatures["serving_default"]
    inputs = signature.structured_input_signature[1]
    assert list(inputs) == ["images"] and inputs["images"].shape.as_list()[1:] == [*_images(run).shape[1:]]
    assert list(signature.structured_outputs) == ["probabilities"]
    images = _images(run)
    got = signature(images=tf.constant(images))["probabilities"].numpy()
    expected = load_run_model(run, device="cpu").probabilities(images.astype(np.uint8))
    np.testing.assert_allclose(got, expected, atol=1e-4)


@needs_tf
def test_tflite_model_answers_like_pytorch_at_any_batch_size(run: Path, exported: Path) -> None:
    predict = tfx.tflite_predictor((exported / "model.tflite").read_bytes())
    expected = load_run_model(run, device="cpu").probabilities(_images(run).astype(np.uint8))
    for n in (1, 5):
        np.testing.assert_allclose(predict(_images(run)[:n]), expected[:n], atol=1e-4)


@needs_tf
def test_export_json_records_parity_and_checksums_of_every_file(run: Path, exported: Path) -> None:
    info = json.loads((exported / "export.json").read_text())["tensorflow"]
    assert set(info) == {"saved_model", "tflite"}
    for record in info.values():
        assert 0 <= record["parity_max_abs_diff"] <= 1e-4 and record["real_images_checked"] > 0
        for name, digest in record["sha256"].items():
            assert (exported / name).is_file() and len(digest) == 64
    manifest = json.loads((run / "manifest.json").read_text())
    assert "export/model.tflite" in manifest and "export/saved_model/1/saved_model.pb" in manifest


@needs_tf
def test_an_onnx_only_export_removes_tensorflow_files_of_the_older_model(exported_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    export_run(ExportConfig(run=run, format="tflite"))
    assert (run / "export" / "model.tflite").is_file() and not (run / "export" / "saved_model").exists()
    export_run(ExportConfig(run=run))
    assert not (run / "export" / "model.tflite").exists()
    assert "export/model.tflite" not in json.loads((run / "manifest.json").read_text())
    assert "tensorflow" not in json.loads((run / "export" / "export.json").read_text())


@needs_tf
def test_a_conversion_outside_the_tolerance_is_refused_and_nothing_kept(exported_run: Path, tmp_path: Path) -> None:
    import torch

    from cnnkit.deploy.onnx import ServingModel

    export = tmp_path / "export"
    shutil.copytree(exported_run / "export", export)
    model = load_run_model(exported_run, device="cpu")
    serving = ServingModel(model.model, model.preprocess.mean, model.preprocess.std).eval()

    def drifted(images: torch.Tensor) -> torch.Tensor:  # what a converter that lost 0.01 somewhere would give
        return serving(images) + 0.01

    with pytest.raises(CnnkitError, match="SavedModel output differs from PyTorch by 0.01"):
        tfx.export_tensorflow(export / "model.onnx", export, formats=("saved_model", "tflite"), reference=drifted,
                              real_images=_images(exported_run, 3).astype(np.uint8), tolerance=1e-3)
    assert sorted(p.name for p in export.iterdir()) == sorted(p.name for p in (exported_run / "export").iterdir())


def test_without_tensorflow_the_export_says_what_to_install(exported_run: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tfx, "_importable", lambda module: module != "onnx2tf")
    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    with pytest.raises(CnnkitError, match=r"pip install 'cnnkit\[tf\]'"):
        export_run(ExportConfig(run=run, format="saved_model"))
