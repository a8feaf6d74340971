"""The verdict on a page from (screenshot, URL), after Phishpedia: a page that shows protected brand B but is served
from a domain that is not B's is phishing; B on B's own domain is legitimate; a page that shows no protected brand
is no protected-brand phish, whatever a classifier makes of its pixels. The classifier's score is reported beside
the verdict as a separate signal, and flags a page ("suspicious") only above a threshold chosen for a low
false-alarm rate (`cnnkit evaluate RUN --target-fpr`), never at a default 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cnnkit.apps.phishing.identify import BrandMatch
from cnnkit.apps.phishing.urls import registrable

PHISHING, LEGITIMATE, SUSPICIOUS, NO_BRAND, NEEDS_URL = ("phishing", "legitimate", "suspicious", "no-brand",
                                                         "needs-url")
FLAGGED = (PHISHING, SUSPICIOUS)


@dataclass(frozen=True)
class Signal:
    """The pixel classifier's phishing probability, and the low-FPR threshold it flags at (None: none chosen)."""

    score: float
    threshold: float | None
    target_fpr: float | None = None

    @property
    def flags(self) -> bool:
        return self.threshold is not None and self.score >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        note = (f"flags at >= {self.threshold:.4g} (chosen for {self.target_fpr:g} FPR)" if self.threshold is not None
                and self.target_fpr is not None else "no low-FPR threshold stored for this run: reported, never "
                "flags (cnnkit evaluate RUN --target-fpr 0.01)" if self.threshold is None else
                f"flags at >= {self.threshold:.4g}")
        return {"score": round(self.score, 4), "threshold": self.threshold, "flags": self.flags, "note": note}


@dataclass(frozen=True)
class Verdict:
    label: str  # phishing | legitimate | suspicious | no-brand | needs-url
    reason: str
    host: str | None
    match: BrandMatch
    signal: Signal | None = None

    @property
    def flagged(self) -> bool:
        return self.label in FLAGGED

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "flagged": self.flagged, "reason": self.reason, "host": self.host,
                "brand": self.match.to_dict(),
                "classifier": self.signal.to_dict() if self.signal else None}


def decide(match: BrandMatch, *, host: str | None, signal: Signal | None = None) -> Verdict:
    brand = match.brand
    if brand is not None:
        evidence = _evidence(match)
        if host is None:
            return Verdict(NEEDS_URL, f"shows {brand.name} ({evidence}); give the page's URL to decide", None, match,
                           signal)
        if brand.owns(host):
            return Verdict(LEGITIMATE, f"shows {brand.name} ({evidence}) and is served from its own domain "
                           f"{registrable(host)}", host, match, signal)
        return Verdict(PHISHING, f"shows {brand.name} ({evidence}) but is served from {host}, not "
                       f"{', '.join(brand.domains)}", host, match, signal)
    if signal is not None and signal.flags:
        return Verdict(SUSPICIOUS, f"no protected brand shown; the pixel classifier's score {signal.score:.3f} >= "
                       f"its low-FPR threshold {signal.threshold:.3f}", host, match, signal)
    return Verdict(NO_BRAND, "no protected brand shown" + ("" if signal is None else
                   f"; classifier score {signal.score:.3f} (a separate signal, below any flagging threshold)"),
                   host, match, signal)


def _evidence(match: BrandMatch) -> str:
    parts = []
    if match.visual is not None:
        parts.append(f"{match.visual.inliers} keypoints match reference {match.visual.reference}")
    words = sorted({f"{m.keyword!r} in {m.where}" for m in match.words if m.weight > 0})
    if words:
        parts.append("words " + ", ".join(words[:3]))
    return f"score {match.score:.2f}: " + "; ".join(parts)
