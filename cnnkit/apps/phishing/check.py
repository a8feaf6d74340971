"""`cnnkit phishing check`: the verdict on screenshots from the brand they show, the domain they were served
from, and (with a run) the classifier's score at the run's threshold."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cnnkit.apps.phishing.brands import Gallery, Verdict, decide, page_text
from cnnkit.config import PhishingCheckConfig
from cnnkit.errors import CnnkitError
from cnnkit.files import read_json

DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Checked:
    path: Path
    domain: str | None
    verdict: Verdict


def check_pages(config: PhishingCheckConfig) -> list[Checked]:
    gallery = Gallery.open(config.gallery)
    domains = _manifest_domains(config.manifest) if config.manifest else {}
    scores, threshold = _classifier_scores(config)
    checked = []
    for index, path in enumerate(config.images):
        domain = config.domain or domains.get(Path(path).resolve())
        brand, _ = gallery.identify(page_text(path), min_mentions=config.min_mentions)
        score = float(scores[index]) if scores is not None else None
        checked.append(Checked(Path(path), domain, decide(brand, domain=domain, score=score, threshold=threshold)))
    return checked


def _classifier_scores(config: PhishingCheckConfig) -> tuple[list[float] | None, float]:
    """The run's phishing probability for each image, and the threshold chosen for it (threshold.json) or 0.5."""
    if config.run is None:
        return None, DEFAULT_THRESHOLD
    from cnnkit.evaluate.binary import positive_index
    from cnnkit.runtime.exports import stored_threshold
    from cnnkit.runtime.inputs import to_batch
    from cnnkit.runtime.load import load_model

    classifier = load_model(Path(config.run), device="cpu")
    stored = stored_threshold(config.run)
    index = positive_index(classifier.class_names, stored["positive"] if stored else None)
    batch, _, _ = to_batch(list(config.images), preprocess=classifier.preprocess)
    probabilities = classifier.probabilities(batch)
    return probabilities[:, index].tolist(), stored["threshold"] if stored else DEFAULT_THRESHOLD


def _manifest_domains(manifest: Path) -> dict[Path, str]:
    """File -> the host it was captured from, from `cnnkit capture`'s manifest."""
    if not Path(manifest).is_file():
        raise CnnkitError(f"{manifest}: no such file")
    entries = read_json(manifest).get("entries", [])
    return {(Path(manifest).parent / e["file"]).resolve(): urlsplit(e["url"]).hostname
            for e in entries if e.get("file") and e.get("url") and urlsplit(e["url"]).hostname}
