"""`cnnkit export RUN --quantize int8`: static INT8 quantization of the exported ONNX model with ONNX Runtime's
quantization tools, calibrated on the run's own images, and kept only if it holds the run's accuracy.

QDQ format, per-channel INT8 weights and UINT8 activations (the pairing ONNX Runtime's x86 kernels run fastest,
with VNNI/AMX where the CPU has them). Convolutions, matrix products and the ops between them (ReLU/ReLU6, residual
adds, max pooling) are quantized, so that a network runs in INT8 from its first convolution to its classifier; left
to float, each activation would cost a dequantize-requantize pair and the INT8 model would run no faster than fp32.
The graph's normalisation and softmax stay float, so inputs and outputs are unchanged (float32 images 0-255 in,
probabilities out) and a client cannot tell the variants apart. Calibration images come from the run's training and
validation splits, chosen with a fixed seed; both models are then scored on the run's test split.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit import artifacts as names
from cnnkit.artifacts import INPUT_NAME, OUTPUT_NAME
from cnnkit.data.datasets import ArrayData
from cnnkit.data.preprocess import Preprocess
from cnnkit.deploy.samples import RunImages
from cnnkit.errors import CnnkitError
from cnnkit.files import sha256_file, write_bytes
from cnnkit.runtime.exports import stored_threshold
from cnnkit.runtime.model import TorchModel

# Residual adds stay in float between their dequantized inputs and the next quantization: quantized, each add
# rounds the residual stream once more at a per-tensor scale set by its widest channel, and that rounding moved
# more labels than anything else in EfficientNet-Lite0 (README: Export formats and INT8).
QUANTIZED_OPS = ["Conv", "Gemm", "MatMul", "Relu", "Clip", "MaxPool", "GlobalAveragePool"]
CALIBRATION_BATCH = 16
EVAL_BATCH = 64
SPEED_BATCH = 32


@dataclass(frozen=True)
class QuantizeReport:
    """INT8 against fp32 on the run's test split: top-1 of each (fractions), the drop in points, the share of
    images where both give the same label, and for binary runs with a threshold, the TPR at it. The images/s are
    a second's timing of each at batch 32 on the exporting machine: whether INT8 pays off there, not a benchmark."""

    images: int
    calibration_images: int
    top1_fp32: float
    top1_int8: float
    drop_points: float
    agreement: float
    tpr_fp32: float | None
    tpr_int8: float | None
    size_fp32_bytes: int
    size_int8_bytes: int
    images_per_s_fp32: float
    images_per_s_int8: float

    def table(self) -> str:
        rows = [("top-1", f"{self.top1_fp32:.4f}", f"{self.top1_int8:.4f}"),
                ("model size, MB", f"{self.size_fp32_bytes / 1e6:.2f}", f"{self.size_int8_bytes / 1e6:.2f}")]
        if self.tpr_fp32 is not None:
            rows.append(("TPR at the stored threshold", f"{self.tpr_fp32:.4f}", f"{self.tpr_int8:.4f}"))
        rows.append(("images/s, batch 32, this CPU", f"{self.images_per_s_fp32:.0f}", f"{self.images_per_s_int8:.0f}"))
        lines = [f"{'':<28} {'fp32':>8} {'int8':>8}", *(f"{a:<28} {b:>8} {c:>8}" for a, b, c in rows)]
        lines.append(f"drop {self.drop_points:+.2f} points; same label on {self.agreement:.2%} of {self.images} test "
                     f"images; calibrated on {self.calibration_images}")
        if self.images_per_s_int8 < self.images_per_s_fp32:
            lines.append("INT8 ran slower than fp32 here: serve fp32 on this CPU (small models often gain nothing)")
        return "\n".join(lines)


def quantize_export(classifier: TorchModel, export: Path, *, images: RunImages, calibration: int, max_drop: float,
                    force: bool) -> QuantizeReport:
    """Write EXPORT/model.int8.onnx from EXPORT/model.onnx, calibrated on `images.pool` and scored on
    `images.test`; refuse (and keep nothing) when top-1 drops by more than `max_drop` points, unless `force`."""
    pool, test = images.pool, images.test
    picks = torch.randperm(len(pool), generator=torch.Generator().manual_seed(classifier.config.seed))[:calibration]
    fp32_path = export / names.ONNX_MODEL
    with tempfile.TemporaryDirectory() as tmp:
        int8_bytes = _quantize(fp32_path, pool.subset(picks), Path(tmp), preprocess=classifier.preprocess)
    report = _compare(fp32_path.read_bytes(), int8_bytes, test, preprocess=classifier.preprocess,
                      threshold=stored_threshold(classifier.run.path), class_names=classifier.class_names,
                      calibration=len(picks),
                      sizes=(fp32_path.stat().st_size, len(int8_bytes)))
    if report.drop_points > max_drop and not force:
        raise CnnkitError(f"INT8 model refused: top-1 drops {report.drop_points:.2f} points, more than --max-drop "
                          f"{max_drop:g} (--force keeps it anyway)\n{report.table()}")
    write_bytes(export / names.ONNX_INT8, int8_bytes)
    return report


def int8_record(export: Path, report: QuantizeReport) -> dict[str, Any]:
    """What export.json says of the INT8 variant: its checksum and the report."""
    return {"file": names.ONNX_INT8, "sha256": sha256_file(export / names.ONNX_INT8), "format": "QDQ",
            "weights": "int8 per-channel", "activations": "uint8", "ops": QUANTIZED_OPS, **asdict(report)}


def _quantize(fp32: Path, images: ArrayData, tmp: Path, *, preprocess: Preprocess) -> bytes:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(torch.arange(len(images)).split(CALIBRATION_BATCH))

        def get_next(self) -> dict[str, np.ndarray] | None:
            index = next(self.batches, None)
            return None if index is None else {INPUT_NAME: preprocess.exported_input(images.batch(index))}

    prepared = tmp / "prepared.onnx"
    quant_pre_process(str(fp32), str(prepared))  # shape inference and graph optimisation, as the tools advise
    out = tmp / names.ONNX_INT8
    quantize_static(prepared, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=QUANTIZED_OPS)
    return out.read_bytes()


def _compare(fp32: bytes, int8: bytes, test: ArrayData, *, preprocess: Preprocess,
             threshold: dict[str, Any] | None, class_names: list[str], calibration: int,
             sizes: tuple[int, int]) -> QuantizeReport:
    import onnxruntime as ort

    def probabilities(model: bytes) -> tuple[np.ndarray, float]:
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        probs = np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: preprocess.exported_input(test.batch(i))})[0]
                                for i in torch.arange(len(test)).split(EVAL_BATCH)])
        speed_batch = preprocess.exported_input(test.batch(torch.arange(len(test))[:SPEED_BATCH]))
        return probs, _images_per_s(session, speed_batch)

    labels = test.labels.numpy()
    (p32, speed32), (p8, speed8) = probabilities(fp32), probabilities(int8)
    top32, top8 = p32.argmax(1), p8.argmax(1)
    tpr32 = tpr8 = None
    if threshold and len(class_names) == 2 and threshold.get("positive") in class_names:
        positive = class_names.index(threshold["positive"])
        mask = labels == positive
        if mask.any():
            tpr32 = float((p32[mask, positive] >= threshold["threshold"]).mean())
            tpr8 = float((p8[mask, positive] >= threshold["threshold"]).mean())
    acc32, acc8 = float((top32 == labels).mean()), float((top8 == labels).mean())
    return QuantizeReport(images=len(labels), calibration_images=calibration, top1_fp32=acc32, top1_int8=acc8,
                          drop_points=round(100 * (acc32 - acc8), 4), agreement=float((top32 == top8).mean()),
                          tpr_fp32=tpr32, tpr_int8=tpr8, size_fp32_bytes=sizes[0], size_int8_bytes=sizes[1],
                          images_per_s_fp32=speed32, images_per_s_int8=speed8)


def _images_per_s(session: Any, images: np.ndarray, *, seconds: float = 1.0) -> float:
    session.run([OUTPUT_NAME], {INPUT_NAME: images})  # warm-up: first calls allocate
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or calls < 2:
        session.run([OUTPUT_NAME], {INPUT_NAME: images})
        calls += 1
    return len(images) * calls / elapsed

