"""Brand-reference checking, after Phishpedia and VisualPhish: a page that shows a protected brand but is not
served from one of that brand's domains is phishing, whatever a classifier makes of its pixels.

Which brand a page shows is read from its text: Tesseract OCR (Debian's `tesseract-ocr`) reads the screenshot and
the brand whose names appear most often wins. Whole-page image embeddings were measured first and could not tell
brands apart on real pages (bench/phishing_real.py: a login page shares little but its logo and name with the
brand's home page); reading the name could.

A gallery is a JSON file of protected brands: each with its domains and the keywords that name it (by default its
name, the name without spaces, and the second-level labels of its domains).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError
from cnnkit.files import read_json, write_json

OCR_TIMEOUT_S = 60.0
MIN_KEYWORD = 3  # characters: shorter labels ("me" of paypal.me) name nothing
DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


@dataclass(frozen=True)
class Brand:
    name: str
    domains: tuple[str, ...]
    keywords: tuple[str, ...]

    def owns(self, domain: str) -> bool:
        """Whether `domain` is one of the brand's domains or a subdomain of one."""
        host = normalise_domain(domain)
        return any(host == d or host.endswith("." + d) for d in self.domains)


@dataclass(frozen=True)
class Verdict:
    label: str  # "phishing" or "legitimate"
    reason: str
    brand: str | None  # the protected brand the page shows, if any
    score: float | None  # the classifier's phishing probability, when one was given

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "reason": self.reason, "brand": self.brand, "score": self.score}


class Gallery:
    """Protected brands, kept in one JSON file."""

    def __init__(self, path: Path, brands: dict[str, Brand]) -> None:
        self.path, self.brands = Path(path), brands

    @classmethod
    def open(cls, path: Path, *, create: bool = False) -> Gallery:
        path = Path(path)
        if not path.is_file():
            if create:
                return cls(path, {})
            raise CnnkitError(f"{path}: no brand gallery (add a brand with `cnnkit phishing brands add`)")
        entries = read_json(path).get("brands", {})
        return cls(path, {name: Brand(name, tuple(e["domains"]), tuple(e["keywords"])) for name, e in entries.items()})

    def add(self, name: str, *, domains: list[str], keywords: list[str] | None = None) -> Brand:
        """Add or replace a brand; keywords default to its name and its domains' second-level labels."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 _.&'-]{0,63}", name):
            raise CnnkitError(f"brand name {name!r}: letters, digits, spaces and _.&'- only, at most 64")
        hosts = sorted({normalise_domain(d) for d in domains})
        if not hosts:
            raise CnnkitError(f"brand {name!r} needs at least one domain (--domains paypal.com,paypal.me)")
        words = [k.strip().lower() for k in keywords] if keywords else default_keywords(name, hosts)
        words = [w for w in dict.fromkeys(words) if len(w) >= MIN_KEYWORD]
        if not words:
            raise CnnkitError(f"brand {name!r}: no keyword of {MIN_KEYWORD} characters or more to recognise it by")
        brand = Brand(name, tuple(hosts), tuple(words))
        self.brands[name] = brand
        write_json(self.path, {"brands": {b.name: {"domains": list(b.domains), "keywords": list(b.keywords)}
                                          for b in self.brands.values()}})
        return brand

    def identify(self, text: str, *, min_mentions: int = 1) -> tuple[Brand | None, dict[str, int]]:
        """The brand named most often in `text`, at least `min_mentions` times (None when none is, or two tie),
        and every brand's count."""
        lowered = text.lower()
        counts = {name: sum(len(re.findall(rf"(?<![a-z0-9]){re.escape(k)}(?![a-z0-9])", lowered))
                            for k in brand.keywords) for name, brand in self.brands.items()}
        ranked = sorted(counts.items(), key=lambda item: -item[1])
        if not ranked or ranked[0][1] < max(1, min_mentions) or (len(ranked) > 1 and ranked[1][1] == ranked[0][1]):
            return None, counts
        return self.brands[ranked[0][0]], counts


def default_keywords(name: str, domains: list[str]) -> list[str]:
    lowered = name.lower()
    labels = [d.split(".")[-2] for d in domains if d.count(".") >= 1]
    return [lowered, lowered.replace(" ", ""), *labels]


def normalise_domain(text: str) -> str:
    """'https://Login.PayPal.com:443/x' -> 'login.paypal.com'; a clear error for what is not a host name."""
    host = re.sub(r"^[a-z][a-z0-9+.-]*://", "", text.strip().lower()).split("/", 1)[0].split(":", 1)[0].rstrip(".")
    if not DOMAIN.match(host):
        raise CnnkitError(f"{text!r} is not a domain name")
    return host


def page_text(image: Path | bytes | Any) -> str:
    """The text Tesseract reads in a screenshot (a path, encoded image bytes, or a PIL image)."""
    binary = shutil.which("tesseract")
    if binary is None:
        raise CnnkitError("reading brands needs Tesseract OCR: apt-get install tesseract-ocr")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(image) if isinstance(image, (str, Path)) else Path(tmp) / "page"
        if isinstance(image, bytes):
            path.write_bytes(image)
        elif not isinstance(image, (str, Path)):
            image.save(path, format="PNG")
        if not path.is_file():
            raise CnnkitError(f"{path}: no such file")
        try:
            # --psm 11: sparse text, as on web pages (logos, buttons, scattered labels) rather than paragraphs
            result = subprocess.run([binary, str(path), "-", "--psm", "11"], capture_output=True, text=True,
                                    timeout=OCR_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise CnnkitError(f"{path}: OCR took longer than {OCR_TIMEOUT_S:g} s") from None
    if result.returncode != 0:
        raise CnnkitError(f"{path}: Tesseract could not read it ({result.stderr.strip()[:200]})")
    return result.stdout


def decide(brand: Brand | None, *, domain: str | None, score: float | None, threshold: float) -> Verdict:
    """A page showing brand B is phishing when served from a domain that is not B's, and legitimate when served
    from B's own, whatever the classifier says; otherwise the classifier's score decides at `threshold`."""
    if brand is not None and domain is not None:
        host = normalise_domain(domain)
        if brand.owns(host):
            return Verdict("legitimate", f"shows {brand.name} and is served from its own domain {host}", brand.name,
                           score)
        return Verdict("phishing", f"shows {brand.name} but is served from {host}, not {', '.join(brand.domains)}",
                       brand.name, score)
    if score is None:
        raise CnnkitError("no classifier score and no brand-and-domain evidence: give a run, or the page's domain")
    shown = f"shows {brand.name}, no domain given; " if brand is not None else "no protected brand shown; "
    label = "phishing" if score >= threshold else "legitimate"
    sign = ">=" if score >= threshold else "<"
    return Verdict(label, f"{shown}classifier score {score:.3f} {sign} threshold {threshold:.3f}",
                   brand.name if brand else None, score)
