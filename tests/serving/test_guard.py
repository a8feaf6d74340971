"""Cross-site safety and strict parsing, against a real server: Host and Origin checks, CORS only when asked,
nosniff and a strict CSP, no public docs, ASCII versions and huge integers answered with a 4xx."""

import http.client
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import free_port, start_server, stop_server


@pytest.fixture(scope="module")
def servers(exported_run: Path):  # type: ignore[no-untyped-def]
    plain, cors = free_port(), free_port()
    processes = [start_server("--model", f"shapes={exported_run}", port=plain),
                 start_server("--model", f"shapes={exported_run}", "--cors-origin", "https://app.example", port=cors)]
    yield plain, cors
    for process in processes:
        stop_server(process)


def call(port: int, method: str, path: str, body: bytes = b"", **headers: str) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.putrequest(method, path, skip_host="Host" in headers, skip_accept_encoding=True)
    for name, value in {"Content-Length": str(len(body)), **headers}.items():
        connection.putheader(name, value)
    connection.endheaders(body)
    response = connection.getresponse()
    answer = (response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    connection.close()
    return answer


def classify_body() -> bytes:
    image = np.zeros((32, 32, 3), int).tolist()
    return json.dumps({"examples": [{"image": image}]}).encode()


def test_clients_without_an_origin_work_whatever_their_content_type(servers: tuple[int, int]) -> None:
    port, _ = servers
    for content_type in ("application/json", "text/plain", "application/x-www-form-urlencoded"):
        status, headers, body = call(port, "POST", "/v1/models/shapes:classify", classify_body(),
                                     **{"Content-Type": content_type})
        assert status == 200 and "results" in json.loads(body), content_type
        assert headers["x-content-type-options"] == "nosniff" and "access-control-allow-origin" not in headers


def test_other_origins_and_hosts_are_refused(servers: tuple[int, int]) -> None:
    port, _ = servers
    status, _, body = call(port, "POST", "/v1/models/shapes:classify", classify_body(), Origin="http://evil.example")
    assert status == 403 and "cross-origin request" in json.loads(body)["error"]
    status, _, body = call(port, "POST", "/v1/models/shapes:classify", classify_body(),
                           Origin=f"http://127.0.0.1:{port}")  # the server's own page
    assert status == 200
    status, _, body = call(port, "GET", "/v1/models/shapes", Host=f"rebound.example:{port}")
    assert status == 400 and "--allowed-hosts" in json.loads(body)["error"]
    assert call(port, "GET", "/healthz", Host=f"localhost:{port}")[0] == 200


def test_cors_only_for_the_origins_named(servers: tuple[int, int]) -> None:
    _, port = servers
    status, headers, _ = call(port, "POST", "/v1/models/shapes:classify", classify_body(),
                              Origin="https://app.example", **{"Content-Type": "application/json"})
    assert status == 200 and headers["access-control-allow-origin"] == "https://app.example"
    status, headers, _ = call(port, "OPTIONS", "/v1/models/shapes:classify", Origin="https://app.example",
                              **{"Access-Control-Request-Method": "POST"})
    assert status == 200 and "POST" in headers["access-control-allow-methods"]
    assert call(port, "POST", "/v1/models/shapes:classify", classify_body(), Origin="https://other.example")[0] == 403


def test_the_page_has_a_strict_csp_and_docs_are_off(servers: tuple[int, int]) -> None:
    port, _ = servers
    status, headers, _ = call(port, "GET", "/")
    csp = headers["content-security-policy"]
    assert status == 200 and "default-src 'none'" in csp and "script-src 'sha256-" in csp
    assert "unsafe-inline" not in csp and "connect-src 'self'" in csp
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert call(port, "GET", path)[0] == 404


@pytest.mark.parametrize("version", ["²", "١", "１", "1" * 19])
def test_versions_are_ascii_digits(servers: tuple[int, int], version: str) -> None:
    from urllib.parse import quote

    status, _, body = call(servers[0], "GET", f"/v1/models/shapes/versions/{quote(version)}")
    assert status == 404 and "error" in json.loads(body)


def test_a_huge_integer_is_a_400(servers: tuple[int, int]) -> None:
    body = b'{"instances": [' + b"9" * 5000 + b"]}"
    status, _, answer = call(servers[0], "POST", "/v1/models/shapes:predict", body)
    assert status == 400 and "malformed JSON" in json.loads(answer)["error"]


def raw(port: int, request: bytes) -> tuple[int, str]:
    """Send bytes as they are (http.client would fix them) and read the status and body."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def test_a_second_host_header_and_a_foreign_absolute_target_are_refused(servers: tuple[int, int]) -> None:
    port, _ = servers
    close = b"Connection: close\r\n\r\n"
    status, body = raw(port, b"GET /healthz HTTP/1.1\r\nHost: evil.example\r\nHost: 127.0.0.1\r\n" + close)
    assert status == 400 and "more than one Host header" in body
    status, body = raw(port, b"GET http://evil.example/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + close)
    assert status == 400 and "evil.example" in body
    here = f"127.0.0.1:{port}".encode()
    status, _ = raw(port, b"GET http://" + here + b"/healthz HTTP/1.1\r\nHost: " + here + b"\r\n" + close)
    assert status == 200, "an absolute target naming this server is fine"
