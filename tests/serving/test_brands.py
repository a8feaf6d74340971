"""Brand checks in :classify answers, with `cnnkit serve --brands GALLERY`."""

import base64
import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import free_port, start_server, stop_server

pytestmark = pytest.mark.skipif(shutil.which("tesseract") is None,
                                reason="needs Debian's tesseract-ocr (installed by .ci/run)")


def classify(port: int, examples: list[dict[str, object]]) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/shapes:classify",
                                     data=json.dumps({"examples": examples}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_classify_answers_carry_the_brand_and_the_reason(exported_run: Path, tmp_path: Path) -> None:
    from cnnkit.apps.phishing.brands import Gallery
    from cnnkit.apps.phishing.demo import make_demo_screenshots
    from cnnkit.config import DemoConfig

    shots = make_demo_screenshots(DemoConfig(out=tmp_path / "shots", count=4, width=1024, height=640, seed=4))
    entry = next(e for e in json.loads((shots / "manifest.json").read_text())["entries"] if e["label"] == "legitimate")
    brand = entry["brand"]
    Gallery.open(tmp_path / "brands.json", create=True).add(brand, domains=[f"{brand.lower()}.com"])
    image = {"b64": base64.b64encode((shots / entry["file"]).read_bytes()).decode()}
    port = free_port()
    server = start_server("--model", f"shapes={exported_run}", "--brands", str(tmp_path / "brands.json"), port=port)
    try:
        status, answer = classify(port, [{"image": image, "domain": f"{brand.lower()}-secure-login.top"},
                                         {"image": image, "domain": f"www.{brand.lower()}.com"}, {"image": image}])
        bad_status, bad = classify(port, [{"image": image, "domain": "not a domain"}])
    finally:
        stop_server(server)
    assert status == 200 and len(answer["results"]) == 3
    lookalike, own, none = answer["brand_checks"]
    assert (lookalike["label"], lookalike["brand"]) == ("phishing", brand)
    assert f"served from {brand.lower()}-secure-login.top" in lookalike["reason"]
    assert (own["label"], own["brand"]) == ("legitimate", brand)
    assert none is None
    assert bad_status == 400 and "not a domain name" in bad["error"]
