"""The phishing app's :classify hook (cnnkit.serving.hooks), with `cnnkit serve --brands GALLERY`.

An example may carry where its page was served from, as "url" or "domain":
    {"image": {"b64": ...}, "url": "https://paypal-account-verify.top/login"}
and its answer's "phishing" entry is then the detector's verdict (cnnkit.apps.phishing.decision) with its evidence;
the model's threshold decision, where the model has a stored low-FPR threshold, is its classifier signal. A malformed
URL or domain, or one without a {"b64": ...} image to read, is a 400. Identification (OCR and keypoint matching)
takes about a second a page, so at most AT_ONCE pages are checked at a time, each in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
from pathlib import Path
from typing import Any

from cnnkit.apps.phishing.decision import Signal, decide
from cnnkit.apps.phishing.gallery import Gallery
from cnnkit.apps.phishing.identify import BrandIdentifier
from cnnkit.apps.phishing.urls import host_of
from cnnkit.errors import CnnkitError
from cnnkit.serving.tfserving import RequestError

AT_ONCE = 2


class PhishingHook:
    key = "phishing"

    def __init__(self, gallery: Path, *, brand_threshold: float | None = None) -> None:
        import shutil

        if shutil.which("tesseract") is None:
            raise CnnkitError("--brands needs Tesseract OCR: apt-get install tesseract-ocr")
        options = {} if brand_threshold is None else {"threshold": brand_threshold}
        self.identifier = BrandIdentifier(Gallery.open(gallery), **options)
        self.slots: asyncio.Semaphore | None = None

    def prepare(self, body: Any) -> list[tuple[str, bytes] | None]:
        """Per example: (host, encoded image) where it names a URL or domain, else None; 400s for bad ones."""
        found: list[tuple[str, bytes] | None] = []
        for index, example in enumerate(body.get("examples", []) if isinstance(body, dict) else []):
            where = example.get("url", example.get("domain")) if isinstance(example, dict) else None
            if where is None:
                found.append(None)
                continue
            if not isinstance(where, str):
                raise RequestError(400, f'example {index}: "url" / "domain" must be a string')
            try:
                host = host_of(where)
            except CnnkitError as exc:
                raise RequestError(400, f"example {index}: {exc}") from None
            image = example.get("image")
            if not isinstance(image, dict) or not isinstance(image.get("b64"), str):
                raise RequestError(400, f'example {index}: a "url" needs the image as {{"b64": ...}}')
            try:
                found.append((host, base64.b64decode(image["b64"], validate=True)))
            except (binascii.Error, ValueError):
                raise RequestError(400, f"example {index}: invalid base64 image") from None
        return found

    async def answer(self, context: list[tuple[str, bytes] | None],
                     decisions: list[dict[str, Any]] | None) -> list[dict[str, Any] | None]:
        if self.slots is None:
            self.slots = asyncio.Semaphore(AT_ONCE)  # made on the serving loop
        answers: list[dict[str, Any] | None] = []
        for index, entry in enumerate(context):
            if entry is None:
                answers.append(None)
                continue
            host, data = entry
            decision = decisions[index] if decisions else None
            signal = (Signal(decision["score"], decision["threshold"], decision.get("target_fpr"))
                      if decision else None)
            async with self.slots:
                verdict = await asyncio.to_thread(self._check, data, host, signal)
            answers.append(verdict)
        return answers

    def _check(self, data: bytes, host: str, signal: Signal | None) -> dict[str, Any]:
        from PIL import Image

        # The server's decoder already refused bombs and oversized images for the model; this copy is the same bytes.
        with Image.open(io.BytesIO(data)) as image:
            match = self.identifier.identify(image.convert("RGB"))
        return decide(match, host=host, signal=signal).to_dict()


def server_hooks(gallery: Path | None, *, brand_threshold: float | None = None) -> tuple[PhishingHook, ...]:
    return () if gallery is None else (PhishingHook(gallery, brand_threshold=brand_threshold),)
