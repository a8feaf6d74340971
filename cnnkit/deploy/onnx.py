"""`cnnkit export --format onnx`: a self-contained ONNX model, checked against PyTorch before it is kept.

The exported graph takes what a TensorFlow Serving client sends, images as float32 [N, H, W, 3] with pixel values
0-255 (RGB, already resized to the input size), and returns class probabilities [N, C]: the run's normalisation
and the softmax are inside the graph, so a server needs nothing but the graph and the class names.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnkit import __version__
from cnnkit import artifacts as names
from cnnkit.artifacts import INPUT_NAME, OUTPUT_NAME
from cnnkit.config import ExportConfig
from cnnkit.data.datasets import ArrayData
from cnnkit.data.preprocess import Preprocess
from cnnkit.deploy.samples import run_images
from cnnkit.deploy.tensorflow import export_tensorflow, remove_stale, require_tensorflow
from cnnkit.errors import CnnkitError
from cnnkit.files import sha256_file, write_bytes, write_json
from cnnkit.models.tta import tta_logits
from cnnkit.runtime.fitted import read_fitted, run_threshold
from cnnkit.runtime.model import load_run_model


class ServingModel(nn.Module):
    """images [N, H, W, 3] in 0..255 -> probabilities [N, C]."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...], *, tta: str = "none",
                 temperature: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self.tta = tta  # test-time augmentation, as the run evaluates
        self.temperature = temperature  # the run's fitted softmax temperature (`cnnkit calibrate`)
        # (x - mean) / std as one multiply-add on the NHWC images, before the transpose to NCHW, with constants
        # that span a whole image row ([1, 1, W, 3]): ONNX Runtime broadcasts a row-long constant as fast as a
        # scalar, but a [3] constant (the last axis alone) one element at a time, and a per-channel 1x1
        # convolution (the version before) ran quantized on three channels, slowly: either cost the INT8 model a
        # large share of its time (README: Export formats and INT8). The multiply stays fp32; the add is quantized.
        scale = 1.0 / (torch.tensor(std) * 255.0)
        self.register_buffer("scale", scale)
        self.register_buffer("shift", -torch.tensor(mean) * 255.0 * scale)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        row = (1, 1, images.shape[2], 3)  # static at export: the exporter folds the expansion into constants
        x = images * self.scale.expand(row) + self.shift.expand(row)
        logits = tta_logits(self.model, x.permute(0, 3, 1, 2), self.tta)
        if self.temperature != 1.0:  # left out of the graph when there is none
            logits = logits / self.temperature
        return logits.softmax(dim=-1)


@dataclass(frozen=True)
class ExportResult:
    path: Path
    max_abs_diff: float
    seconds: float
    int8: dict[str, Any] | None = None  # export.json's record of the INT8 variant, if one was made
    int8_table: str = ""  # INT8 against fp32 on the test split, for people
    tf: dict[str, Any] | None = None  # export.json's record of the SavedModel / TFLite files, if made


def export_run(config: ExportConfig) -> ExportResult:
    """Export a run's best weights to ONNX in `config.out` (default RUN/export) and verify parity.

    export.json records the sha256 of the weights it was made from, so that a stale export (the run resumed or
    retrained since) is refused by whatever loads it; inside the run, the export's files join the run's manifest."""
    classifier = load_run_model(config.run, device="cpu")
    pre = classifier.preprocess
    serving = ServingModel(classifier.model.float().to(memory_format=torch.contiguous_format), pre.mean, pre.std,
                           tta=classifier.settings.tta, temperature=classifier.settings.temperature)
    serving.eval()
    out = config.out or Path(config.run) / names.EXPORT_DIR
    if config.tf_formats:
        require_tensorflow()  # before minutes of work, not after
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    onnx_bytes = described(_to_onnx(serving, input_size=pre.input_size, opset=config.opset),
                           classes=classifier.class_names, preprocess=pre)
    max_diff = check_parity(serving, onnx_bytes, input_size=pre.input_size)
    if not max_diff <= config.tolerance:
        raise CnnkitError(f"ONNX output differs from PyTorch by {max_diff:.3g} (> {config.tolerance:g}); "
                          "the export is not kept")
    weights_sha = classifier.run.manifest()[names.WEIGHTS_BEST]["sha256"]
    write_bytes(out / names.ONNX_MODEL, onnx_bytes)
    (out / names.ONNX_INT8).unlink(missing_ok=True)  # made from the model replaced just now
    int8, table = None, ""
    # The run's own images, loaded once, for the INT8 model's calibration and score and the TF files' parity.
    images = (run_images(classifier, scored=config.quantize == "int8")
              if config.quantize == "int8" or config.tf_formats else None)
    if config.quantize == "int8":
        from cnnkit.deploy.quantize import int8_record, quantize_export

        assert images is not None
        report = quantize_export(classifier, out, images=images, calibration=config.calibration,
                                 max_drop=config.max_drop, force=config.force)
        int8, table = int8_record(out, report), report.table()
    tf = None
    if images is not None and config.tf_formats:
        tf = _export_tf(images.test, serving, out, config, preprocess=pre)
    stale = remove_stale(out, keep=config.tf_formats)  # made from an earlier model
    write_json(out / names.CLASSES, classifier.class_names)
    write_json(out / names.PREPROCESS, pre.to_dict())
    write_json(out / names.EXPORT_INFO, {
        "format": "onnx", "opset": config.opset, "source_run": str(Path(config.run).resolve().name),
        "model": classifier.config.model, "input": {"name": INPUT_NAME, "dtype": "float32",
                                                     "shape": [-1, pre.input_size, pre.input_size, 3],
                                                     "range": "0-255, RGB"},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": [-1, len(classifier.class_names)]},
        "parity_max_abs_diff": max_diff, "tolerance": config.tolerance,
        "sha256": {names.ONNX_MODEL: sha256_file(out / names.ONNX_MODEL)},
        "weights": {"file": names.WEIGHTS_BEST, "sha256": weights_sha},
        "threshold": run_threshold(Path(config.run)),
        "temperature": read_fitted(Path(config.run), names.TEMPERATURE),
        **({"int8": int8} if int8 else {}),
        **({"tensorflow": tf} if tf else {}),
    })
    if out.resolve().parent == classifier.run.path.resolve():
        tf_files = [name for record in (tf or {}).values() for name in record["sha256"]]
        for name in (*names.EXPORT_FILES, *([names.ONNX_INT8] if int8 else []), *tf_files):
            classifier.run.record(f"{out.name}/{name}")
        for name in ([] if int8 else [names.ONNX_INT8]) + stale:
            classifier.run.forget(f"{out.name}/{name}")
    return ExportResult(out / names.ONNX_MODEL, max_diff, time.perf_counter() - started, int8, table, tf)


def _export_tf(test: ArrayData, serving: nn.Module, out: Path, config: ExportConfig, *,
               preprocess: Preprocess) -> dict[str, Any]:
    """SavedModel / TFLite from the ONNX file just written, checked on random images and up to 32 test images."""
    real = preprocess.exported_input(test.batch(torch.arange(min(len(test), 32))))
    made = export_tensorflow(out / names.ONNX_MODEL, out, formats=config.tf_formats, reference=serving,
                             real_images=real, tolerance=config.tolerance)
    return {m.format: m.record(out) for m in made}


def _to_onnx(model: nn.Module, *, input_size: int, opset: int) -> bytes:
    example = torch.rand(2, input_size, input_size, 3) * 255
    batch = torch.export.Dim("batch", min=1, max=4096)
    # The exporter reports its progress on stdout; keep the command's output to our own lines.
    with contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(model, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes=({0: batch},), opset_version=opset, dynamo=True,
                                    external_data=False)
    buffer = io.BytesIO()
    program.save(buffer)
    return global_pools(buffer.getvalue())


def described(onnx_bytes: bytes, *, classes: list[str], preprocess: Preprocess) -> bytes:
    """The model carrying what it takes and returns, for whoever gets the .onnx file alone (Netron, another
    runtime, an app): a doc string, and metadata_props (ONNX Runtime: custom_metadata_map) with the class names in
    output order and the preprocessing that is inside the graph."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    size = preprocess.input_size
    model.doc_string = (f"Image classifier exported by cnnkit {__version__}. Input '{INPUT_NAME}': float32 "
                        f"[N, {size}, {size}, 3], RGB, 0-255, resized to {size}x{size} ({preprocess.resize}, "
                        f"{preprocess.interpolation}); normalisation is inside the graph. Output '{OUTPUT_NAME}': "
                        f"float32 [N, {len(classes)}], softmax probabilities in the order of cnnkit.classes.")
    onnx.helper.set_model_props(model, {p.key: p.value for p in model.metadata_props} | {
        "cnnkit.classes": json.dumps(classes), "cnnkit.preprocess": json.dumps(preprocess.to_dict()),
        "cnnkit.version": __version__})
    return model.SerializeToString()


def global_pools(onnx_bytes: bytes) -> bytes:
    """The model with each ReduceMean over the spatial axes of a 4-D tensor, kept 4-D, written as the
    GlobalAveragePool it is (the exporter writes global average pooling as a mean). ONNX Runtime runs
    GlobalAveragePool in the channels-last layout its convolutions use and quantizes it; a ReduceMean there needs the
    last feature map transposed back first (README: Export formats and INT8)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    graph = model.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    constants |= {n.output[0]: numpy_helper.to_array(a.t) for n in graph.node if n.op_type == "Constant"
                  for a in n.attribute if a.name == "value"}
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in (*graph.value_info, *graph.input, *graph.output)
             if v.type.tensor_type.HasField("shape")}
    changed = False
    for node in graph.node:
        if node.op_type != "ReduceMean" or len(node.input) != 2 or ranks.get(node.input[0]) != 4:
            continue
        keepdims = next((a.i for a in node.attribute if a.name == "keepdims"), 1)
        axes = constants.get(node.input[1])
        if keepdims != 1 or axes is None or sorted(int(a) % 4 for a in axes.ravel()) != [2, 3]:
            continue
        node.op_type = "GlobalAveragePool"
        del node.input[1]
        del node.attribute[:]
        changed = True
    if not changed:
        return onnx_bytes
    used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name in used]  # the axes the rewritten means no longer take
    del graph.initializer[:]
    graph.initializer.extend(kept)
    for node in [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in used]:
        graph.node.remove(node)
    return model.SerializeToString()


def check_parity(model: nn.Module, onnx_bytes: bytes, *, input_size: int, batch: int = 8, seed: int = 0) -> float:
    """Largest |ONNX Runtime - PyTorch| difference of the probabilities on random images (two batch sizes)."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for n in (1, batch):
        images = torch.rand(n, input_size, input_size, 3, generator=generator) * 255
        with torch.no_grad():
            expected = model(images).numpy()
        got = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0]
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


