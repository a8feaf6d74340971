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


@st.composite
def b64_payloads(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["text", "bytes", "png", "truncated", "wrong_type"]))
    if kind == "text":
        return {"b64": draw(st.text(max_size=40))}
    if kind == "bytes":
        return {"b64": base64.b64encode(draw(st.binary(max_size=200))).decode()}
    if kind == "wrong_type":
        return {"b64": draw(json_values)}
    size = (draw(st.integers(1, 80)), draw(st.integers(1, 80)))
    buffer = io.BytesIO()
    Image.new(draw(st.sampled_from(["RGB", "L", "RGBA", "P", "1"])), size).save(buffer, format="PNG")
    data = buffer.getvalue()
    if kind == "truncated":
        data = data[: draw(st.integers(0, len(data) - 1))]
    return {"b64": base64.b64encode(data).decode()}


instances = st.lists(st.one_of(image_arrays(), b64_payloads(), json_values), max_size=4)
bodies = st.one_of(
    st.fixed_dictionaries({"instances": instances}),
    st.fixed_dictionaries({"inputs": st.one_of(instances, st.fixed_dictionaries({"images": instances}))}),
    st.fixed_dictionaries({"instances": instances, "inputs": instances}),
    st.fixed_dictionaries({"instances": instances, "signature_name": json_values}),
    st.fixed_dictionaries({"examples": st.lists(st.fixed_dictionaries({"image": st.one_of(b64_payloads(),
                                                                                          image_arrays())}),
                                                max_size=3)}),
    st.fixed_dictionaries({"examples": json_values}),
    json_values,
)
paths = st.one_of(
    st.sampled_from([f"{MODEL}:predict", f"{MODEL}:classify", f"{MODEL}/versions/1:predict",
                     f"{MODEL}/labels/stable:classify", f"{MODEL}/versions/99:predict", "nope:predict",
                     f"{MODEL}/versions/-1:predict", f"{MODEL}/versions/99999999999999999999999:predict",
                     f"{MODEL}:regress", f"{MODEL}", f"../{MODEL}:predict", f"{MODEL}/../../etc/passwd:predict"]),
    st.text(max_size=30).map(lambda s: quote(s, safe="/:")),
)
raw_bodies = st.one_of(
    bodies.map(lambda body: json.dumps(body, allow_nan=True).encode()),
    st.binary(max_size=300),
    st.text(max_size=100).map(str.encode),
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
