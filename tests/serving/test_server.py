"""A real `cnnkit serve` process on loopback, driven as a TensorFlow Serving user drives one: JSON over HTTP."""

from __future__ import annotations

import base64
import io
import json
import shutil
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import CLASSES, draw_shape, free_port, start_server, stop_server
from PIL import Image

from cnnkit.errors import CnnkitError


@pytest.fixture(scope="module")
def server(exported_run: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    # A TF-Serving-style tree: shapes/1 and shapes/2, with a label on version 1.
    base = tmp_path_factory.mktemp("models") / "shapes"
    for version in ("1", "2"):
        shutil.copytree(exported_run / "export", base / version)
    port = free_port()
    process = start_server(str(base), "--model", f"single={exported_run}", "--label", "shapes:stable=1",
                           "--max-body-mb", "1", port=port)
    yield f"http://127.0.0.1:{port}"
    stop_server(process)


def call(url: str, body: Any = None, *, raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def png_b64(kind: str = "circle", size: int = 45, seed: int = 0) -> str:
    buffer = io.BytesIO()
    Image.fromarray(draw_shape(kind, size=size, rng=np.random.default_rng(seed))).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_model_status_for_model_version_and_label(server: str) -> None:
    status, body = call(f"{server}/v1/models/shapes")
    assert status == 200 and [v["version"] for v in body["model_version_status"]] == ["2", "1"]
    assert body["model_version_status"][0]["state"] == "AVAILABLE"
    assert call(f"{server}/v1/models/shapes/versions/1")[1]["model_version_status"][0]["version"] == "1"
    assert call(f"{server}/v1/models/shapes/labels/stable")[1]["model_version_status"][0]["version"] == "1"
    assert call(f"{server}/v1/models/single")[0] == 200


def test_metadata_describes_the_signature(server: str) -> None:
    status, body = call(f"{server}/v1/models/shapes/metadata")
    assert status == 200 and body["model_spec"] == {"name": "shapes", "signature_name": "", "version": "2"}
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    dims = [int(d["size"]) for d in signature["inputs"]["images"]["tensor_shape"]["dim"]]
    assert dims == [-1, 32, 32, 3]
    assert signature["outputs"]["probabilities"]["dtype"] == "DT_FLOAT"
    assert body["metadata"]["signature_def"]["cnnkit"]["classes"] == CLASSES
    assert body["metadata"]["signature_def"]["cnnkit"]["temperature"] == 1.0


def test_predict_row_and_columnar_forms_with_numbers_and_b64(server: str) -> None:
    pixels = draw_shape("square", size=32, rng=np.random.default_rng(1)).astype(float).tolist()
    status, rows = call(f"{server}/v1/models/shapes:predict",
                        {"signature_name": "serving_default", "instances": [pixels, {"b64": png_b64()}]})
    assert status == 200 and len(rows["predictions"]) == 2
    for probabilities in rows["predictions"]:
        assert len(probabilities) == 3 and abs(sum(probabilities) - 1) < 1e-4
    status, named = call(f"{server}/v1/models/shapes/versions/1:predict", {"instances": [{"images": pixels}]})
    assert status == 200 and np.allclose(named["predictions"][0], rows["predictions"][0], atol=1e-6)
    status, columns = call(f"{server}/v1/models/shapes/labels/stable:predict", {"inputs": {"images": [pixels]}})
    assert status == 200 and np.allclose(columns["outputs"][0], rows["predictions"][0], atol=1e-6)
    status, columns = call(f"{server}/v1/models/shapes:predict", {"inputs": [pixels]})
    assert status == 200 and "outputs" in columns


def test_classify_returns_labels_and_scores_best_first(server: str, exported_run: Path) -> None:
    """The answers are the model's: best first, as `cnnkit.load` of the same export gives them for the same PNGs
    (another decoding and preprocessing path than the server's), and mostly right on images drawn as the training
    images were (32 px)."""
    import cnnkit

    pngs = [png_b64(kind, size=32, seed=100 + i) for i, kind in enumerate(CLASSES * 3)]
    status, body = call(f"{server}/v1/models/shapes:classify", {"examples": [{"image": {"b64": b}} for b in pngs]})
    assert status == 200 and len(body["results"]) == 9
    expected = cnnkit.load(exported_run / "export").predict(
        [Image.open(io.BytesIO(base64.b64decode(b))) for b in pngs], top_k=3)
    correct = 0
    for kind, result, prediction in zip(CLASSES * 3, body["results"], expected):
        labels = [label for label, _ in result]
        scores = [score for _, score in result]
        assert sorted(labels) == sorted(CLASSES) and scores == sorted(scores, reverse=True)
        assert labels == [label for label, _ in prediction.top]
        assert scores == pytest.approx([score for _, score in prediction.top], abs=1e-5)
        correct += labels[0] == kind
    assert correct >= 6  # a model trained ten epochs on these shapes (0.97-0.98 on its test split) knows most


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v1/models/nope:predict", {"instances": []}, 404, "no model named 'nope'"),
        ("/v1/models/shapes/versions/9:predict", {"instances": [[0]]}, 404, "no version 9"),
        ("/v1/models/shapes/labels/canary:predict", {"instances": [[0]]}, 404, "no version label 'canary'"),
        ("/v1/models/shapes:predict", {"instances": [], "inputs": []}, 400, "exactly one of"),
        ("/v1/models/shapes:predict", {}, 400, "exactly one of"),
        ("/v1/models/shapes:predict", [1, 2], 400, "JSON object"),
        ("/v1/models/shapes:predict", {"instances": []}, 400, "no images"),
        ("/v1/models/shapes:predict", {"instances": [[[1, 2]]]}, 400, "shape [1, 2], expected [32, 32, 3]"),
        ("/v1/models/shapes:predict", {"instances": [[[[1, 2, "x"]]]]}, 400, "not a rectangular array"),
        ("/v1/models/shapes:predict", {"instances": [{"b64": "%%%"}]}, 400, "invalid base64"),
        ("/v1/models/shapes:predict", {"instances": [{"b64": base64.b64encode(b"hello").decode()}]}, 400,
         "not a readable image"),
        ("/v1/models/shapes:predict", {"instances": [[[[300.0] * 3] * 32] * 32]}, 400, "0..255"),
        ("/v1/models/shapes:predict", {"instances": [[[[-1.0] * 3] * 32] * 32]}, 400, "0..255"),
        ("/v1/models/shapes:predict", {"signature_name": "other", "instances": [[0]]}, 400, "signature_name"),
        ("/v1/models/shapes:predict", {"instances": [{"pixels": [0]}]}, 400, "unknown input names"),
        ("/v1/models/shapes:regress", {"examples": []}, 400, "unsupported method"),
        ("/v1/models/shapes:classify", {"examples": "x"}, 400, '"examples" must be a list'),
        ("/v1/models/shapes:classify", {"examples": [{"text": "x"}]}, 400, 'no "image" feature'),
    ],
)
def test_bad_requests_get_4xx_with_an_error_message(server: str, path: str, body: Any, status: int,
                                                    message: str) -> None:
    code, answer = call(server + path, body)
    assert code == status and message in answer["error"], answer


def test_malformed_json_nan_and_oversized_bodies(server: str) -> None:
    assert call(f"{server}/v1/models/shapes:predict", raw=b'{"instances": [')[0] == 400
    nan_image = json.dumps({"instances": [[[[0.0] * 3] * 32] * 31 + [[[float("nan")] * 3] * 32]]}).encode()
    code, answer = call(f"{server}/v1/models/shapes:predict", raw=nan_image)
    assert code == 400 and "NaN" in answer["error"]


def test_a_client_expecting_100_continue_is_refused_before_it_sends_the_body(server: str) -> None:
    import http.client
    from urllib.parse import urlsplit

    address = urlsplit(server)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    connection.putrequest("POST", "/v1/models/shapes:predict")
    for header, value in (("Content-Type", "application/json"), ("Content-Length", str(1024 * 1024 + 1)),
                          ("Expect", "100-continue")):
        connection.putheader(header, value)
    connection.endheaders()
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    assert response.status == 413 and "limit" in answer["error"]


def test_a_slow_client_sending_an_oversized_body_still_reads_the_413(server: str) -> None:
    # The server answers after the limit but keeps reading: without that, a client still sending (with
    # "Connection: close", as urllib sends) gets a reset connection instead of the error.
    import socket
    from urllib.parse import urlsplit

    address = urlsplit(server)
    size = 1024 * 1024 + 1
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(f"POST /v1/models/shapes:predict HTTP/1.1\r\nHost: {address.netloc}\r\n"
                     "Content-Type: application/json\r\n"
                     f"Content-Length: {size}\r\nConnection: close\r\n\r\n".encode())
        piece = 64 * 1024
        for start in range(0, size, piece):
            sock.sendall(b" " * min(piece, size - start))
            time.sleep(0.005)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"limit" in payload, reply[:300]


def test_an_undeclared_body_is_cut_off_at_the_limit() -> None:
    import asyncio

    from starlette.requests import Request

    from cnnkit.config import ServeConfig
    from cnnkit.serving.app import Server, _read_body
    from cnnkit.serving.runtime import ModelRepository
    from cnnkit.serving.tfserving import RequestError

    server = Server(ModelRepository(), ServeConfig(max_body_mb=2000 / 2**20))

    def request_of(chunks: list[bytes]) -> Request:
        messages = [{"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks]
        messages.append({"type": "http.request", "body": b"", "more_body": False})

        async def receive() -> dict[str, Any]:
            return messages.pop(0)

        return Request({"type": "http", "method": "POST", "headers": []}, receive)

    assert asyncio.run(_read_body(request_of([b"a" * 1000, b"b" * 1000]), server)) == b"a" * 1000 + b"b" * 1000
    assert server.bodies.used == 2000, "a body read counts against the budget until its caller has parsed it"
    server.bodies.release(2000)
    with pytest.raises(RequestError, match="2000-byte limit") as refused:
        asyncio.run(_read_body(request_of([b"a" * 1000, b"b" * 1000, b"c"]), server))
    assert refused.value.status == 413
    assert server.bodies.used == 0  # a refused body's reservation is given back at once
    arrays = request_of([b"[" * 600, b"[" * 600, b"]" * 1200])
    with pytest.raises(RequestError, match="1,200 JSON arrays and objects in its first 1,200 bytes") as refused:
        asyncio.run(_read_body(arrays, server, max_containers=1000))
    assert refused.value.status == 400 and server.bodies.used == 0
    assert asyncio.run(arrays.receive())["body"] == b"]" * 1200, "the rest of the body is not waited for"


def test_unrouted_paths_and_methods_answer_in_the_same_error_shape(server: str) -> None:
    import http.client
    from urllib.parse import urlsplit

    address = urlsplit(server)
    for method, path in (("POST", "/v1/models/a%0Ab:predict"), ("GET", "/nowhere"), ("DELETE", "/v1/models/shapes"),
                         ("GET", "/v1/models/shapes:predict"), ("POST", "/v1/models/..%2F..%2Fetc%2Fpasswd:predict"),
                         ("POST", "/v1/models/a%0Ab/")):  # no route, trailing slash: a 404, not an empty redirect
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
        connection.request(method, path, body=b"{}" if method == "POST" else None)
        response = connection.getresponse()
        payload = json.loads(response.read())
        connection.close()
        assert 400 <= response.status < 500 and isinstance(payload.get("error"), str), (method, path, payload)


def test_decompression_bomb_is_refused(server: str) -> None:
    buffer = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buffer, format="PNG")  # 400 megapixels in a few kilobytes
    code, answer = call(f"{server}/v1/models/shapes:predict", {"instances": [{"b64": base64.b64encode(
        buffer.getvalue()).decode()}]})
    assert code == 400 and "too large" in answer["error"]


def test_concurrent_requests_are_batched_and_all_answered(server: str) -> None:
    body = {"instances": [{"b64": png_b64(seed=3)}]}
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: call(f"{server}/v1/models/shapes:predict", body), range(64)))
    assert all(code == 200 for code, _ in answers)
    first = answers[0][1]["predictions"][0]
    assert all(np.allclose(a["predictions"][0], first, atol=1e-6) for _, a in answers)
    metrics = urllib.request.urlopen(f"{server}/metrics").read().decode()
    sizes = [line for line in metrics.splitlines() if line.startswith("cnnkit_batch_size_bucket")]
    assert sizes, metrics
    one = next(float(line.split()[-1]) for line in sizes if 'le="1.0"' in line)
    total = next(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("cnnkit_batch_size_count"))
    assert one < total, "some ONNX Runtime calls should have carried more than one image"
    # Everything was answered, so nothing waits and no lane is busy.
    assert 'cnnkit_requests_waiting{model="shapes",version="2"} 0.0' in metrics
    assert 'cnnkit_lanes_busy{model="shapes",version="2"} 0.0' in metrics


def test_health_metrics_and_web_page(server: str) -> None:
    assert call(f"{server}/healthz")[1] == {"status": "ok", "models": {"shapes": [1, 2], "single": [1]}}
    metrics = urllib.request.urlopen(f"{server}/metrics").read().decode()
    assert 'cnnkit_requests_total{code="200",model="shapes",verb="predict"}' in metrics
    assert "cnnkit_request_latency_seconds_bucket" in metrics
    page = urllib.request.urlopen(f"{server}/").read().decode()
    assert "<title>cnnkit</title>" in page and ":classify" in page


def test_a_process_that_cannot_load_its_models_fails_before_serving(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "cnnkit", "serve", str(tmp_path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "neither a run directory" in result.stderr and "Traceback" not in result.stderr


def test_a_taken_port_is_one_line_before_anything_loads(exported_run: Path) -> None:
    import socket

    from cnnkit.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CnnkitError, match=f"cannot serve on 127.0.0.1:{port}: .*another server there"):
            from cnnkit.serving.main import check_port

            check_port("127.0.0.1", port)
        assert main(["serve", str(exported_run), "--port", str(port)]) == 2
