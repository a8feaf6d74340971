"""Hypothesis strategies for hostile requests to the server, shared by the fuzz test and bench/fuzz_server.py."""

from __future__ import annotations

import base64
import http.client
import io
import json
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st
from PIL import Image

MODEL = "shapes"
SIZE = 32

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
pixel = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.integers(-10**6, 10**6),
                  st.sampled_from([0.0, 255.0, 255.5, -0.1]), st.text(max_size=2), st.none(), st.booleans())


@st.composite
def image_arrays(draw: st.DrawFn) -> Any:
    """Nested lists of plausible or wrong rank and shape, with hostile leaves."""
    dims = draw(st.lists(st.sampled_from([0, 1, 2, 3, SIZE, SIZE + 1]), min_size=0, max_size=4))
    leaf = draw(pixel)

    def build(level: int) -> Any:
        if level == len(dims):
            return leaf if draw(st.booleans()) else draw(pixel)
        return [build(level + 1) for _ in range(dims[level])]

    return build(0)


def _weighted(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], *, rare_in: int) -> Any:
    """`rare` once in `rare_in` draws, `common` otherwise."""
    return st.integers(1, rare_in).flatmap(lambda n: rare if n == 1 else common)


@st.composite
def hostile_images(draw: st.DrawFn) -> bytes:
    """Encoded images that are valid but awkward: every format Pillow writes, every common mode, extreme aspect
    ratios, transparency, 16-bit samples, several frames, EXIF rotation; sometimes truncated or with bytes flipped."""
    fmt = draw(st.sampled_from(["PNG", "PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]))
    modes = {"JPEG": ["RGB", "L", "CMYK"], "GIF": ["P", "L"], "BMP": ["RGB", "L", "P", "1"],
             "WEBP": ["RGB", "RGBA"], "TIFF": ["RGB", "L", "RGBA", "1", "I;16"],
             "PNG": ["RGB", "L", "RGBA", "P", "1", "LA", "I;16"]}[fmt]
    mode = draw(st.sampled_from(modes))
    side = st.sampled_from([1, 2, 7, 31, 32, 33, 64, 300, 2000])
    width, height = draw(side), draw(side)
    image = Image.new(mode, (width, height), draw(st.integers(0, 255)) if mode not in ("RGB", "RGBA", "CMYK") else
                      (draw(st.integers(0, 255)),) * len(mode))
    options: dict[str, Any] = {}
    if mode == "P" and draw(st.booleans()):
        options["transparency"] = 0
    if fmt == "GIF" and draw(st.booleans()):
        options.update(save_all=True, append_images=[image.copy() for _ in range(draw(st.integers(1, 20)))])
    if fmt in ("JPEG", "PNG", "WEBP", "TIFF") and draw(st.booleans()):
        exif = Image.Exif()
        exif[0x0112] = draw(st.integers(0, 9))  # orientation, including invalid values
        options["exif"] = exif
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    data = buffer.getvalue()
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "flip":
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
    return data


@st.composite
def b64_payloads(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["image"] * 8 + ["text", "bytes", "wrong_type", "urlsafe"]))
    if kind == "text":
        return {"b64": draw(st.text(max_size=40))}
    if kind == "bytes":
        return {"b64": base64.b64encode(draw(st.binary(max_size=200))).decode()}
    if kind == "wrong_type":
        return {"b64": draw(json_values)}
    data = draw(hostile_images())
    if kind == "urlsafe":
        return {"b64": base64.urlsafe_b64encode(data).decode().rstrip("=")}
    return {"b64": base64.b64encode(data).decode()}


images = _weighted(b64_payloads(), st.one_of(image_arrays(), json_values), rare_in=12)
instances = _weighted(st.lists(images, min_size=1, max_size=4), st.lists(images, max_size=0), rare_in=20)
predict_bodies = st.one_of(
    st.fixed_dictionaries({"instances": instances}),
    st.fixed_dictionaries({"inputs": st.one_of(instances, st.fixed_dictionaries({"images": instances}))}),
)
classify_bodies = st.fixed_dictionaries(
    {"examples": st.lists(st.fixed_dictionaries({"image": images}), min_size=1, max_size=4)})
hostile_bodies = st.one_of(
    st.fixed_dictionaries({"instances": instances, "inputs": instances}),
    st.fixed_dictionaries({"instances": instances, "signature_name": json_values}),
    st.fixed_dictionaries({"examples": json_values}),
    predict_bodies,
    classify_bodies,
    json_values,
)
hostile_paths = st.one_of(
    st.sampled_from([f"{MODEL}/versions/99:predict", "nope:predict", f"{MODEL}/versions/-1:predict",
                     f"{MODEL}/versions/99999999999999999999999:predict", f"{MODEL}:regress", f"{MODEL}",
                     f"../{MODEL}:predict", f"{MODEL}/../../etc/passwd:predict", f"{MODEL}/versions/%C2%B2:predict"]),
    st.text(max_size=30).map(lambda s: quote(s, safe="/:")),
)


def _encoded(bodies: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return bodies.map(lambda body: json.dumps(body, allow_nan=True).encode())


# (method, path under /v1/models/, body). Three in four are well-formed requests to routes that exist, carrying
# hostile images, so that they reach the parser, the budgets and the decoder; the rest are hostile everywhere.
requests = _weighted(
    st.one_of(
        st.tuples(st.just("POST"), st.sampled_from([f"{MODEL}:predict", f"{MODEL}/versions/1:predict"]),
                  _encoded(predict_bodies)),
        st.tuples(st.just("POST"), st.sampled_from([f"{MODEL}:classify", f"{MODEL}/labels/stable:classify"]),
                  _encoded(classify_bodies)),
    ),
    st.tuples(
        st.sampled_from(["POST", "POST", "POST", "GET"]),
        st.one_of(hostile_paths, st.sampled_from([f"{MODEL}:predict", f"{MODEL}:classify"])),
        st.one_of(_encoded(hostile_bodies), st.binary(max_size=300), st.text(max_size=100).map(str.encode)),
    ),
    rare_in=4,
)


def send(host: str, port: int, method: str, path: str, body: bytes | None) -> tuple[int, Any]:
    """One request over a fresh connection; returns (status, parsed JSON body)."""
    connection = http.client.HTTPConnection(host, port, timeout=60)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def check_response(status: int, payload: Any) -> None:
    """Every answer is a 2xx with data or a 4xx with {"error": "..."}; never a 5xx."""
    assert status < 500, (status, payload)
    if status >= 400:
        assert isinstance(payload, dict) and isinstance(payload.get("error"), str) and payload["error"], payload
