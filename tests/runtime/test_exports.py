"""A stale export is never served or loaded: export.json records the weights it was made from."""

import json
from pathlib import Path

import pytest

from cnnkit.config import ExportConfig, TrainConfig
from cnnkit.deploy.onnx import export_run
from cnnkit.errors import CnnkitError
from cnnkit.rundir import RunDir
from cnnkit.runtime.exports import export_status
from cnnkit.serving.runtime import ModelRepository
from cnnkit.training.fit import resume_config, train


def test_an_export_made_before_a_resume_is_refused(shapes_npz: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(TrainConfig(data=f"npz:{shapes_npz}", out=run, epochs=1, batch_size=32, lr=3e-3, quiet=True,
                      device="cpu"))
    export_run(ExportConfig(run=run))
    info = json.loads((run / "export" / "export.json").read_text())
    assert info["weights"]["sha256"] == RunDir(run).manifest()["model.safetensors"]["sha256"]
    assert "export/model.onnx" in RunDir(run).manifest()  # the export joins the run's manifest
    assert export_status(run) == "current"
    ModelRepository(threads=1).add_path(run)

    train(resume_config(run, epochs=4))  # val_loss improves from epoch 1 on this data: new best weights
    assert export_status(run) == "stale"
    with pytest.raises(CnnkitError, match=r"stale export: it was made from weights .* re-export with `cnnkit export"):
        ModelRepository(threads=1).add_path(run)
    with pytest.raises(CnnkitError, match="stale export"):
        ModelRepository(threads=1).add_path(run / "export")
    import cnnkit

    with pytest.raises(CnnkitError, match="stale export"):
        cnnkit.load(run / "export")
    export_run(ExportConfig(run=run))
    assert export_status(run) == "current"
    ModelRepository(threads=1).add_path(run)


def test_an_export_made_before_a_new_threshold_is_refused(exported_run: Path, tmp_path: Path) -> None:
    """`evaluate --target-fpr` after `export` changes the run's decision threshold; serving the export would then
    decide differently from `cnnkit predict RUN`, so the export is stale until it is made again."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    assert export_status(run) == "current"
    RunDir(run).write_json("threshold.json", {"positive": "square", "threshold": 0.7, "target_fpr": 0.05})
    assert export_status(run) == "stale"
    with pytest.raises(CnnkitError, match=r"stale export: it carries decision threshold None, but the run's "
                                          r"threshold.json now says 0.7"):
        ModelRepository(threads=1).add_path(run)
    export_run(ExportConfig(run=run))
    assert export_status(run) == "current"
    assert json.loads((run / "export" / "export.json").read_text())["threshold"]["threshold"] == 0.7
