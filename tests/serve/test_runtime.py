import shutil
from pathlib import Path

import numpy as np
import pytest

from cnnkit.errors import CnnkitError
from cnnkit.serve.runtime import ModelRepository


def test_a_model_file_that_fails_its_checksum_is_refused(exported_run: Path, tmp_path: Path) -> None:
    export = shutil.copytree(exported_run / "export", tmp_path / "export")
    model = export / "model.onnx"
    model.write_bytes(model.read_bytes() + b"\0")
    with pytest.raises(CnnkitError, match="checksum does not match"):
        ModelRepository(threads=1).add_path(export)


def test_a_loaded_model_answers_probabilities(exported_run: Path) -> None:
    repository = ModelRepository(threads=1)
    repository.add_path(exported_run, name="shapes")
    served = repository.get("shapes").resolve()
    probs = served.run(np.full((3, *served.input_shape), 128, np.float32))
    assert probs.shape == (3, len(served.class_names)) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
