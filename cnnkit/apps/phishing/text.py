"""What a page's words say about its brand: Tesseract OCR with word boxes, each mention weighted by where it is.

A brand's name in the logo area or in large type is strong evidence that the page presents itself as that brand; the
same name in a footer, inside a paragraph of running text, on a "Sign in with Google" button or an app-store badge is
not (a university's page that mentions eBay, a bank's page with a Google Play badge). Weights are relative: 1.0 is
one mention in body-sized type in the middle of the page.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError

OCR_TIMEOUT_S = 60.0
MIN_CONFIDENCE = 30.0  # Tesseract's 0-100 word confidence; below it logos and noise read as random letters
HEADER = 0.2  # top fifth of the page: logo and navigation bar, where a name weighs most
HEADER_BAND = 0.25  # the top quarter of the first screen is read again at twice the size
HEADER_BLOCKS = 10_000  # Tesseract block numbers of the second reading start here, apart from the first's
FOOTER = 0.85  # below 85% of the height: footers, legal lines, partner strips
RUNNING_TEXT_WORDS = 9  # a line this long is a sentence, where a name is a passing mention
# A brand named after these is someone else's button or badge: "Sign in with Google", "Follow us on Facebook".
THIRD_PARTY_BEFORE = re.compile(r"(?:\bwith|\busing|\bvia|\bon|\bby|\bthrough)\s*$")
THIRD_PARTY_AFTER = re.compile(r"^\s*(?:play|store|pay|wallet|ads|maps|analytics|recaptcha|translate|fonts)\b")


@dataclass(frozen=True)
class Word:
    text: str
    box: tuple[int, int, int, int]  # left, top, width, height in pixels
    line: tuple[int, int, int]  # Tesseract's block, paragraph and line numbers


@dataclass(frozen=True)
class PageText:
    words: tuple[Word, ...]
    size: tuple[int, int]  # width, height of the image read, pixels
    title: str | None = None  # the document's title where the page was captured by a browser

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)


@dataclass(frozen=True)
class Mention:
    keyword: str
    weight: float
    where: str  # "title", "header", "large type", "body", "footer", "running text" or "third-party"

    def to_dict(self) -> dict[str, Any]:
        return {"keyword": self.keyword, "weight": round(self.weight, 3), "where": self.where}


def read_page(image: Path | bytes | Any, *, title: str | None = None) -> PageText:
    """The words Tesseract reads in a screenshot (a path, encoded image bytes or a PIL image), with their boxes.

    The top band of the first screen (logo and navigation) is read a second time at twice the size, in parallel:
    logos and small brand names there are often missed at screen resolution, and they are what a clone copies."""
    from PIL import Image

    binary = shutil.which("tesseract")
    if binary is None:
        raise CnnkitError("reading brands needs Tesseract OCR: apt-get install tesseract-ocr")
    if isinstance(image, (str, Path)) and not Path(image).is_file():
        raise CnnkitError(f"{image}: no such file")
    source = Image.open(io.BytesIO(image)) if isinstance(image, bytes) else (
        Image.open(image) if isinstance(image, (str, Path)) else image)
    picture = source.convert("RGB")
    width, height = picture.size
    band = max(1, round(HEADER_BAND * min(height, 0.75 * width)))  # the first screen's top quarter
    with tempfile.TemporaryDirectory() as tmp:
        whole, top = Path(tmp) / "page.png", Path(tmp) / "top.png"
        picture.save(whole)
        picture.crop((0, 0, width, band)).resize((2 * width, 2 * band), Image.Resampling.LANCZOS).save(top)
        outputs = _tesseract(binary, [whole, top], name=str(image) if isinstance(image, (str, Path)) else "image")
    page, header = parse_tsv(outputs[0], title=title), parse_tsv(outputs[1])
    words = [w for w in page.words if w.box[1] + w.box[3] / 2 >= band]
    words += [Word(w.text, tuple(v // 2 for v in w.box), (HEADER_BLOCKS + w.line[0], *w.line[1:]))  # type: ignore[arg-type]
              for w in header.words]
    return PageText(tuple(words), (width, height), title)


def _tesseract(binary: str, paths: list[Path], *, name: str) -> list[str]:
    """Tesseract's TSV for each image, the processes run side by side."""
    # --psm 11: sparse text, as on web pages (logos, buttons, scattered labels) rather than paragraphs
    running = [subprocess.Popen([binary, str(p), "-", "--psm", "11", "tsv"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for p in paths]
    outputs = []
    try:
        for process in running:
            out, err = process.communicate(timeout=OCR_TIMEOUT_S)
            if process.returncode != 0:
                raise CnnkitError(f"{name}: Tesseract could not read it ({err.strip()[:200]})")
            outputs.append(out)
    except subprocess.TimeoutExpired:
        raise CnnkitError(f"{name}: OCR took longer than {OCR_TIMEOUT_S:g} s") from None
    finally:
        for process in running:
            if process.poll() is None:
                process.kill()
                process.wait()
    return outputs


def parse_tsv(tsv: str, *, title: str | None = None) -> PageText:
    """Tesseract's TSV output -> the page's confident words and the image size."""
    words, size = [], (0, 0)
    for row in csv.DictReader(io.StringIO(tsv), delimiter="\t", quoting=csv.QUOTE_NONE):
        box = tuple(int(row[k]) for k in ("left", "top", "width", "height"))
        if row["level"] == "1":
            size = (box[2], box[3])
        text = (row.get("text") or "").strip()
        if text and float(row["conf"]) >= MIN_CONFIDENCE:
            words.append(Word(text, box, (int(row["block_num"]), int(row["par_num"]), int(row["line_num"]))))
    return PageText(tuple(words), size, title)


def mentions(page: PageText, keywords: Iterable[str]) -> list[Mention]:
    """Every mention of one brand's keywords on the page, weighted by where it stands. Longer keywords are matched
    first and their words taken, so "Central Bank of India" is not also a mention of "Bank of India"."""
    ordered = sorted({k.lower() for k in keywords}, key=len, reverse=True)
    found = [m for line in _lines(page) for m in _line_mentions(line, page, ordered)]
    if page.title:
        title = page.title.lower()
        for keyword in ordered:
            hits = len(_find(keyword, title))
            title = _pattern(keyword).sub(" ", title)
            found += [Mention(keyword, 2.0, "title")] * min(hits, 1)
    return found


def _lines(page: PageText) -> list[list[Word]]:
    lines: dict[tuple[int, int, int], list[Word]] = {}
    for word in page.words:
        lines.setdefault(word.line, []).append(word)
    return list(lines.values())


def _line_mentions(line: list[Word], page: PageText, keywords: list[str]) -> list[Mention]:
    text = " ".join(w.text for w in line).lower()
    starts, position = [], 0
    for word in line:  # character offset of each word in `text`
        starts.append(position)
        position += len(word.text) + 1
    heights = sorted(w.box[3] for w in page.words) or [1]
    median_height = heights[len(heights) // 2]
    found = []
    taken = [False] * len(text)
    for keyword in keywords:
        for match in _find(keyword, text):
            if any(taken[match.start():match.end()]):
                continue
            taken[match.start():match.end()] = [True] * (match.end() - match.start())
            covered = [w for w, s in zip(line, starts) if s < match.end() and s + len(w.text) > match.start()]
            found.append(_weigh(keyword, covered, line, text, match, page, median_height))
    return found


def _weigh(keyword: str, covered: list[Word], line: list[Word], text: str, match: re.Match[str], page: PageText,
           median_height: int) -> Mention:
    if THIRD_PARTY_BEFORE.search(text[:match.start()]) or THIRD_PARTY_AFTER.match(text[match.end():]):
        return Mention(keyword, 0.0, "third-party")
    height = max(w.box[3] for w in covered)
    middle = (min(w.box[1] for w in covered) + height / 2) / max(page.size[1], 1)
    size = min(max(height / max(median_height, 1), 0.5), 3.0)  # relative type size, capped
    if middle >= FOOTER:
        return Mention(keyword, 0.2 * size, "footer")
    if len(line) >= RUNNING_TEXT_WORDS:
        return Mention(keyword, 0.3 * size, "running text")
    if middle < HEADER:
        return Mention(keyword, 1.5 * size, "header")
    return Mention(keyword, size, "large type" if size >= 1.5 else "body")


def _pattern(keyword: str) -> re.Pattern[str]:
    # A keyword's words may be read with any spacing, or none: OCR reads "Bankof America" as often as not.
    words = [re.escape(w) for w in keyword.split()]
    return re.compile(r"(?<![a-z0-9])" + r"\s*".join(words) + r"(?![a-z0-9])")


def _find(keyword: str, text: str) -> list[re.Match[str]]:
    return list(_pattern(keyword).finditer(text))
