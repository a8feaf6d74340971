"""The web page at /, in a real headless Chromium (Debian's chromium and chromium-driver), against a real server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import CLASSES, draw_shape, free_port, start_server, stop_server
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                                reason="needs Debian's chromium and chromium-driver (installed by .ci/run)")


@pytest.fixture()
def browser(tmp_path: Path):  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_dropping_an_image_shows_top_k_bars(browser, exported_run: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    image = tmp_path / "square.png"
    Image.fromarray(draw_shape("square", size=64, rng=np.random.default_rng(5))).save(image)
    port = free_port()
    process = start_server("--model", f"shapes={exported_run}", port=port)
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"))
        browser.find_element(By.ID, "file").send_keys(str(image))
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#results .result")))
        rows = browser.find_elements(By.CSS_SELECTOR, "#results .result")
        labels = [row.find_element(By.CLASS_NAME, "label").text for row in rows]
        scores = [float(row.find_element(By.CLASS_NAME, "score").text.rstrip("%")) for row in rows]
        assert sorted(labels) == sorted(CLASSES)
        assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 100) < 0.5
        assert browser.find_element(By.ID, "error").text == ""
        widths = [row.find_element(By.CLASS_NAME, "bar").size["width"] for row in rows]
        assert widths[0] >= widths[-1] > 0
    finally:
        stop_server(process)


@pytest.mark.skipif(__import__("shutil").which("tesseract") is None, reason="needs Debian's tesseract-ocr")
def test_a_page_url_gets_the_phishing_verdict(browser, exported_run: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import json

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from cnnkit.apps.phishing.config import DemoConfig
    from cnnkit.apps.phishing.demo import make_demo_screenshots
    from cnnkit.apps.phishing.gallery import Gallery

    shots = make_demo_screenshots(DemoConfig(out=tmp_path / "shots", count=2, width=1024, height=640, seed=4))
    entry = json.loads((shots / "manifest.json").read_text())["entries"][0]
    Gallery.open(tmp_path / "brands.json", create=True).add(entry["brand"], domains=[f"{entry['brand'].lower()}.com"],
                                                            references=[shots / entry["file"]])
    port = free_port()
    process = start_server("--model", f"shapes={exported_run}", "--brands", str(tmp_path / "brands.json"), port=port)
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"))
        browser.find_element(By.ID, "url").send_keys("https://login-secure.example.top/")
        browser.find_element(By.ID, "file").send_keys(str(shots / entry["file"]))
        wait.until(lambda d: d.find_element(By.ID, "verdict").text)
        verdict = browser.find_element(By.ID, "verdict").text
        assert verdict.startswith("PHISHING: shows " + entry["brand"]) and "login-secure.example.top" in verdict
    finally:
        stop_server(process)
