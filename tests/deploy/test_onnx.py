import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from cnnkit.config import ExportConfig
from cnnkit.deploy.onnx import export_run
from cnnkit.errors import CnnkitError
from cnnkit.runtime.model import load_run_model


def test_export_matches_pytorch_with_a_dynamic_batch(exported_run: Path) -> None:
    export = exported_run / "export"
    info = json.loads((export / "export.json").read_text())
    assert info["parity_max_abs_diff"] <= 1e-4
    assert info["input"]["shape"] == [-1, 32, 32, 3]
    session = ort.InferenceSession(str(export / "model.onnx"))
    classifier = load_run_model(exported_run, device="cpu")
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    expected = classifier.probabilities(images)
    for n in (1, 5):
        hwc = images[:n].permute(0, 2, 3, 1).float().numpy()
        got = session.run(None, {"images": hwc})[0]
        np.testing.assert_allclose(got, expected[:n], atol=1e-5)
    assert json.loads((export / "classes.json").read_text()) == ["circle", "cross", "square"]
    # the .onnx file alone says what it takes and returns (for Netron, other runtimes, apps)
    meta = session.get_modelmeta()
    assert json.loads(meta.custom_metadata_map["cnnkit.classes"]) == ["circle", "cross", "square"]
    assert json.loads(meta.custom_metadata_map["cnnkit.preprocess"]) == json.loads(
        (export / "preprocess.json").read_text())
    assert "float32 [N, 32, 32, 3], RGB, 0-255" in meta.description


def test_export_fails_loudly_when_parity_is_off(exported_run: Path, tmp_path: Path) -> None:
    with pytest.raises(CnnkitError, match="differs from PyTorch"):
        export_run(ExportConfig(run=exported_run, out=tmp_path / "strict", tolerance=1e-30))
    assert not (tmp_path / "strict" / "model.onnx").exists()


def test_flip_and_shift_tta_is_part_of_the_exported_graph(fast_run: Path) -> None:
    export_run(ExportConfig(run=fast_run))
    info = json.loads((fast_run / "export" / "export.json").read_text())
    assert info["parity_max_abs_diff"] <= 1e-4
    classifier = load_run_model(fast_run, device="cpu")
    assert classifier.settings.tta == "flip-shift"
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    session = ort.InferenceSession(str(fast_run / "export" / "model.onnx"))
    got = session.run(None, {"images": images.permute(0, 2, 3, 1).float().numpy()})[0]
    np.testing.assert_allclose(got, classifier.probabilities(images), atol=1e-5)


def test_a_spatial_mean_becomes_a_global_average_pool_and_other_means_stay() -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from cnnkit.deploy.onnx import global_pools

    def graph(axes: list[int], keepdims: int) -> bytes:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 5, 7])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
        mean = helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=keepdims)
        axes_init = numpy_helper.from_array(np.array(axes, dtype=np.int64), "axes")
        model = helper.make_model(helper.make_graph([mean], "g", [x], [y], [axes_init]),
                                  opset_imports=[helper.make_opsetid("", 18)])
        return model.SerializeToString()

    x = np.random.default_rng(0).random((2, 3, 5, 7), dtype=np.float32)
    for axes, keepdims, expected in (([2, 3], 1, "GlobalAveragePool"), ([-1, -2], 1, "GlobalAveragePool"),
                                     ([2, 3], 0, "ReduceMean"), ([1, 2], 1, "ReduceMean")):
        before = graph(axes, keepdims)
        after = global_pools(before)
        model = onnx.load_from_string(after)
        assert [n.op_type for n in model.graph.node] == [expected]
        assert (expected == "ReduceMean") == (len(model.graph.initializer) == 1)  # the unused axes are dropped
        run = [ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
               for m in (before, after)]
        np.testing.assert_allclose(run[0], run[1], rtol=1e-6)


def test_normalisation_is_one_multiply_add_on_row_long_constants(exported_run: Path) -> None:
    # ONNX Runtime broadcasts a constant along the last axis alone ([3]) an element at a time: the INT8 Lite0 spent
    # a fifth of its time there. Row-long constants ([1, 1, W, 3]) run as fast as scalars.
    import onnx

    model = onnx.load(str(exported_run / "export" / "model.onnx"))
    constants = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    constants |= {n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node
                  if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}
    mul = next(n for n in model.graph.node if n.op_type == "Mul" and "images" in n.input)
    add = next(n for n in model.graph.node if n.op_type == "Add" and mul.output[0] in n.input)
    scale = next(constants[i] for i in mul.input if i in constants)
    shift = next(constants[i] for i in add.input if i in constants)
    assert scale.shape == shift.shape == (1, 1, 32, 3)
    preprocess = json.loads((exported_run / "export" / "preprocess.json").read_text())
    np.testing.assert_allclose(scale[0, 0, 0], 1 / (np.array(preprocess["std"]) * 255), rtol=1e-6)
    np.testing.assert_allclose(shift[0, 0, 0], -np.array(preprocess["mean"]) / np.array(preprocess["std"]),
                               rtol=1e-5, atol=1e-6)
