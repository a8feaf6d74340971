"""The detector: (screenshot, URL) -> a verdict with its evidence, the same for the CLI (`cnnkit phishing check`,
`scan`), the Python API and the server's :classify.

    from cnnkit.apps.phishing import Detector
    detector = Detector(gallery="brands.json", run="runs/phish")   # run: optional
    verdict = detector.check("page.png", url="https://paypal-account-verify.top/login")
    verdict.label, verdict.reason, verdict.to_dict()
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cnnkit.apps.phishing.config import CheckConfig, DetectorConfig
from cnnkit.apps.phishing.decision import Signal, Verdict, decide
from cnnkit.apps.phishing.gallery import Gallery
from cnnkit.apps.phishing.identify import BrandIdentifier
from cnnkit.apps.phishing.urls import host_of
from cnnkit.errors import CnnkitError
from cnnkit.files import read_json


class Detector:
    """A gallery indexed once, and optionally a classifier run, ready to check pages."""

    def __init__(self, config: DetectorConfig | None = None, **options: Any) -> None:
        """`Detector(DetectorConfig(...))` or `Detector(gallery=..., run=..., brand_threshold=...)`."""
        config = config or DetectorConfig(**{k: Path(v) if k in ("gallery", "run") and v is not None else v
                                             for k, v in options.items()})
        self.config = config
        self.identifier = BrandIdentifier(Gallery.open(config.gallery), threshold=config.brand_threshold)
        self.classifier = _Classifier(config.run) if config.run is not None else None

    def check(self, image: Any, *, url: str | None = None, title: str | None = None) -> Verdict:
        """The verdict on one screenshot (a path or a PIL image) served from `url` (a URL or a domain; None: not
        known, and a page showing a protected brand then needs it)."""
        host = host_of(url) if url is not None else None  # a malformed URL is refused before any work
        match = self.identifier.identify(image, title=title)
        signal = self.classifier.signal(image) if self.classifier else None
        return decide(match, host=host, signal=signal)


class _Classifier:
    """The pixel classifier's phishing probability, with the run's low-FPR threshold where one is stored."""

    def __init__(self, run: Path) -> None:
        from cnnkit.evaluate.binary import positive_index
        from cnnkit.runtime.exports import stored_threshold
        from cnnkit.runtime.load import load_model

        self.model = load_model(Path(run), device="cpu")
        self.stored = stored_threshold(run)
        self.index = positive_index(self.model.class_names, self.stored["positive"] if self.stored else None)

    def signal(self, image: Any) -> Signal:
        from cnnkit.runtime.inputs import to_batch

        batch, _, _ = to_batch([image], preprocess=self.model.preprocess)
        score = float(self.model.probabilities(batch)[0, self.index])
        if self.stored is None:
            return Signal(score, None)
        return Signal(score, float(self.stored["threshold"]), self.stored.get("target_fpr"))


@dataclass(frozen=True)
class Checked:
    path: Path
    verdict: Verdict


def check_pages(config: CheckConfig) -> list[Checked]:
    """Each screenshot's verdict; URLs from --url or from `cnnkit capture`'s manifest."""
    urls = _manifest_urls(config.manifest) if config.manifest else {}
    detector = Detector(config.detector)
    return [Checked(Path(path), detector.check(path, url=config.url or urls.get(Path(path).resolve())))
            for path in config.images]


def _manifest_urls(manifest: Path) -> dict[Path, str]:
    """File -> the URL it was captured from, from `cnnkit capture`'s manifest."""
    if not Path(manifest).is_file():
        raise CnnkitError(f"{manifest}: no such file")
    entries = read_json(manifest).get("entries", [])
    return {(Path(manifest).parent / e["file"]).resolve(): e["url"]
            for e in entries if e.get("file") and e.get("url") and urlsplit(e["url"]).hostname}
