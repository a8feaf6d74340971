"""The phishing recipe end to end through the real CLI: capture -> train -> evaluate at a target FPR -> export ->
serve -> classify, plus Grad-CAM, on the generated (synthetic) screenshot set."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import cli_here, free_port, start_server, stop_server
from PIL import Image
from test_cli import cnnkit

CHROMIUM = Path("/usr/bin/chromium")
needs_browser = pytest.mark.skipif(not (CHROMIUM.exists() and Path("/usr/bin/chromedriver").exists()),
                                   reason="needs Debian's chromium and chromium-driver (installed by .ci/run)")


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phish") / "shots"
    result = cnnkit("make-demo-screenshots", "--out", out, "--count", "64", "--width", "640", "--height", "400")
    assert "synthetic" in result.stdout
    return out


def test_demo_set_is_balanced_and_marked_synthetic(screenshots: Path) -> None:
    manifest = json.loads((screenshots / "manifest.json").read_text())
    assert manifest["synthetic"] is True and "no real site" in manifest["note"]
    assert len(list((screenshots / "phishing").glob("*.png"))) == 32
    assert len(list((screenshots / "legitimate").glob("*.png"))) == 32
    assert all(e["telltales"] for e in manifest["entries"] if e["label"] == "phishing")
    with Image.open(screenshots / manifest["entries"][0]["file"]) as image:
        assert image.size == (640, 400)


class _Pages(http.server.SimpleHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if self.path == "/slow":
            time.sleep(6)
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@needs_browser
def test_capture_records_every_url_and_survives_failures(tmp_path: Path, screenshots: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    shot = sorted((screenshots / "phishing").glob("*.png"))[0]
    (site / "shot.png").write_bytes(shot.read_bytes())
    (site / "login.html").write_text('<html><body style="margin:0"><img src="shot.png" width="640"></body></html>')
    handler = lambda *a: _Pages(*a, directory=str(site))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    urls = tmp_path / "urls.txt"
    urls.write_text(f"# a comment\n{base}/login.html\n{base}/missing.html\n{base}/slow\n"
                    f"http://127.0.0.1:{free_port()}/refused\n\n{base}/login.html\n")
    try:
        result = cnnkit("capture", urls, "--out", tmp_path / "cap", "--label", "phishing", "--width", "640",
                        "--height", "400", "--timeout", "3")
    finally:
        server.shutdown()
    assert "Captured 3, failed 2" in result.stdout
    entries = json.loads((tmp_path / "cap" / "manifest.json").read_text())["entries"]
    assert [e["status"] for e in entries] == [200, 404, None, None, 200]
    assert "timed out" in entries[2]["error"] and "no HTTP response" in entries[3]["error"]
    first = tmp_path / "cap" / entries[0]["file"]
    with Image.open(first) as image:
        assert image.size == (640, 400)
    import hashlib

    assert hashlib.sha256(first.read_bytes()).hexdigest() == entries[0]["sha256"]


def test_recipe_train_evaluate_export_serve_explain(screenshots: Path, tmp_path: Path) -> None:
    """Training runs as a real process; the other commands run their main() here (no interpreter start each)."""
    run = tmp_path / "phish-run"
    cnnkit("train", f"folder:{screenshots}", "--model", "efficientnet_lite0", "--pretrained", "--freeze-base",
           "--input-size", "96", "--resize", "top-crop", "--first-screen", "--augment", "screenshot", "--epochs", "2",
           "--batch-size", "16", "--lr", "3e-3", "--val-split", "0.25", "--test-split", "0.25", "--out", run,
           "--device", "cpu")
    preprocess = json.loads((run / "preprocess.json").read_text())
    assert preprocess["resize"] == "top-crop" and preprocess["first_screen"] is True
    refused = cli_here("evaluate", run, "--target-fpr", "0.1")
    assert refused.returncode == 2 and "cannot be estimated from 6 negative (non-phishing) images" in refused.stderr
    assert "it takes at least 30" in refused.stderr and not (run / "threshold.json").exists()
    own = cli_here("evaluate", run, "--target-fpr", "0.1", "--calibration-data", f"folder:{screenshots}")
    assert own.returncode == 2 and "is the run's own data" in own.stderr and not (run / "threshold.json").exists()
    calibration = tmp_path / "calibration"
    cli_here("make-demo-screenshots", "--out", calibration, "--count", "64", "--width", "640", "--height",
                "400", "--seed", "5")
    report = cli_here("evaluate", run, "--target-fpr", "0.1", "--calibration-data",
                         f"folder:{calibration}").stdout
    assert "ROC AUC" in report and "TPR at 1% FPR" in report and "Positive class: phishing" in report
    assert "95% CI" in report
    threshold = json.loads((run / "threshold.json").read_text())
    assert threshold["positive"] == "phishing" and threshold["val_fpr"] <= 0.1
    assert threshold["calibration"] == f"folder:{calibration}" and threshold["negatives"] == 32
    binary = json.loads((run / "metrics.json").read_text())["binary"]
    assert binary["threshold"] == threshold["threshold"] and 0.0 <= binary["roc_auc"] <= 1.0
    assert (run / "roc_pr.png").stat().st_size > 10_000

    assert cli_here("export", run).returncode == 0
    assert json.loads((run / "export" / "export.json").read_text())["threshold"]["positive"] == "phishing"
    assert json.loads((run / "export" / "preprocess.json").read_text())["first_screen"] is True  # served alike
    port = free_port()
    server = start_server("--model", f"phish={run}", port=port)
    try:
        shot = sorted((screenshots / "phishing").glob("*.png"))[0]
        body = json.dumps({"examples": [{"image": {"b64": base64.b64encode(shot.read_bytes()).decode()}}]}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/phish:classify", data=body,
                                         headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
    finally:
        stop_server(server)
    assert {label for label, _ in answer["results"][0]} == {"legitimate", "phishing"}
    decision = answer["decisions"][0]
    assert decision["threshold"] == pytest.approx(threshold["threshold"])
    assert decision["label"] == ("phishing" if decision["score"] >= decision["threshold"] else "legitimate")

    heat = tmp_path / "heat.png"
    text = cli_here("explain", run, shot, "--out", heat).stdout
    assert "heatmap" in text
    with Image.open(heat) as image:
        assert image.size == (288 * 2 + 8, 288)  # the 96-px input, enlarged 3x to at least 256 px
