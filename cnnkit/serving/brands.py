"""Brand checks in the server's :classify answers (with `cnnkit serve --brands GALLERY`).

An example may carry the domain its page was served from: {"image": {"b64": ...}, "domain": "paypal-login.top"}.
Its decision then says which protected brand the page shows (read by Tesseract OCR of the image as sent) and why it
is phishing or legitimate (see cnnkit.apps.phishing.brands). OCR is slow beside the model (about a second a page),
so at most OCR_AT_ONCE pages are read at a time, each in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from pathlib import Path
from typing import Any

from cnnkit.apps.phishing.brands import Gallery, decide, normalise_domain, page_text
from cnnkit.errors import CnnkitError
from cnnkit.serving.tfserving import RequestError

OCR_AT_ONCE = 2


class BrandChecker:
    def __init__(self, gallery: Path) -> None:
        import shutil

        self.gallery = Gallery.open(gallery)
        if shutil.which("tesseract") is None:
            raise CnnkitError("--brands needs Tesseract OCR: apt-get install tesseract-ocr")
        self.slots = asyncio.Semaphore(OCR_AT_ONCE)

    async def check(self, body: Any, decisions: list[dict[str, Any]] | None) -> list[dict[str, Any] | None]:
        """Per example: its brand check (None for examples without a domain)."""
        checks: list[dict[str, Any] | None] = []
        for index, (domain, encoded) in enumerate(_domains_and_images(body)):
            if domain is None:
                checks.append(None)
                continue
            async with self.slots:
                text = await asyncio.to_thread(page_text, encoded)
            brand, _ = self.gallery.identify(text)
            decision = decisions[index] if decisions else None
            score = decision["score"] if decision else None
            if brand is None and score is None:
                checks.append({"domain": domain, "brand": None, "reason": "no protected brand shown"})
                continue
            verdict = decide(brand, domain=domain, score=score, threshold=decision["threshold"] if decision else 0.5)
            checks.append({"domain": domain, **verdict.to_dict()})
        return checks


def _domains_and_images(body: Any) -> list[tuple[str | None, bytes | None]]:
    """Each example's domain (validated) and the encoded image bytes to read; a domain needs a b64 image."""
    pairs = []
    for index, example in enumerate(body.get("examples", []) if isinstance(body, dict) else []):
        domain = example.get("domain") if isinstance(example, dict) else None
        if domain is None:
            pairs.append((None, None))
            continue
        if not isinstance(domain, str):
            raise RequestError(400, f'example {index}: "domain" must be a string')
        try:
            host = normalise_domain(domain)
        except CnnkitError as exc:
            raise RequestError(400, f"example {index}: {exc}") from None
        image = example.get("image")
        if not isinstance(image, dict) or not isinstance(image.get("b64"), str):
            raise RequestError(400, f'example {index}: a "domain" needs the image as {{"b64": ...}}')
        try:
            pairs.append((host, base64.b64decode(image["b64"], validate=True)))
        except (binascii.Error, ValueError):
            raise RequestError(400, f"example {index}: invalid base64 image") from None
    return pairs
