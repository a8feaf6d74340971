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


def test_classify_answers_carry_the_verdict_on_the_page_and_its_url(exported_run: Path, tmp_path: Path) -> None:
    from cnnkit.apps.phishing.config import DemoConfig
    from cnnkit.apps.phishing.demo import make_demo_screenshots
    from cnnkit.apps.phishing.gallery import Gallery

    shots = make_demo_screenshots(DemoConfig(out=tmp_path / "shots", count=6, width=1024, height=640, seed=4))
    legit = [e for e in json.loads((shots / "manifest.json").read_text())["entries"] if e["label"] == "legitimate"]
    entry = legit[0]
    brand = entry["brand"]
    Gallery.open(tmp_path / "brands.json", create=True).add(brand, domains=[f"{brand.lower()}.com"],
                                                            references=[shots / entry["file"]])
    image = {"b64": base64.b64encode((shots / entry["file"]).read_bytes()).decode()}
    port = free_port()
    server = start_server("--model", f"shapes={exported_run}", "--brands", str(tmp_path / "brands.json"), port=port)
    try:
        status, answer = classify(port, [{"image": image, "url": f"https://{brand.lower()}-secure-login.top/x"},
                                         {"image": image, "domain": f"www.{brand.lower()}.com"}, {"image": image}])
        bad_status, bad = classify(port, [{"image": image, "url": "not a url"}])
        no_image_status, no_image = classify(port, [{"image": {"b64": ""}, "url": "https://a.example.com/"}])
    finally:
        stop_server(server)
    assert status == 200 and len(answer["results"]) == 3
    lookalike, own, none = answer["phishing"]
    assert (lookalike["label"], lookalike["brand"]["brand"]) == ("phishing", brand)
    assert f"served from {brand.lower()}-secure-login.top" in lookalike["reason"]
    assert lookalike["brand"]["reference"] and lookalike["brand"]["matched_keypoints"] > 0
    assert (own["label"], own["flagged"]) == ("legitimate", False)
    assert none is None
    assert bad_status == 400 and "is not a URL or domain" in bad["error"]
    assert no_image_status == 400
