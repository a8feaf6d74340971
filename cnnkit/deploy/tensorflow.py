"""`cnnkit export --format saved_model | tflite`: the exported ONNX model converted for TensorFlow Serving and LiteRT.

onnx2tf converts the ONNX graph (already checked against PyTorch) to a TensorFlow SavedModel; the SavedModel is
re-signed so that its `serving_default` signature has cnnkit's REST names (`images` float32 [N, H, W, 3] 0-255 in,
`probabilities` out), laid out as TensorFlow Serving loads it (`saved_model/VERSION/saved_model.pb`), and the TFLite
(LiteRT) model is converted from that SavedModel. Each file is checked against the PyTorch model on random and real
images and kept only within the tolerance. TensorFlow is an optional extra: `pip install 'cnnkit[tf]'`.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit import artifacts as names
from cnnkit.artifacts import INPUT_NAME, OUTPUT_NAME
from cnnkit.errors import CnnkitError
from cnnkit.files import sha256_file, write_bytes

SIGNATURE = "serving_default"
MODULES = ("tensorflow", "onnx2tf", "onnx_graphsurgeon", "sng4onnx", "tf_keras", "psutil")
INSTALL_HINT = "pip install 'cnnkit[tf]'"

Predict = Callable[[np.ndarray], np.ndarray]  # float32 NHWC 0-255 -> probabilities


@dataclass(frozen=True)
class TfExport:
    """One TensorFlow-side file and how far it is from PyTorch."""

    format: str  # saved_model | tflite
    path: Path
    max_abs_diff: float
    images: int  # real images among those compared (besides the random ones)

    def record(self, export: Path) -> dict[str, Any]:
        files = sorted(p for p in self.path.rglob("*") if p.is_file()) if self.path.is_dir() else [self.path]
        return {"path": str(self.path.relative_to(export)), "parity_max_abs_diff": self.max_abs_diff,
                "real_images_checked": self.images,
                "sha256": {str(p.relative_to(export)): sha256_file(p) for p in files}}


def require_tensorflow() -> None:
    """One line saying what to install, instead of an ImportError deep inside a converter."""
    missing = [m for m in MODULES if not _importable(m)]
    if missing:
        raise CnnkitError(f"SavedModel and TFLite export need TensorFlow and onnx2tf ({', '.join(missing)} not "
                          f"installed): {INSTALL_HINT}")


def export_tensorflow(onnx_path: Path, export: Path, *, formats: tuple[str, ...],
                      reference: Callable[[torch.Tensor], torch.Tensor],
                      real_images: np.ndarray, tolerance: float) -> list[TfExport]:
    """Convert EXPORT/model.onnx to `formats` (saved_model, tflite) inside `export`, checking each against
    `reference` (the PyTorch serving model) on random images and `real_images` (NHWC 0-255 at the model's input
    size); nothing is kept from a conversion that misses `tolerance`."""
    require_tensorflow()
    tf = _tensorflow()
    size = _input_size(onnx_path)
    samples = _samples(real_images, size=size)
    with torch.no_grad():
        expected = [reference(torch.from_numpy(x)).numpy() for x in samples]
    results = []
    with tempfile.TemporaryDirectory(dir=export, prefix=".tf-") as tmp:
        signed = Path(tmp) / "signed"
        _convert(onnx_path, Path(tmp) / "converted", signed, size=size)
        if "saved_model" in formats:
            diff = _check(saved_model_predictor(signed), samples, expected, what="SavedModel", tolerance=tolerance)
            target = export / names.SAVED_MODEL_DIR
            _replace_dir(signed, target / names.SAVED_MODEL_VERSION)
            results.append(TfExport("saved_model", target, diff, len(real_images)))
        if "tflite" in formats:
            source = target / names.SAVED_MODEL_VERSION if "saved_model" in formats else signed
            flat = tf.lite.TFLiteConverter.from_saved_model(str(source), signature_keys=[SIGNATURE]).convert()
            diff = _check(tflite_predictor(flat), samples, expected, what="TFLite", tolerance=tolerance)
            write_bytes(export / names.TFLITE_MODEL, flat)
            results.append(TfExport("tflite", export / names.TFLITE_MODEL, diff, len(real_images)))
    return results


def tflite_predictor(model: bytes, *, threads: int | None = None) -> Predict:
    """A TFLite model's serving signature as a function of a batch (the LiteRT interpreter, or TensorFlow's)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # older set-ups: the interpreter that ships inside TensorFlow
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter  # noqa: N806
    runner = Interpreter(model_content=model, num_threads=threads).get_signature_runner(SIGNATURE)
    return lambda x: runner(**{INPUT_NAME: x})[OUTPUT_NAME]


def saved_model_predictor(path: Path) -> Predict:
    tf = _tensorflow()
    loaded = tf.saved_model.load(str(path))  # held by the closure: the signature's variables live in it

    def predict(x: np.ndarray) -> np.ndarray:
        return loaded.signatures[SIGNATURE](**{INPUT_NAME: tf.constant(x)})[OUTPUT_NAME].numpy()

    return predict


def remove_stale(export: Path, *, keep: tuple[str, ...]) -> list[str]:
    """Delete TensorFlow files made from an earlier model that this export does not replace; their paths."""
    gone = []
    if "saved_model" not in keep and (export / names.SAVED_MODEL_DIR).is_dir():
        gone += [str(p.relative_to(export)) for p in (export / names.SAVED_MODEL_DIR).rglob("*") if p.is_file()]
        shutil.rmtree(export / names.SAVED_MODEL_DIR)
    if "tflite" not in keep and (export / names.TFLITE_MODEL).is_file():
        (export / names.TFLITE_MODEL).unlink()
        gone.append(names.TFLITE_MODEL)
    return gone


def _convert(onnx_path: Path, converted: Path, signed: Path, *, size: int) -> None:
    """onnx2tf's SavedModel, then one re-signed with cnnkit's input and output names."""
    import onnx2tf
    import tensorflow as tf

    # onnx2tf prints a report of every op; the export prints its own summary.
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            onnx2tf.convert(input_onnx_file_path=str(onnx_path), output_folder_path=str(converted),
                            keep_shape_absolutely_input_names=[INPUT_NAME],  # already NHWC: no layout change
                            not_use_onnxsim=True, non_verbose=True)
    except Exception as error:  # the converter raises whatever its op handlers raise
        tail = "\n".join(log.getvalue().strip().splitlines()[-5:])
        raise CnnkitError(f"onnx2tf could not convert {onnx_path}: {error}\n{tail}") from error
    loaded = tf.saved_model.load(str(converted))
    inner = loaded.signatures[SIGNATURE]
    (output_key,) = inner.structured_outputs

    class Serving(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name=INPUT_NAME)])
        def serve(self, images: Any) -> dict[str, Any]:
            return {OUTPUT_NAME: inner(**{INPUT_NAME: images})[output_key]}

    module = Serving()
    module.loaded = loaded  # tracked, so that its variables are kept and saved with the new signature
    tf.saved_model.save(module, str(signed), signatures={SIGNATURE: module.serve})


def _samples(real: np.ndarray, *, size: int, seed: int = 0) -> list[np.ndarray]:
    """Batches of 1 and 8 random images, and the real ones, as float32 NHWC 0-255."""
    rng = np.random.default_rng(seed)
    batches = [rng.uniform(0, 255, (n, size, size, 3)).astype(np.float32) for n in (1, 8)]
    return batches + ([real.astype(np.float32)] if len(real) else [])


def _check(predict: Predict, samples: list[np.ndarray], expected: list[np.ndarray], *, what: str,
           tolerance: float) -> float:
    worst = max(float(np.abs(predict(x) - want).max()) for x, want in zip(samples, expected, strict=True))
    if not worst <= tolerance:
        raise CnnkitError(f"{what} output differs from PyTorch by {worst:.3g} (> {tolerance:g}); it is not kept")
    return worst


def _replace_dir(source: Path, target: Path) -> None:
    """Move a finished directory into place; an existing one is swapped out, not merged into."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    shutil.move(str(source), str(target))
    shutil.rmtree(old, ignore_errors=True)


def _tensorflow() -> Any:
    # Quiets most of TensorFlow's C++ messages (not the few it prints before reading the setting); an explicit
    # setting wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    return tf


def _input_size(onnx_path: Path) -> int:
    import onnx

    dims = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return int(dims[1].dim_value)


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
