"""The phishing application's settings, each option declared once (see cnnkit.options), like the core's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cnnkit.apps.phishing.identify import BRAND_THRESHOLD
from cnnkit.errors import CnnkitError
from cnnkit.options import check, option

GALLERY_HELP = "the brand gallery file (its reference images live in <stem>-references/ beside it)"


@dataclass(frozen=True)
class DemoConfig:
    out: Path = option(help="output folder")
    count: int = option(200, low=2, help="screenshots in all, half of them phishing")
    width: int = option(1280, low=64, help="pixels")
    height: int = option(800, low=64, help="pixels")
    seed: int = option(0, low=0, help="random seed")

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class BrowserConfig:
    """Headless Chromium through ChromeDriver, as `capture` and `phishing scan` drive it."""

    width: int = option(1280, low=64, help="viewport width, pixels")
    height: int = option(800, low=64, help="viewport height, pixels")
    timeout_s: float = option(20.0, flag="timeout", low=0.1, help="seconds per page load")
    full_page: bool = option(False, help="the whole page, not just the viewport")
    browser: Path = option(Path("/usr/bin/chromium"), help="Chromium binary")
    driver: Path = option(Path("/usr/bin/chromedriver"), help="ChromeDriver binary")

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class CaptureConfig:
    urls: Path = option(cli="positional", help="a text file: one URL per line; blank lines and # comments are "
                        "skipped")
    out: Path = option(help="output folder")
    label: str | None = option(None, help="save under OUT/LABEL/ (e.g. phishing), making OUT a folder data set")
    browser_options: BrowserConfig = option(factory=BrowserConfig, cli=False, help="the browser")

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class BrandAddConfig:
    name: str = option(cli="positional", help="the brand's name, as pages show it (e.g. 'Bank of America')")
    domains: str = option(help="its domains, comma-separated (subdomains count as the brand's)")
    reference: tuple[Path, ...] = option((), help="screenshots of its real pages (login, home, ...): what its "
                                         "clones copy")
    keywords: str | None = option(None, help="words that name it on a page, comma-separated (default: its name, "
                                  "and its domains' registered names)")
    gallery: Path = option(Path("brands.json"), help=GALLERY_HELP)

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class BrandImportConfig:
    folder: Path = option(cli="positional", help="a folder of BRAND/ folders, each with reference screenshots and "
                          "a domains.txt (and an optional name.txt)")
    gallery: Path = option(Path("brands.json"), help=GALLERY_HELP)

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class DetectorConfig:
    """What decides: the gallery, the brand threshold and the optional classifier run."""

    gallery: Path = option(Path("brands.json"), help=GALLERY_HELP)
    brand_threshold: float = option(BRAND_THRESHOLD, low=0.0, help="brand score a page needs to show a brand "
                                    "(lower: more clones caught, more pages of other sites taken for a brand; docs)")
    run: Path | None = option(None, help="a phishing classifier run (or export): its score is reported as a "
                              "separate signal, and flags pages without a protected brand only above the run's "
                              "low-FPR threshold (cnnkit evaluate RUN --target-fpr 0.01)")

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class CheckConfig:
    images: tuple[Path, ...] = option((), cli="positional", help="screenshots")
    url: str | None = option(None, help="the URL (or domain) the pages were served from")
    manifest: Path | None = option(None, help="cnnkit capture's manifest.json: each screenshot's URL")
    detector: DetectorConfig = option(factory=DetectorConfig, cli=False, help="the detector")

    def __post_init__(self) -> None:
        check(self)
        if self.url is not None and self.manifest is not None:
            raise CnnkitError("give --url or --manifest, not both")


@dataclass(frozen=True)
class ScanConfig:
    urls: tuple[str, ...] = option((), cli="positional", help="URLs to triage, or @FILE for a file of them (one a "
                                   "line)")
    out: Path = option(Path("scan"), help="folder for the screenshots and the results (results.jsonl, "
                       "results.csv)")
    detector: DetectorConfig = option(factory=DetectorConfig, cli=False, help="the detector")
    browser_options: BrowserConfig = option(factory=BrowserConfig, cli=False, help="the browser")

    def __post_init__(self) -> None:
        check(self)
