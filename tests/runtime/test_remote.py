"""Images by URL in predict (the API and the CLI): fetched with a time-out and a size limit, decoded like files, and
a URL that cannot be fetched is a clear error (a row's error in bulk), never a crash or a mangled path."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import draw_shape, free_port
from PIL import Image

import cnnkit
from cnnkit.runtime.remote import fetch


@pytest.fixture()
def site(tmp_path: Path):  # type: ignore[no-untyped-def]
    Image.fromarray(draw_shape("square", size=48, rng=np.random.default_rng(3))).save(tmp_path / "square.png")
    (tmp_path / "notes.png").write_text("not an image")
    handler = lambda *a: _Quiet(*a, directory=str(tmp_path))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    server.shutdown()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_predict_takes_urls_like_files(site: tuple[str, Path], exported_run: Path) -> None:
    base, folder = site
    clf = cnnkit.load(exported_run / "export")
    by_url = clf.predict(f"{base}/square.png")
    assert by_url.label == clf.predict(folder / "square.png").label
    rows = list(clf.predict_files([f"{base}/square.png", f"{base}/missing.png", f"{base}/notes.png"]))
    assert rows[0]["path"] == f"{base}/square.png" and rows[0]["label"] == by_url.label
    assert "HTTP 404" in rows[1]["error"] and "notes.png" in rows[2]["error"]


def test_unreachable_and_oversized_urls_are_clear_errors(site: tuple[str, Path]) -> None:
    base, _ = site
    with pytest.raises(cnnkit.CnnkitError, match="could not fetch it .*is the network reachable"):
        fetch(f"http://127.0.0.1:{free_port()}/cat.png", timeout_s=5)
    with pytest.raises(cnnkit.CnnkitError, match="over the 100-byte limit"):
        fetch(f"{base}/square.png", max_bytes=100)


def test_the_cli_predicts_a_url(site: tuple[str, Path], exported_run: Path) -> None:
    from test_cli import cnnkit as run_cnnkit

    base, _ = site
    answer = json.loads(run_cnnkit("predict", exported_run / "export", f"{base}/square.png", "--json").stdout)
    assert answer[0]["image"] == f"{base}/square.png" and answer[0]["top"]
