"""`cnnkit phishing scan URL... | @urls.txt`: triage of reported links. Each URL is captured in headless Chromium
(as `capture` does, with its time-outs) and decided on (screenshot, the URL the browser ended on); one row per URL
in OUT/results.jsonl and OUT/results.csv, rewritten after each, with the evidence and the screenshot's path. An
unreachable URL or a malformed one is a row with its error, and the batch goes on."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnkit.apps.phishing.capture import Browser
from cnnkit.apps.phishing.check import Detector
from cnnkit.apps.phishing.config import ScanConfig
from cnnkit.apps.phishing.urls import host_of
from cnnkit.errors import CnnkitError
from cnnkit.files import write_bytes

COLUMNS = ("url", "final_url", "status", "label", "flagged", "brand", "brand_score", "reference", "reason",
           "classifier_score", "screenshot", "error")


@dataclass(frozen=True)
class ScanReport:
    rows: list[dict[str, Any]]
    jsonl: Path
    csv: Path

    @property
    def flagged(self) -> int:
        return sum(1 for r in self.rows if r["flagged"])


def read_targets(items: tuple[str, ...]) -> list[str]:
    """URLs as given, with each @FILE replaced by its lines (blank lines and # comments skipped)."""
    urls = []
    for item in items:
        if item.startswith("@"):
            path = Path(item[1:])
            if not path.is_file():
                raise CnnkitError(f"{path}: no such file of URLs")
            urls += [u.strip() for u in path.read_text().splitlines() if u.strip() and not u.startswith("#")]
        else:
            urls.append(item)
    if not urls:
        raise CnnkitError("no URLs to scan")
    return urls


def scan(config: ScanConfig) -> ScanReport:
    urls = read_targets(config.urls)
    detector = Detector(config.detector)
    rows: list[dict[str, Any]] = []
    report = ScanReport(rows, config.out / "results.jsonl", config.out / "results.csv")
    with tempfile.TemporaryDirectory() as profile:
        browser = Browser(config.browser_options, Path(profile))
        try:
            for index, url in enumerate(urls):
                rows.append(_scan_one(detector, browser, index, url, config.out))
                _write(report)
        finally:
            browser.close()
    return report


def _scan_one(detector: Detector, browser: Browser, index: int, url: str, out: Path) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(url=url, flagged=False)
    try:
        host_of(url)
    except CnnkitError as exc:
        return {**row, "error": str(exc)}
    if "://" not in url:
        url = f"https://{url}"
    record = browser.shoot(index, url, out / "screenshots")
    row.update(final_url=record.get("final_url"), status=record.get("status"), error=record.get("error"))
    if record.get("file") is None:
        return row
    screenshot = Path(record["file"])
    row["screenshot"] = str(screenshot.relative_to(out))
    try:
        verdict = detector.check(screenshot, url=record.get("final_url") or url, title=record.get("title"))
    except CnnkitError as exc:
        return {**row, "error": str(exc)}
    evidence = verdict.to_dict()
    brand = evidence["brand"]
    row.update(label=verdict.label, flagged=verdict.flagged, brand=brand["brand"] or "", reason=verdict.reason,
               brand_score=brand["score"], reference=brand["reference"] or "",
               classifier_score=evidence["classifier"]["score"] if evidence["classifier"] else "",
               evidence=evidence)
    return row


def _write(report: ScanReport) -> None:
    write_bytes(report.jsonl, "".join(json.dumps(r) + "\n" for r in report.rows).encode())
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in report.rows)
    write_bytes(report.csv, buffer.getvalue().encode())


def iter_rows(report: ScanReport) -> Iterator[str]:
    for row in report.rows:
        what = row["label"].upper() if row["label"] else "ERROR"
        yield f"{row['url']}: {what} ({row['reason'] or row['error']})"
