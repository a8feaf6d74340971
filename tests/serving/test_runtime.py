import shutil
from pathlib import Path

import numpy as np
import pytest

from cnnkit.errors import CnnkitError
from cnnkit.serving.runtime import ModelRepository


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


def test_lanes_share_the_threads_and_agree_with_the_whole_session(exported_run: Path) -> None:
    repository = ModelRepository(threads=2, lanes=2)
    repository.add_path(exported_run, name="shapes")
    served = repository.get("shapes").resolve()
    assert served.lanes == 2 and served.lane_session is not None
    assert served.lane_session.get_session_options().intra_op_num_threads == 1
    images = np.random.default_rng(0).uniform(0, 255, (4, *served.input_shape)).astype(np.float32)
    assert np.allclose(served.run_lane(images), served.run(images), atol=1e-6)


def test_one_thread_means_one_lane_and_one_session(exported_run: Path) -> None:
    repository = ModelRepository(threads=1, lanes=4)
    repository.add_path(exported_run, name="shapes")
    served = repository.get("shapes").resolve()
    assert served.lanes == 1 and served.lane_session is None
