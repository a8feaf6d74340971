"""The gallery of protected brands: each with its domains, the words that name it, and reference screenshots of
its real pages (after Phishpedia's and VisualPhishNet's reference lists).

On disk: a JSON file (default brands.json) and, beside it, a folder `<stem>-references/` with one sub-folder per
brand holding its reference images (named by their SHA-256) and their keypoints (`.sift.npz`, plain arrays, never
pickles). References are written before the JSON that names them, each atomically, so a killed `add` never leaves
the gallery naming a file that is not there; a reference whose checksum no longer matches is refused at load.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.apps.phishing.urls import host_of, label
from cnnkit.errors import CnnkitError
from cnnkit.files import read_json, write_atomic, write_bytes, write_json

FORMAT = 2
MIN_KEYWORD = 3  # characters: shorter labels ("me" of paypal.me) name nothing
# Domain labels that are ordinary words name no one: live.com is Microsoft's, but "live" is on every news site.
COMMON_WORDS = frozenset({"live", "office", "gov", "mail", "login", "online", "secure", "app", "web", "home", "bank",
                          "pay", "shop", "store", "cloud", "account", "att", "my", "news", "service", "support"})
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")
MAX_REFERENCE_PIXELS = 50_000_000  # a reference larger than this is refused: screenshots are a few megapixels


@dataclass(frozen=True)
class Reference:
    file: str  # relative to the gallery's folder
    sha256: str


@dataclass(frozen=True)
class Brand:
    name: str
    domains: tuple[str, ...]
    keywords: tuple[str, ...]
    references: tuple[Reference, ...] = ()

    def owns(self, host: str) -> bool:
        """Whether `host` is one of the brand's domains or a subdomain of one."""
        return any(host == d or host.endswith("." + d) for d in self.domains)

    def to_dict(self) -> dict[str, Any]:
        return {"domains": list(self.domains), "keywords": list(self.keywords),
                "references": [{"file": r.file, "sha256": r.sha256} for r in self.references]}


@dataclass
class Gallery:
    path: Path
    brands: dict[str, Brand] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def references_folder(self) -> Path:
        return self.folder / f"{self.path.stem}-references"

    @classmethod
    def open(cls, path: Path, *, create: bool = False) -> Gallery:
        path = Path(path)
        if not path.is_file():
            if create:
                return cls(path)
            raise CnnkitError(f"{path}: no brand gallery (add a brand with `cnnkit phishing brands add`)")
        entries = read_json(path).get("brands", {})
        brands = {}
        for name, entry in entries.items():
            references = tuple(Reference(r["file"], r["sha256"]) for r in entry.get("references", []))
            brands[name] = Brand(name, tuple(entry["domains"]), tuple(entry["keywords"]), references)
        return cls(path, brands)

    def add(self, name: str, *, domains: list[str], keywords: list[str] | None = None,
            references: list[Path] | None = None) -> Brand:
        """Add a brand or replace its domains and keywords; `references` (screenshots of its real pages) join the
        ones it has. Keywords default to its name and its domains' registered names. Nothing is written unless
        every reference is a readable image."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 _.&'-]{0,63}", name):
            raise CnnkitError(f"brand name {name!r}: letters, digits, spaces and _.&'- only, at most 64")
        hosts = sorted({host_of(d) for d in domains if d.strip()})
        if not hosts:
            raise CnnkitError(f"brand {name!r} needs at least one domain (--domains paypal.com,paypal.me)")
        words = [k.strip().lower() for k in keywords if k.strip()] if keywords else default_keywords(name, hosts)
        words = [w for w in dict.fromkeys(words) if len(w) >= MIN_KEYWORD]
        if not words:
            raise CnnkitError(f"brand {name!r}: no keyword of {MIN_KEYWORD} characters or more to recognise it by")
        images = [(Path(p), _read_image_bytes(Path(p))) for p in references or []]
        old = self.brands.get(name)
        kept = list(old.references) if old else []
        for _, data in images:
            digest = hashlib.sha256(data).hexdigest()
            if any(r.sha256 == digest for r in kept):
                continue
            kept.append(self._store(name, data, digest))
        brand = Brand(name, tuple(hosts), tuple(words), tuple(kept))
        self.brands[name] = brand
        write_json(self.path, {"format": FORMAT, "brands": {b.name: b.to_dict() for b in self.brands.values()}})
        return brand

    def import_folder(self, folder: Path) -> list[Brand]:
        """Add every FOLDER/BRAND/ of reference screenshots; its domains.txt lists the brand's domains (one a line
        or comma-separated), its optional name.txt the brand's name as pages show it (default: the folder's)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise CnnkitError(f"{folder}: no such folder")
        subfolders = sorted(p for p in folder.iterdir() if p.is_dir())
        if not subfolders:
            raise CnnkitError(f"{folder}: no BRAND/ folders of reference screenshots")
        plans = []
        for sub in subfolders:
            listed = sub / "domains.txt"
            if not listed.is_file():
                raise CnnkitError(f"{sub}: no domains.txt (the brand's domains, one a line)")
            domains = [d for line in listed.read_text().splitlines() for d in line.split(",") if d.strip()]
            name = (sub / "name.txt").read_text().strip() if (sub / "name.txt").is_file() else sub.name
            images = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise CnnkitError(f"{sub}: no reference screenshots ({', '.join(IMAGE_SUFFIXES)})")
            plans.append((name, domains, images))
        return [self.add(name, domains=domains, references=images) for name, domains, images in plans]

    def _store(self, name: str, data: bytes, digest: str) -> Reference:
        suffix = ".png" if data[:8] == b"\x89PNG\r\n\x1a\n" else ".jpg" if data[:3] == b"\xff\xd8\xff" else ".img"
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "brand"
        target = self.references_folder / slug / f"{digest[:16]}{suffix}"
        write_bytes(target, data)
        _write_keypoints(target, _decode(data, str(target)))
        return Reference(str(target.relative_to(self.folder)), digest)

    def keypoints(self) -> list[tuple[str, str, Any]]:
        """(brand, reference id, its keypoints) for every reference, checked against its checksum; keypoints are
        read from their cache beside the image, or found again (and cached) where it is missing or stale."""
        found = []
        for brand in self.brands.values():
            for reference in brand.references:
                image = self.folder / reference.file
                if not image.is_file():
                    raise CnnkitError(f"{self.path}: reference {reference.file} of {brand.name} is missing")
                data = image.read_bytes()
                if hashlib.sha256(data).hexdigest() != reference.sha256:
                    raise CnnkitError(f"{image}: changed since it was added to the gallery (checksum mismatch); "
                                      f"add it again with `cnnkit phishing brands add {brand.name!r} --reference`")
                points = _cached_keypoints(image.with_suffix(".sift.npz"))
                if points is None:
                    points = _write_keypoints(image, _decode(data, str(image)))
                found.append((brand.name, reference.file, points))
        return found


def default_keywords(name: str, hosts: list[str]) -> list[str]:
    """The brand's name, the name without spaces, and its domains' registered names unless they are common words."""
    lowered = name.lower()
    labels = [label(h) for h in hosts]
    return [lowered, lowered.replace(" ", ""), *(w for w in labels if w not in COMMON_WORDS)]


def _read_image_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise CnnkitError(f"{path}: no such file")
    data = path.read_bytes()
    _decode(data, str(path))
    return data


def _decode(data: bytes, name: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_REFERENCE_PIXELS:
                raise CnnkitError(f"{name}: {image.width}x{image.height} is too large for a reference screenshot")
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise CnnkitError(f"{name}: not an image a reference can be made of ({type(exc).__name__}: "
                          f"{str(exc)[:120]})") from None


def _cached_keypoints(cache: Path) -> Any:
    """The keypoints cached in `cache`, or None where there are none or they were found with other settings."""
    from cnnkit.apps.phishing.visual import SETTINGS, Keypoints

    if not cache.is_file():
        return None
    with np.load(cache, allow_pickle=False) as stored:
        if "settings" not in stored.files or not np.array_equal(stored["settings"], SETTINGS):
            return None
        return Keypoints(stored["xy"], stored["descriptors"])


def _write_keypoints(image_path: Path, image: Any) -> Any:
    from cnnkit.apps.phishing.visual import SETTINGS, keypoints

    points = keypoints(image)

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, xy=points.xy, descriptors=points.descriptors, settings=SETTINGS)

    write_atomic(image_path.with_suffix(".sift.npz"), save)
    return points
