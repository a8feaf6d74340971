"""Hypothesis throws hostile requests at a real server process: every one gets a 2xx or a 4xx with an error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fuzzing import check_response, requests, send
from helpers import free_port, start_server, stop_server
from hypothesis import HealthCheck, given, settings

CASES = 300


@pytest.fixture(scope="module")
def server(exported_run: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    base = tmp_path_factory.mktemp("fuzz") / "shapes"
    shutil.copytree(exported_run / "export", base / "1")
    port = free_port()
    process = start_server(str(base), "--label", "shapes:stable=1", "--max-body-mb", "1", port=port)
    yield port
    assert process.poll() is None, "the server must survive every request"
    stop_server(process)


def test_fuzzed_requests_never_crash_or_5xx(server: int) -> None:
    tried = {"n": 0}

    @settings(max_examples=CASES, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(request=requests)
    def one(request: tuple[str, str, bytes]) -> None:
        method, path, body = request
        tried["n"] += 1
        status, payload = send("127.0.0.1", server, method, f"/v1/models/{path}",
                               body if method == "POST" else None)
        check_response(status, payload)

    one()
    print(f"fuzzed {tried['n']} requests")
    assert tried["n"] >= CASES


@pytest.mark.parametrize("case", ["huge_array", "oversized_body", "bomb"])
def test_large_hostile_inputs(server: int, case: str) -> None:
    import base64
    import io
    import json

    from PIL import Image

    if case == "huge_array":
        body = json.dumps({"instances": [[[[1.0] * 3] * 300] * 300]}).encode()  # 1.9 MB > 1 MB limit
    elif case == "oversized_body":
        body = b"[" * (2 * 1024 * 1024)
    else:
        buffer = io.BytesIO()
        Image.new("L", (12_000, 12_000)).save(buffer, format="PNG")  # 144 Mpx
        body = json.dumps({"instances": [{"b64": base64.b64encode(buffer.getvalue()).decode()}]}).encode()
    status, payload = send("127.0.0.1", server, "POST", "/v1/models/shapes:predict", body)
    check_response(status, payload)
    assert status in (400, 413)
