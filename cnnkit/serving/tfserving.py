"""The TensorFlow Serving REST protocol: URL grammar, request parsing and response shapes.

Pure functions over parsed JSON: no I/O, so every rule is testable on its own. Bad input raises RequestError with
the HTTP status to answer. Parsing reads encoded images' headers but decodes no pixels: serving.decoding does that,
under a budget, once it knows what the request will cost.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnkit.data.images import ImageError, ImageInfo, peek
from cnnkit.serving.runtime import ServedModel, ServedVersion

SIGNATURE = "serving_default"
URLSAFE_B64 = re.compile(r"[A-Za-z0-9_-]*={0,2}")
URL = re.compile(
    r"^(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>[A-Za-z]+))?$"
)


class RequestError(Exception):
    """A request the server answers with `status` and {"error": message}; `retry_after_s` for 429 and 503."""

    def __init__(self, status: int, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Encoded:
    """An encoded image from a request, its header read, its pixels not yet decoded."""

    index: int
    raw: bytes
    info: ImageInfo


Item = np.ndarray | Encoded  # a request's image: float32 pixels as sent, or an encoded file


@dataclass(frozen=True)
class Target:
    """What a /v1/models/... URL addresses."""

    name: str
    version: int | None
    label: str | None
    metadata: bool
    verb: str | None


def parse_url(path: str) -> Target:
    match = URL.match(path)
    if not match:
        raise RequestError(404, f"malformed model URL: /v1/models/{path}")
    version = match["version"]
    if version is not None and not re.fullmatch(r"[0-9]{1,18}", version):  # ASCII: "²".isdigit() is True
        raise RequestError(404, f"version must be a non-negative integer, got {version!r}")
    return Target(match["name"], int(version) if version else None, match["label"], bool(match["metadata"]),
                  match["verb"])


def resolve(model: ServedModel, target: Target) -> ServedVersion:
    try:
        return model.resolve(version=target.version, label=target.label)
    except KeyError as exc:
        raise RequestError(404, str(exc.args[0])) from None


# status and metadata ----------------------------------------------------------------------------------------------
def version_status(model: ServedModel, target: Target) -> dict[str, Any]:
    """GET /v1/models/NAME[/versions/V | /labels/L]."""
    versions = [resolve(model, target).version] if (target.version is not None or target.label) else sorted(
        model.versions, reverse=True)
    return {"model_version_status": [
        {"version": str(v), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        for v in versions
    ]}


def metadata(served: ServedVersion) -> dict[str, Any]:
    """GET .../metadata: the signature in TensorFlow Serving's GetModelMetadata JSON form."""
    h, w, c = served.input_shape
    n_classes = len(served.class_names)

    def tensor(name: str, dims: list[int]) -> dict[str, Any]:
        return {"dtype": "DT_FLOAT", "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in dims],
                                                      "unknown_rank": False}, "name": f"{name}:0"}

    return {
        "model_spec": {"name": served.name, "signature_name": "", "version": str(served.version)},
        "metadata": {"signature_def": {"signature_def": {SIGNATURE: {
            "inputs": {served.input_name: tensor(served.input_name, [-1, h, w, c])},
            "outputs": {served.output_name: tensor(served.output_name, [-1, n_classes])},
            "method_name": "tensorflow/serving/predict",
        }}, "cnnkit": {"classes": served.class_names, "preprocess": served.preprocess.to_dict(),
                       "input_range": "0-255 RGB; or {\"b64\": PNG/JPEG bytes} of any size",
                       "threshold": served.threshold,
                       # the probabilities are softmax(logits / temperature): 1 unless `cnnkit calibrate` fitted one
                       "temperature": served.temperature}}},
    }


# predict ----------------------------------------------------------------------------------------------------------
def parse_predict(body: Any, served: ServedVersion, *, max_images: int,
                  max_pixels: int = 0) -> tuple[list[Item], bool]:
    """The images of a predict body, and whether it used the columnar ("inputs") form."""
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object")
    _check_signature(body)
    has_rows, has_columns = "instances" in body, "inputs" in body
    if has_rows == has_columns:
        raise RequestError(400, 'exactly one of "instances" (row format) or "inputs" (columnar format) is needed')
    extra = set(body) - {"instances", "inputs", "signature_name"}
    if extra:
        raise RequestError(400, f"unknown request fields: {sorted(extra)}")
    if has_rows:
        items = body["instances"]
        if not isinstance(items, list):
            raise RequestError(400, '"instances" must be a list')
        items = [_unwrap_named(item, served) for item in items]
    else:
        items = _unwrap_named(body["inputs"], served)
        if isinstance(items, dict):  # a single b64 image
            items = [items]
        if not isinstance(items, list):
            raise RequestError(400, '"inputs" must be a list of images or {"%s": [...]}' % served.input_name)
    return _images(items, served, max_images=max_images, max_pixels=max_pixels), has_columns


def parse_classify(body: Any, served: ServedVersion, *, max_images: int, max_pixels: int = 0) -> list[Item]:
    """Images from {"examples": [{"image": {"b64": ...}} | {"image": [[...]]}, ...]}."""
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object")
    _check_signature(body)
    examples = body.get("examples")
    if not isinstance(examples, list):
        raise RequestError(400, '"examples" must be a list of {"image": {"b64": "..."}} objects')
    items = []
    for i, example in enumerate(examples):
        if not isinstance(example, dict):
            raise RequestError(400, f"example {i} must be an object")
        key = "image" if "image" in example else served.input_name
        if key not in example:
            raise RequestError(400, f'example {i} has no "image" feature')
        items.append(example[key])
    return _images(items, served, max_images=max_images, max_pixels=max_pixels)


def classify_results(probs: np.ndarray, served: ServedVersion, *, top_k: int) -> list[list[list[Any]]]:
    """TF Serving's classify results: per example, [label, score] pairs, best first."""
    k = min(top_k, probs.shape[1])
    order = np.argsort(-probs, axis=1)[:, :k]
    return [[[served.class_names[j], float(row[j])] for j in idx] for row, idx in zip(probs, order)]


def threshold_decisions(probs: np.ndarray, served: ServedVersion) -> list[dict[str, Any]] | None:
    """For a binary model with a stored threshold: per example the decided label, the positive score, the threshold.

    An addition to TF Serving's classify answer (clients that do not know it ignore the extra key).
    """
    stored = served.threshold
    if not stored or len(served.class_names) != 2 or stored.get("positive") not in served.class_names:
        return None
    positive = served.class_names.index(stored["positive"])
    negative = served.class_names[1 - positive]
    threshold = float(stored["threshold"])
    return [{"label": stored["positive"] if row[positive] >= threshold else negative,
             "score": float(row[positive]), "threshold": threshold, "flagged": bool(row[positive] >= threshold),
             "target_fpr": stored.get("target_fpr")}
            for row in probs]


def _check_signature(body: dict[str, Any]) -> None:
    signature = body.get("signature_name", SIGNATURE)
    if signature not in (SIGNATURE, ""):
        raise RequestError(400, f"unknown signature_name {signature!r}; this model has {SIGNATURE!r}")


def _unwrap_named(item: Any, served: ServedVersion) -> Any:
    """{"images": X} -> X, the named-input form of a single-input signature."""
    if isinstance(item, dict) and "b64" not in item:
        if set(item) != {served.input_name}:
            raise RequestError(400, f"unknown input names {sorted(item)}; the input is {served.input_name!r}")
        return item[served.input_name]
    return item


def _images(items: list[Any], served: ServedVersion, *, max_images: int, max_pixels: int = 0) -> list[Item]:
    """The request's images; with `max_pixels`, a request whose encoded images' headers add up to more is refused
    as soon as they do (413), before the rest are base64-decoded and read."""
    if not items:
        raise RequestError(400, "no images in the request")
    if len(items) > max_images:
        raise RequestError(400, f"too many images in one request: {len(items)} > {max_images} (--max-images)")
    parsed, pixels = [], 0
    for i, item in enumerate(items):
        parsed.append(_image(item, i, served))
        if isinstance(parsed[-1], Encoded):
            pixels += parsed[-1].info.pixels
            if max_pixels and pixels > max_pixels:
                raise too_many_pixels(pixels, max_pixels, at_least=i + 1 < len(items))
    return parsed


def too_many_pixels(pixels: int, limit: int, *, at_least: bool = False) -> RequestError:
    return RequestError(413, f"the request's images hold {'at least ' if at_least else ''}{pixels / 1e6:.1f} "
                             f"megapixels, over the {limit / 1e6:g}-megapixel limit (--max-request-mpx)")


def _image(item: Any, index: int, served: ServedVersion) -> Item:
    if isinstance(item, dict):
        if set(item) != {"b64"} or not isinstance(item["b64"], str):
            raise RequestError(400, f'image {index}: expected {{"b64": "<base64 PNG/JPEG>"}}')
        return _decode_b64(item["b64"], index)
    if not isinstance(item, list):
        raise RequestError(400, f"image {index}: expected a [H][W][3] array of numbers or a b64 object")
    try:
        array = np.asarray(item, dtype=np.float32)
    except (ValueError, TypeError, OverflowError):
        raise RequestError(400, f"image {index}: not a rectangular array of numbers") from None
    if array.shape != served.input_shape:
        raise RequestError(400, f"image {index}: shape {list(array.shape)}, expected {list(served.input_shape)} "
                                "(HxWxC, RGB); send other sizes as {\"b64\": ...}")
    if not np.isfinite(array).all():
        raise RequestError(400, f"image {index}: NaN or infinite values")
    if array.min() < 0 or array.max() > 255:
        raise RequestError(400, f"image {index}: pixel values must lie in 0..255")
    return array


def _decode_b64(text: str, index: int) -> Encoded:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        # TF Serving also accepts web-safe base64, padded or not; anything else is not base64 at all.
        if not URLSAFE_B64.fullmatch(text):
            raise RequestError(400, f"image {index}: invalid base64") from None
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise RequestError(400, f"image {index}: invalid base64") from None
    try:
        return Encoded(index, raw, peek(raw, name=f"image {index}"))
    except ImageError as exc:
        raise RequestError(400, str(exc)) from None
