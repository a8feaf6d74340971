"""`cnnkit phishing scan`: reported URLs captured in headless Chromium and decided on, against a local HTTP server
that serves a brand's real login page (from the brand's own address) and a clone of it (from another)."""

from __future__ import annotations

import csv
import http.server
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import free_port
from PIL import Image
from test_cli import cnnkit

pytestmark = pytest.mark.skipif(
    not (Path("/usr/bin/chromium").exists() and Path("/usr/bin/chromedriver").exists() and shutil.which("tesseract")),
    reason="needs Debian's chromium, chromium-driver and tesseract-ocr (installed by .ci/run)")

LOGIN = """<html><head><title>Quillbank - Sign in</title></head>
<body style="margin:0;font-family:sans-serif;background:#f6f7f9">
<div style="background:#007a5e;height:90px;display:flex;align-items:center">
  <img src="logo.png" width="200" height="60" style="margin-left:40px">
  <span style="color:white;font-size:40px;margin-left:20px">Quillbank</span></div>
<div style="width:420px;margin:60px auto;background:white;padding:30px;border:1px solid #ddd">
  <h2>Sign in to Quillbank</h2><p>Email address</p><input style="width:100%"><p>Password</p>
  <input type="password" style="width:100%"><button style="margin-top:20px">Continue</button></div>
</body></html>"""


def serve(folder: Path, address: str) -> http.server.ThreadingHTTPServer:
    handler = lambda *a: _Quiet(*a, directory=str(folder))  # noqa: E731
    server = http.server.ThreadingHTTPServer((address, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_scan_flags_the_clone_clears_the_real_page_and_reports_unreachable_urls(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "login.html").write_text(LOGIN)
    rng = np.random.default_rng(7)  # a logo with texture, as real logos have
    Image.fromarray(rng.integers(0, 255, (60, 200, 3), dtype=np.uint8).repeat(1, axis=0)).save(site / "logo.png")
    real, clone = serve(site, "127.0.0.1"), serve(site, "127.0.0.2")  # two hosts on the loopback range
    real_url = f"http://127.0.0.1:{real.server_address[1]}/login.html"
    clone_url = f"http://127.0.0.2:{clone.server_address[1]}/login.html"
    try:
        (tmp_path / "urls.txt").write_text(real_url + "\n")
        cnnkit("capture", tmp_path / "urls.txt", "--out", tmp_path / "ref", "--width", "1024", "--height", "768")
        reference = next((tmp_path / "ref").glob("*.png"))
        cnnkit("phishing", "brands", "add", "Quillbank", "--domains", "127.0.0.1", "--reference", reference,
               "--gallery", tmp_path / "brands.json")
        (tmp_path / "reported.txt").write_text(f"# reported today\n{clone_url}\n")
        result = cnnkit("phishing", "scan", real_url, f"@{tmp_path / 'reported.txt'}",
                        f"http://127.0.0.1:{free_port()}/gone", "not a url", "--gallery", tmp_path / "brands.json",
                        "--out", tmp_path / "scan", "--width", "1024", "--height", "768", "--timeout", "10")
    finally:
        real.shutdown()
        clone.shutdown()
    assert "4 URLs, 1 flagged" in result.stdout
    rows = [json.loads(line) for line in (tmp_path / "scan" / "results.jsonl").read_text().splitlines()]
    own, copy, gone, malformed = rows
    assert (own["label"], own["flagged"], own["brand"]) == ("legitimate", False, "Quillbank")
    assert (copy["label"], copy["flagged"], copy["brand"]) == ("phishing", True, "Quillbank")
    assert "served from 127.0.0.2" in copy["reason"] and copy["evidence"]["brand"]["matched_keypoints"] > 0
    assert (tmp_path / "scan" / copy["screenshot"]).is_file()
    assert gone["label"] is None and "no HTTP response" in gone["error"]
    assert malformed["label"] is None and "is not a URL or domain" in malformed["error"]
    with open(tmp_path / "scan" / "results.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["label"] for r in table] == ["legitimate", "phishing", "", ""]
