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
