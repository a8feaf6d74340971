"""`cnnkit capture`: render URLs in headless Chromium and save a screenshot per URL plus a manifest.

A failure or a time-out is recorded in the manifest and the batch goes on; a crashed browser is restarted.
"""

from __future__ import annotations

import base64
import hashlib
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cnnkit.apps.phishing.config import BrowserConfig, CaptureConfig
from cnnkit.errors import CnnkitError
from cnnkit.files import write_bytes, write_json

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage", "--hide-scrollbars",
                  "--disable-sync", "--mute-audio")
STATUS_SCRIPT = "const e = performance.getEntriesByType('navigation')[0]; return e ? e.responseStatus : null;"


@dataclass(frozen=True)
class CaptureReport:
    manifest: Path
    captured: int
    failed: int


def read_urls(path: Path) -> list[str]:
    if not path.is_file():
        raise CnnkitError(f"{path}: no such file")
    urls = [line.strip() for line in path.read_text().splitlines()]
    urls = [u for u in urls if u and not u.startswith("#")]
    if not urls:
        raise CnnkitError(f"{path}: no URLs")
    return urls


def capture(config: CaptureConfig) -> CaptureReport:
    """Screenshot every URL of `config.urls` into OUT[/LABEL]; write OUT/manifest.json after each one."""
    urls = read_urls(config.urls)
    folder = config.out / config.label if config.label else config.out
    manifest_path = config.out / "manifest.json"
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as profile:
        browser = Browser(config.browser_options, Path(profile))
        try:
            for index, url in enumerate(urls):
                record = browser.shoot(index, url, folder)
                if record.get("file"):
                    record["file"] = str(Path(record["file"]).relative_to(config.out))
                records.append(record)
                options = config.browser_options
                write_json(manifest_path, {"label": config.label, "viewport": [options.width, options.height],
                                           "full_page": options.full_page, "entries": records})
        finally:
            browser.close()
    failed = sum(1 for r in records if r["error"])
    return CaptureReport(manifest_path, len(records) - failed, failed)


class Browser:
    """One headless Chromium through ChromeDriver, restarted if it dies."""

    def __init__(self, config: BrowserConfig, profile: Path) -> None:
        self.config = config
        self.profile = profile
        self.driver: Any = None

    def _start(self) -> Any:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        for path in (self.config.browser, self.config.driver):
            if not path.exists():
                raise CnnkitError(f"{path} not found: install Chromium and ChromeDriver "
                                  "(Debian: apt-get install chromium chromium-driver)")
        options = webdriver.ChromeOptions()
        options.binary_location = str(self.config.browser)
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
                     f"--window-size={self.config.width},{self.config.height}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path=str(self.config.driver)), options=options)
        driver.set_page_load_timeout(self.config.timeout_s)
        driver.set_script_timeout(self.config.timeout_s)
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": self.config.width, "height": self.config.height, "deviceScaleFactor": 1, "mobile": False})
        return driver

    def shoot(self, index: int, url: str, folder: Path) -> dict[str, Any]:
        from selenium.common.exceptions import TimeoutException, WebDriverException

        record: dict[str, Any] = {"url": url, "time": datetime.now(UTC).isoformat(timespec="seconds"),
                                  "status": None, "final_url": None, "title": None, "file": None, "sha256": None,
                                  "error": None}
        try:
            if self.driver is None:
                self.driver = self._start()
            self.driver.get(url)
            record["status"] = self.driver.execute_script(STATUS_SCRIPT) or None
            if record["status"] is None:
                # Chromium drew its own error page: the site never answered (refused, DNS, TLS, ...).
                record["error"] = "no HTTP response (connection refused, DNS or TLS failure)"
                return record
            # Where the page ended up after redirects is where it was served from: that is the URL decided on.
            record.update(final_url=self.driver.current_url, title=self.driver.title or None)
            png = self._png()
            path = folder / f"{index:05d}-{_slug(url)}.png"
            write_bytes(path, png)
            record.update(file=str(path), sha256=hashlib.sha256(png).hexdigest())
        except TimeoutException:
            record["error"] = f"timed out after {self.config.timeout_s:g} s"
            self._restart()
        except WebDriverException as exc:
            message = (exc.msg or type(exc).__name__).splitlines()[0][:300]
            network = re.search(r"net::ERR_[A-Z_]+", message)
            record["error"] = f"no HTTP response ({network[0]})" if network else message
            if not network:
                self._restart()
        return record

    def _png(self) -> bytes:
        if not self.config.full_page:
            return self.driver.get_screenshot_as_png()
        shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png",
                                                                       "captureBeyondViewport": True})
        return base64.b64decode(shot["data"])

    def _restart(self) -> None:
        # After a time-out or crash the page may still be loading or the browser gone: start clean.
        self.close()

    def close(self) -> None:
        if self.driver is not None:
            try:
                self.driver.quit()
            except Exception:  # noqa: BLE001 - a dead browser cannot be quit; nothing left to do
                pass
            self.driver = None


def _slug(url: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", re.sub(r"^[a-z]+://", "", url)).strip("-")[:60] or "page"
