"""Budgets and HTTP limits, against a real server with small limits: what a request may ask of the decoder, and how
long and how many connections may stay open. Each test checks the answer a client sees and that the server still
serves afterwards."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import free_port, start_server, stop_server, tiny_chunk_png
from PIL import Image

LIMITS = ("--header-timeout", "1", "--body-timeout", "1", "--max-connections", "40", "--max-request-mpx", "5",
          "--max-headers", "40", "--max-header-kb", "8")


@pytest.fixture(scope="module")
def port(exported_run: Path):  # type: ignore[no-untyped-def]
    port = free_port()
    process = start_server("--model", f"shapes={exported_run}", *LIMITS, port=port)
    yield port
    stop_server(process)


def exchange(port: int, data: bytes, *, wait_s: float = 10.0) -> bytes:
    """Send raw bytes, then read until the server closes the connection; a server that has not closed it after
    wait_s (a hang guard, many times any limit under test) fails the test with a socket time-out."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        sock.sendall(data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
        return reply


def classify(port: int, images: list[bytes]) -> tuple[int, dict[str, str], dict[str, object]]:
    import http.client

    body = json.dumps({"examples": [{"image": {"b64": base64.b64encode(raw).decode()}} for raw in images]})
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", "/v1/models/shapes:classify", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    answer = response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(response.read())
    connection.close()
    return answer


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def still_serves(port: int) -> None:
    status, _, answer = classify(port, [png(Image.new("RGB", (32, 32), (200, 30, 30)))])
    assert status == 200 and answer["results"], answer


def test_a_request_over_its_pixel_budget_is_refused_before_decoding(port: int) -> None:
    small = png(Image.new("1", (2000, 2000), 1))  # 4 Mpx, 2 KB
    status, _, answer = classify(port, [small, small])  # 8 Mpx > --max-request-mpx 5
    assert status == 413 and "--max-request-mpx" in str(answer["error"])  # said from the headers, before decoding
    assert classify(port, [small])[0] == 200
    still_serves(port)


def test_a_connection_that_sends_nothing_gets_a_408_and_is_closed(port: int) -> None:
    reply = exchange(port, b"")
    assert reply.startswith(b"HTTP/1.1 408") and b"--header-timeout" in reply


def test_a_head_sent_a_byte_at_a_time_is_cut_off(port: int) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 150  # 9 s at 20 bytes a second
    sent, reply = 0, b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setblocking(False)
        for byte in head:
            try:
                reply = sock.recv(4096)
                break  # the server answered, or closed (b""), before the head was complete
            except BlockingIOError:
                pass
            except OSError:
                break
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break  # closed by the server while we were still sending
            sent += 1
            time.sleep(0.05)
    assert sent < len(head), "the server waited for the whole head, a byte at a time"
    assert reply.startswith(b"HTTP/1.1 408") or reply == b""


def test_a_body_that_stops_arriving_gets_a_408(port: int) -> None:
    head = (b"POST /v1/models/shapes:classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n")
    reply = exchange(port, head + b'{"examples": ')
    assert reply.startswith(b"HTTP/1.1 408") and b"--body-timeout" in reply
    still_serves(port)


def test_an_endless_chunked_body_to_an_unrouted_path_is_closed(port: int) -> None:
    head = b"POST /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + b"1\r\na\r\n")
        closed = False
        for _ in range(40):  # a chunk every 0.2 s for up to 8 s: the 1 s --body-timeout must close it before
            try:
                sock.sendall(b"1\r\na\r\n")
                sock.settimeout(0.2)
                if sock.recv(65536) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
    assert closed


def test_headers_over_the_size_or_count_limit_are_refused(port: int) -> None:
    big = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    assert exchange(port, big).startswith(b"HTTP/1.1 400")
    many = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(60)) + b"\r\n"
    reply = exchange(port, many)
    assert reply.startswith(b"HTTP/1.1 431") and b"--max-headers" in reply
    still_serves(port)


def test_a_header_that_never_ends_is_cut_off_as_it_arrives(port: int) -> None:
    reply = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
            for _ in range(2000):  # 8 MB, never finished: the server must not wait for its end
                sock.sendall(b"a" * 4096)
            reply = sock.recv(4096)
        except OSError:
            pass  # reset: the server closed with our bytes unread, after its 431
    assert reply.startswith(b"HTTP/1.1 431") or reply == b""  # before the 8 MB were sent, or reset: not waited for
    still_serves(port)


def test_at_the_connection_cap_idle_connections_make_room_for_active_clients(port: int) -> None:
    held = []
    try:
        for _ in range(45):  # over --max-connections 40, none sending a request
            held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            time.sleep(0.01)
        still_serves(port)  # a client that sends its request is served, while the idle ones are still held
        evicted = []
        for sock in held[:8]:  # the longest-waiting were closed to make room
            sock.settimeout(3)
            evicted.append(sock.recv(256))
        assert sum(reply.startswith(b"HTTP/1.1 408") and b"make room" in reply for reply in evicted) >= 5
    finally:
        for sock in held:
            sock.close()


def test_the_decode_budget_answers_429_with_retry_after_before_decoding() -> None:
    from cnnkit.data.images import peek
    from cnnkit.serving.decoding import Decoder
    from cnnkit.serving.tfserving import Encoded, RequestError

    raw = png(Image.new("L", (1000, 1000), 7))
    decoder = Decoder(threads=1, budget_bytes=10 * 2**20, max_request_pixels=10**8, timeout_s=10)
    item = Encoded(0, raw, peek(raw))
    decoder.budget.reserve(9 * 2**20)  # another request is decoding
    with pytest.raises(RequestError) as refused:
        asyncio.run(decoder.decode([item], served=None))  # type: ignore[arg-type]
    assert refused.value.status == 429 and refused.value.retry_after_s == 1
    assert decoder.budget.used == 9 * 2**20  # nothing taken by the refused request
    decoder.close()


def test_large_images_are_reduced_while_decoding_and_agree_with_a_direct_resize() -> None:
    from cnnkit.data.images import open_rgb
    from cnnkit.data.preprocess import Preprocess

    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (450, 400, 3), dtype=np.uint8)).resize((4500, 4000), Image.NEAREST)
    raw = png(noise.convert("P"))  # 18 Mpx, over data.images.LARGE_PIXELS
    for mode in ("squash", "center-crop", "top-crop"):
        preprocess = Preprocess(input_size=64, resize=mode)
        reduced = preprocess.load(raw).astype(int)
        direct = preprocess.resize_image(open_rgb(raw)).astype(int)
        assert reduced.shape == direct.shape == (64, 64, 3)
        assert np.abs(reduced - direct).mean() < 2.0  # levels of 255, on worst-case noise


def test_a_huge_bilevel_image_never_becomes_a_full_rgb_copy(tmp_path: Path) -> None:
    """Peak memory of decoding a 64-Mpx 1-bit PNG for a 32-px model, in a fresh process: the image itself (64 MB as
    Pillow stores 1-bit pixels) and strips, not the 256 MB RGB copy."""
    import subprocess
    import sys

    path = tmp_path / "bilevel.png"
    Image.new("1", (8000, 7999), 1).save(path)
    code = f"""
import resource
from pathlib import Path
from cnnkit.data.preprocess import Preprocess
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = Preprocess(input_size=32, resize="top-crop").load(Path({str(path)!r}).read_bytes())
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(out.shape, (after - before) // 1024)
"""
    shape, grown_mb = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                     check=True).stdout.rsplit(" ", 1)
    assert shape == "(32, 32, 3)" and int(grown_mb) < 150, (shape, grown_mb)


def test_images_that_cost_far_more_than_their_pixels_are_refused_before_decoding(port: int) -> None:
    assert Image.open(io.BytesIO(tiny_chunk_png(5000))).size == (32, 32)  # a valid PNG, only slow to decode
    status, _, answer = classify(port, [tiny_chunk_png(5000)])
    assert status == 400 and "data chunks" in str(answer["error"])
    assert classify(port, [tiny_chunk_png(50)])[0] == 200, "a few small chunks are fine"
    status, _, answer = classify(port, [png(Image.new("1", (1, 200_000), 1))])
    assert status == 400 and "aspect ratio over 100:1" in str(answer["error"])
    still_serves(port)


def test_a_body_denser_in_arrays_than_any_request_is_refused_unparsed(port: int) -> None:
    import http.client

    body = b'{"instances": [[' + b"[]," * 300_000 + b"[]]]}"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", "/v1/models/shapes:predict", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    status, answer = response.status, json.loads(response.read())
    connection.close()
    assert status == 400 and "JSON arrays and objects" in answer["error"]
    nested = json.dumps({"instances": np.zeros((2, 32, 32, 3), int).tolist()})
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", "/v1/models/shapes:predict", body=nested, headers={"Content-Type": "application/json"})
    assert connection.getresponse().status == 200, "nested lists at the model's input size still parse"
    connection.close()
    still_serves(port)
