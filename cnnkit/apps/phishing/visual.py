"""What a page's look says about its brand: local-feature matching of the page against the gallery's reference
screenshots (SIFT keypoints, OpenCV), with geometric verification.

A clone reuses the brand's logo and page furniture pixel for pixel, at whatever scale; SIFT keypoints survive that,
where a whole-page embedding mostly sees "a login form" (bench/phishing_real.py). Three rules keep other sites' pages
from matching:
- a keypoint of the page counts for brand B only when its nearest reference keypoint is B's and clearly nearer than
  the nearest of any other brand (Lowe's ratio test, taken across brands);
- reference keypoints that also occur in another brand's references (text in common fonts, form corners, the padlock
  icon) are dropped from the index: they say "a web page", not which one;
- a brand's matches count only as many as agree on one move-scale-rotate of the page onto one reference (RANSAC),
  at a scale between 1/3 and 3.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

WIDTH = 1024  # pixels: pages are brought to this width before keypoints are found (references and pages alike)
MAX_HEIGHT = 1536  # pixels kept from the top at that width: the first screens, where logos and forms are
FEATURES = 2000  # keypoints per page, strongest first
RATIO = 0.8  # Lowe's ratio, against the nearest keypoint of another brand
GENERIC_DISTANCE = 100.0  # SIFT descriptor distance under which two brands' keypoints are the same generic thing
NEIGHBOURS = 24  # nearest reference keypoints looked at per page keypoint
RANSAC_PX = 8.0  # reprojection error allowed for an inlier, pixels at WIDTH
MIN_MATCHES = 4
SCALES = (1 / 3, 3.0)
# What a cached keypoint file was found with; a cache written under other settings is stale and found again.
SETTINGS = np.array([WIDTH, MAX_HEIGHT, FEATURES], np.int64)


@dataclass(frozen=True)
class Keypoints:
    xy: np.ndarray  # (n, 2) float32, pixels at WIDTH
    descriptors: np.ndarray  # (n, 128) uint8


@dataclass(frozen=True)
class VisualMatch:
    brand: str
    reference: str  # the reference's id (its file name in the gallery)
    inliers: int  # keypoint matches that agree on one geometric transform


def keypoints(image: object) -> Keypoints:
    """SIFT keypoints of a page (a PIL image), brought to WIDTH pixels wide first."""
    import cv2

    gray = np.asarray(image.convert("L"))  # type: ignore[attr-defined]
    scale = WIDTH / gray.shape[1]
    gray = cv2.resize(gray, (WIDTH, max(1, round(gray.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    gray = gray[:MAX_HEIGHT]
    found, descriptors = cv2.SIFT_create(nfeatures=FEATURES).detectAndCompute(gray, None)
    if descriptors is None:
        return Keypoints(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8))
    xy = np.array([k.pt for k in found], np.float32).reshape(-1, 2)
    return Keypoints(xy, np.clip(np.round(descriptors), 0, 255).astype(np.uint8))


class VisualIndex:
    """The gallery's reference keypoints, ready to match pages against."""

    def __init__(self, references: Iterable[tuple[str, str, Keypoints]]) -> None:
        """`references`: (brand, reference id, its keypoints) each."""
        import cv2

        entries = list(references)
        self.references = [(brand, ref) for brand, ref, _ in entries]
        points = [kp for _, _, kp in entries]
        self.brand_names = sorted({brand for brand, _ in self.references})
        brand_ids = np.array([self.brand_names.index(b) for b, _ in self.references], np.int32)
        counts = [len(kp.xy) for kp in points]
        self.owner = np.repeat(np.arange(len(points), dtype=np.int32), counts)
        self.xy = np.concatenate([kp.xy for kp in points]) if points else np.zeros((0, 2), np.float32)
        descriptors = np.concatenate([kp.descriptors for kp in points]).astype(np.float32) if points else None
        self.brand_of_point = brand_ids[self.owner] if points else np.zeros(0, np.int32)
        self.index = None
        if descriptors is not None and len(descriptors) >= NEIGHBOURS:
            self.index = cv2.flann_Index(descriptors, {"algorithm": 1, "trees": 4})  # randomised k-d trees
            self.distinctive = ~(self._nearest_other_brand(descriptors) < GENERIC_DISTANCE)

    def _nearest_other_brand(self, descriptors: np.ndarray) -> np.ndarray:
        """For each keypoint, the distance to the nearest keypoint of another brand (inf if none among NEIGHBOURS)."""
        nearest = np.full(len(descriptors), np.inf)
        for start in range(0, len(descriptors), 50_000):  # bounded memory: 50,000 x NEIGHBOURS at a time
            rows = slice(start, start + 50_000)
            index, distance = self._search(descriptors[rows])
            other = self.brand_of_point[index] != self.brand_of_point[rows, None]
            first = np.where(other.any(axis=1), other.argmax(axis=1), -1)
            found = first >= 0
            nearest[rows][found] = distance[found, first[found]]
        return nearest

    def _search(self, descriptors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        index, squared = self.index.knnSearch(descriptors.astype(np.float32), NEIGHBOURS, params={"checks": 64})
        return index, np.sqrt(np.maximum(squared, 0))

    def match(self, page: Keypoints, *, exclude: frozenset[str] = frozenset()) -> dict[str, VisualMatch]:
        """Per brand, its best-verified reference for this page; brands without one are left out. `exclude` names
        reference ids to leave out (a gallery tested against itself)."""
        import cv2

        if self.index is None or len(page.descriptors) == 0:
            return {}
        index, distance = self._search(page.descriptors)
        usable = self.distinctive[index]
        if exclude:
            left_out = np.array([ref in exclude for _, ref in self.references])
            usable &= ~left_out[self.owner[index]]
        pairs: dict[int, list[tuple[int, int]]] = {}
        for row in range(len(index)):
            columns = np.flatnonzero(usable[row])
            if len(columns) == 0:
                continue
            first = columns[0]
            brand = self.brand_of_point[index[row, first]]
            others = columns[self.brand_of_point[index[row, columns]] != brand]
            second = distance[row, others[0]] if len(others) else distance[row, -1]
            if distance[row, first] < RATIO * second:
                point = int(index[row, first])
                pairs.setdefault(int(self.owner[point]), []).append((row, point))
        best: dict[str, VisualMatch] = {}
        for reference, matched in pairs.items():
            if len(matched) < MIN_MATCHES:
                continue
            source = page.xy[[r for r, _ in matched]]
            target = self.xy[[p for _, p in matched]]
            transform, inliers = cv2.estimateAffinePartial2D(source, target, method=cv2.RANSAC,
                                                             ransacReprojThreshold=RANSAC_PX)
            if transform is None or inliers is None:
                continue
            scale = float(np.sqrt(abs(np.linalg.det(transform[:, :2]))))
            if not SCALES[0] < scale < SCALES[1]:
                continue
            brand, ref = self.references[reference]
            count = int(inliers.sum())
            if brand not in best or count > best[brand].inliers:
                best[brand] = VisualMatch(brand, ref, count)
        return best
