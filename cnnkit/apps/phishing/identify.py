"""Which protected brand a page shows: its look (visual.py) and its words (text.py) together, with a score.

score(B) = TEXT_WEIGHT * min(weighted mentions of B, TEXT_CAP) + (verified keypoint matches with B's best
reference) / INLIERS_PER_POINT. The best-scoring brand is the page's brand when its score reaches the threshold;
below it the page shows "no protected brand". The constants and the threshold were chosen on the real pages of
bench/phishing_real.py --part detector (its table gives top-1 and the "no brand" rate at other thresholds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnkit.apps.phishing.gallery import Brand, Gallery
from cnnkit.apps.phishing.text import Mention, PageText, mentions, read_page
from cnnkit.apps.phishing.visual import VisualIndex, VisualMatch, keypoints

TEXT_WEIGHT = 0.5  # score per weighted mention (1.0: one body-sized mention mid-page)
TEXT_CAP = 4.0  # weighted mentions beyond this add nothing: a page that repeats a name is no more that brand
INLIERS_PER_POINT = 10  # verified keypoint matches worth 1.0 of score
BRAND_THRESHOLD = 1.2


@dataclass(frozen=True)
class BrandMatch:
    brand: Brand | None  # None: no protected brand shown (best score below the threshold)
    score: float
    threshold: float
    candidate: str | None  # the best-scoring brand, shown or not
    visual: VisualMatch | None = None
    words: tuple[Mention, ...] = ()
    runner_up: tuple[str, float] | None = None
    text: str = field(default="", repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"brand": self.brand.name if self.brand else None, "score": round(self.score, 3),
                "threshold": self.threshold, "candidate": self.candidate,
                "reference": self.visual.reference if self.visual else None,
                "matched_keypoints": self.visual.inliers if self.visual else 0,
                "words": [m.to_dict() for m in self.words if m.weight > 0],
                "runner_up": {"brand": self.runner_up[0], "score": round(self.runner_up[1], 3)}
                if self.runner_up else None}


class BrandIdentifier:
    """A gallery ready to identify pages: its references' keypoints indexed once."""

    def __init__(self, gallery: Gallery, *, threshold: float = BRAND_THRESHOLD) -> None:
        self.gallery, self.threshold = gallery, threshold
        self.index = VisualIndex(gallery.keypoints())

    def identify(self, image: Any, *, title: str | None = None, page: PageText | None = None,
                 exclude: frozenset[str] = frozenset(), leave_out: frozenset[str] = frozenset()) -> BrandMatch:
        """The brand a screenshot (a PIL image or a path) shows. `page`: its OCR, where already read; `title`: the
        document title a browser reported. A gallery tested against itself leaves out reference ids (`exclude`)
        or whole brands (`leave_out`)."""
        from PIL import Image

        picture = Image.open(image).convert("RGB") if isinstance(image, (str, Path)) else image.convert("RGB")
        if page is None:
            page = read_page(picture, title=title)  # the image decoded once, for OCR and keypoints alike
        visual = self.index.match(keypoints(picture), exclude=exclude)
        return self.rank(page, visual, leave_out=leave_out)

    def rank(self, page: PageText, visual: dict[str, VisualMatch], *,
             leave_out: frozenset[str] = frozenset()) -> BrandMatch:
        scores: dict[str, float] = {}
        words: dict[str, list[Mention]] = {}
        for name, brand in self.gallery.brands.items():
            if name in leave_out:
                continue
            words[name] = mentions(page, brand.keywords)
            text = TEXT_WEIGHT * min(sum(m.weight for m in words[name]), TEXT_CAP)
            seen = visual.get(name)
            scores[name] = text + (seen.inliers / INLIERS_PER_POINT if seen else 0.0)
        ranked = sorted(scores.items(), key=lambda item: -item[1])
        if not ranked or ranked[0][1] <= 0:
            return BrandMatch(None, 0.0, self.threshold, None, text=page.text)
        name, score = ranked[0]
        runner_up = ranked[1] if len(ranked) > 1 and ranked[1][1] > 0 else None
        shown = self.gallery.brands[name] if score >= self.threshold else None
        return BrandMatch(shown, score, self.threshold, name, visual.get(name), tuple(words[name]), runner_up,
                          page.text)
