"""INT8 export: calibrated on the run's images, checked on its test split, refused when it loses too much, and
served with answers of the same form."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from helpers import free_port, start_server, stop_server, write_tree

from cnnkit.config import ExportConfig, TrainConfig
from cnnkit.deploy.onnx import export_run
from cnnkit.errors import CnnkitError
from cnnkit.training.fit import train


@pytest.fixture(scope="module")
def run(exported_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("int8") / "run"
    shutil.copytree(exported_run, copy)
    return copy


def test_int8_export_records_its_accuracy_against_fp32(run: Path) -> None:
    result = export_run(ExportConfig(run=run, quantize="int8", calibration=64))
    info = json.loads((run / "export" / "export.json").read_text())
    record = info["int8"]
    assert (run / "export" / "model.int8.onnx").is_file() and record == result.int8
    assert record["calibration_images"] == 64 and record["images"] > 0
    assert record["drop_points"] == pytest.approx(100 * (record["top1_fp32"] - record["top1_int8"]), abs=1e-3)
    assert record["drop_points"] <= 1.0 and record["agreement"] >= 0.9
    assert record["size_int8_bytes"] < record["size_fp32_bytes"]
    assert "top-1" in result.int8_table
    manifest = json.loads((run / "manifest.json").read_text())
    assert "export/model.int8.onnx" in manifest


def test_int8_export_of_a_run_whose_arrays_are_smaller_than_its_input(resized_run: Path, tmp_path: Path) -> None:
    """32-px arrays and a 40-px model: calibration and scoring get the images resized as training resized them."""
    config = ExportConfig(run=resized_run, out=tmp_path / "export", quantize="int8", calibration=32, force=True)
    record = export_run(config).int8
    assert record is not None and record["images"] == 60
    tested = json.loads((resized_run / "metrics.json").read_text())["accuracy"]
    assert abs(record["top1_fp32"] - tested) <= 1 / 60 + 1e-9  # the ONNX model saw what PyTorch's test saw


def test_an_int8_model_that_loses_too_much_is_refused_and_nothing_kept(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    with pytest.raises(CnnkitError, match="INT8 model refused") as refused:
        export_run(ExportConfig(run=run, out=out, quantize="int8", calibration=32, max_drop=-50.0))
    assert "top-1" in str(refused.value)  # the table comes with the refusal
    assert not (out / "model.int8.onnx").exists()


def test_an_int8_export_of_a_run_whose_data_changed_is_refused(tmp_path: Path) -> None:
    """An image added to a bare folder re-cuts its seeded splits: the INT8 model would be scored on a test split that
    can hold training images, and calibrated on test images. A plain ONNX export reads no data and goes ahead."""
    folder = write_tree(tmp_path / "shots", 12, size=32, seed=5)
    run = tmp_path / "run"
    train(TrainConfig(data=f"folder:{folder}", out=run, epochs=1, quiet=True, device="cpu", input_size=32))
    first = sorted((folder / "circle").iterdir())[0]
    shutil.copy(first, folder / "circle" / "added.png")
    with pytest.raises(CnnkitError, match=r"changed since .* was trained \(test: \d+ images, now \d+"):
        export_run(ExportConfig(run=run, quantize="int8", calibration=8))
    assert not (run / "export" / "model.int8.onnx").exists()
    assert export_run(ExportConfig(run=run)).max_abs_diff <= 1e-4
    (folder / "circle" / "added.png").unlink()
    assert export_run(ExportConfig(run=run, quantize="int8", calibration=8, force=True)).int8 is not None


def test_the_int8_variant_is_served_with_the_same_answers(run: Path) -> None:
    export_run(ExportConfig(run=run, quantize="int8", calibration=64))
    port = free_port()
    server = start_server("--model", f"shapes={run}", "--precision", "int8", port=port)
    try:
        image = np.zeros((32, 32, 3)).tolist()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/shapes:predict",
                                         data=json.dumps({"instances": [image]}).encode(),
                                         headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
    finally:
        stop_server(server)
    probabilities = answer["predictions"][0]
    assert len(probabilities) == 3 and sum(probabilities) == pytest.approx(1.0, abs=1e-3)


def test_serving_int8_without_a_variant_fails_before_serving(exported_run: Path) -> None:
    with pytest.raises(RuntimeError, match="--quantize int8"):
        start_server("--model", f"shapes={exported_run}", "--precision", "int8", port=free_port(), timeout_s=60)
