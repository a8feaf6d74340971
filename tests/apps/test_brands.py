"""The phishing detector's parts: URLs, the gallery of brands with references, words weighted by where they stand,
the brand identified from look and words, and the verdict on (screenshot, URL)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.apps.phishing.decision import Signal, decide
from cnnkit.apps.phishing.gallery import Gallery
from cnnkit.apps.phishing.identify import BrandMatch
from cnnkit.apps.phishing.text import mentions, parse_tsv
from cnnkit.apps.phishing.urls import host_of, registrable
from cnnkit.errors import CnnkitError

needs_tesseract = pytest.mark.skipif(shutil.which("tesseract") is None,
                                     reason="needs Debian's tesseract-ocr (installed by .ci/run)")


def test_urls_and_domains_give_a_host_and_malformed_ones_a_clear_error() -> None:
    assert host_of("HTTPS://Login.PayPal.com:443/signin?x=1") == "login.paypal.com"
    assert host_of("paypal.com") == host_of("paypal.com.") == "paypal.com"
    assert host_of("http://127.0.0.2:8080/") == "127.0.0.2"
    assert host_of("https://bücher.de/") == "xn--bcher-kva.de"
    assert registrable("secure.login.paypal.co.uk") == "paypal.co.uk"
    for bad, says in (("not a domain", "is not a URL or domain"), ("ftp://paypal.com", r"only http\(s\)"),
                      ("https://x.com:99999/", "Port out of range"), ("paypal", "is not a domain name"),
                      ("", "is required")):
        with pytest.raises(CnnkitError, match=says):
            host_of(bad)


def page(tmp_path: Path, name: str, colour: tuple[int, int, int]) -> Path:
    """A small 'screenshot': a coloured header with a patterned logo, distinct per brand."""
    rng = np.random.default_rng(sum(colour))
    pixels = np.full((300, 400, 3), 250, np.uint8)
    pixels[:60] = colour
    pixels[10:50, 20:120] = rng.integers(0, 255, (40, 100, 1)).repeat(3, axis=2)
    path = tmp_path / f"{name}.png"
    Image.fromarray(pixels).save(path)
    return path


def test_a_gallery_keeps_checksummed_references_and_refuses_what_is_not_an_image(tmp_path: Path) -> None:
    gallery = Gallery.open(tmp_path / "brands.json", create=True)
    paypal = gallery.add("PayPal", domains=["paypal.com", "https://www.PayPal.me/x"],
                         references=[page(tmp_path, "p1", (0, 48, 135)), page(tmp_path, "p1", (0, 48, 135))])
    assert paypal.domains == ("paypal.com", "www.paypal.me") and paypal.keywords == ("paypal",)
    assert len(paypal.references) == 1, "the same image twice is one reference"
    assert paypal.owns("login.paypal.com") and not paypal.owns("paypal.com.account-verify.top")
    boa = gallery.add("Bank of America", domains=["bankofamerica.com"])
    assert boa.keywords == ("bank of america", "bankofamerica")
    assert Gallery.open(tmp_path / "brands.json").add("Microsoft", domains=["live.com", "microsoft.com"]).keywords \
        == ("microsoft",), "a domain that is an ordinary word ('live') names no one"
    before = (tmp_path / "brands.json").read_bytes()
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(CnnkitError, match="notes.png: not an image a reference can be made of"):
        Gallery.open(tmp_path / "brands.json").add("Evil", domains=["evil.com"], references=[tmp_path / "notes.png"])
    assert (tmp_path / "brands.json").read_bytes() == before, "a refused add writes nothing"
    stored = tmp_path / Gallery.open(tmp_path / "brands.json").brands["PayPal"].references[0].file
    assert len(Gallery.open(tmp_path / "brands.json").keypoints()) == 1
    cache = stored.with_suffix(".sift.npz")
    np.savez(cache, xy=np.zeros((1, 2), np.float32), descriptors=np.zeros((1, 128), np.uint8))  # an older cache
    (_, _, points), = Gallery.open(tmp_path / "brands.json").keypoints()
    assert len(points.xy) > 1, "keypoints cached under other settings are found again, not trusted"
    stored.write_bytes(stored.read_bytes() + b"tampered")
    with pytest.raises(CnnkitError, match="changed since it was added"):
        Gallery.open(tmp_path / "brands.json").keypoints()


def test_import_reads_brand_folders_and_says_what_is_missing(tmp_path: Path) -> None:
    refs = tmp_path / "refs"
    (refs / "quillbank").mkdir(parents=True)
    page(tmp_path / "refs" / "quillbank", "login", (0, 122, 94))
    (refs / "quillbank" / "domains.txt").write_text("quillbank.com\nquill.bank\n")
    (refs / "quillbank" / "name.txt").write_text("Quillbank\n")
    (refs / "lumora").mkdir()
    page(tmp_path / "refs" / "lumora", "home", (120, 54, 170))
    gallery = Gallery.open(tmp_path / "brands.json", create=True)
    with pytest.raises(CnnkitError, match="lumora: no domains.txt"):
        gallery.import_folder(refs)
    assert not (tmp_path / "brands.json").exists(), "nothing is imported when one folder is incomplete"
    (refs / "lumora" / "domains.txt").write_text("lumora.com")
    brands = gallery.import_folder(refs)
    assert [(b.name, b.domains, len(b.references)) for b in brands] == [
        ("lumora", ("lumora.com",), 1), ("Quillbank", ("quill.bank", "quillbank.com"), 1)]


def test_an_old_gallery_without_references_still_loads(tmp_path: Path) -> None:
    (tmp_path / "brands.json").write_text(json.dumps(
        {"brands": {"PayPal": {"domains": ["paypal.com"], "keywords": ["paypal"]}}}))
    gallery = Gallery.open(tmp_path / "brands.json")
    assert gallery.brands["PayPal"].references == () and gallery.keypoints() == []


TSV_HEAD = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n"


def tsv(*words: tuple[str, int, int, int]) -> str:
    """Tesseract TSV for words (text, line number, top, height) on a 1000 x 1000 page."""
    rows = [TSV_HEAD, "1\t1\t0\t0\t0\t0\t0\t0\t1000\t1000\t-1\t\n"]
    for index, (text, line, top, height) in enumerate(words):
        rows.append(f"5\t1\t{line}\t1\t1\t{index}\t{10 * index}\t{top}\t40\t{height}\t95\t{text}\n")
    return "".join(rows)


def test_a_name_in_the_header_counts_more_than_in_a_footer_a_sentence_or_a_third_party_button() -> None:
    header = mentions(parse_tsv(tsv(("PayPal", 1, 20, 30))), ["paypal"])
    footer = mentions(parse_tsv(tsv(("PayPal", 1, 950, 12), ("Help", 2, 500, 12))), ["paypal"])
    button = mentions(parse_tsv(tsv(("Sign", 1, 500, 12), ("in", 1, 500, 12), ("with", 1, 500, 12),
                                    ("Google", 1, 500, 12))), ["google"])
    sentence = [("We", 1, 500, 12), ("accept", 1, 500, 12), ("cards", 1, 500, 12), ("and", 1, 500, 12),
                ("PayPal", 1, 500, 12), ("for", 1, 500, 12), ("all", 1, 500, 12), ("orders", 1, 500, 12),
                ("today", 1, 500, 12)]
    running = mentions(parse_tsv(tsv(*sentence)), ["paypal"])
    assert [m.where for m in header + footer + button + running] == ["header", "footer", "third-party",
                                                                      "running text"]
    assert header[0].weight > running[0].weight > button[0].weight == 0
    assert header[0].weight > footer[0].weight
    badge = mentions(parse_tsv(tsv(("Google", 1, 500, 12), ("Play", 1, 500, 12))), ["google"])
    assert badge[0].weight == 0, "an app-store badge is not the brand"
    longest = mentions(parse_tsv(tsv(("Central", 1, 500, 12), ("Bank", 1, 500, 12), ("of", 1, 500, 12),
                                      ("India", 1, 500, 12))), ["bank of india", "central bank of india"])
    assert [m.keyword for m in longest] == ["central bank of india"]
    merged = mentions(parse_tsv(tsv(("Bankof", 1, 20, 30), ("America", 1, 20, 30))), ["bank of america"])
    assert [m.where for m in merged] == ["header"], "OCR's dropped spaces still name the brand"


def match(brand: object, score: float = 2.0) -> BrandMatch:
    return BrandMatch(brand, score, 1.0, getattr(brand, "name", None))  # type: ignore[arg-type]


def test_the_verdict_comes_from_brand_and_domain_and_the_classifier_flags_only_at_its_own_threshold(
        tmp_path: Path) -> None:
    paypal = Gallery.open(tmp_path / "brands.json", create=True).add("PayPal", domains=["paypal.com"])
    clone = decide(match(paypal), host="paypal.account-verify.top", signal=Signal(0.01, 0.9, 0.01))
    assert clone.label == "phishing" and clone.flagged
    assert "served from paypal.account-verify.top, not paypal.com" in clone.reason
    own = decide(match(paypal), host="www.paypal.com", signal=Signal(0.99, 0.5, 0.01))
    assert own.label == "legitimate" and not own.flagged and "its own domain paypal.com" in own.reason
    assert decide(match(paypal), host=None).label == "needs-url"
    nothing = match(None, 0.2)
    assert decide(nothing, host="example.com", signal=Signal(0.97, 0.95, 0.01)).label == "suspicious"
    quiet = decide(nothing, host="example.com", signal=Signal(0.94, 0.95, 0.01))
    assert quiet.label == "no-brand" and not quiet.flagged and "separate signal" in quiet.reason
    unchosen = decide(nothing, host="example.com", signal=Signal(0.99, None))
    assert unchosen.label == "no-brand", "without a low-FPR threshold the classifier never flags"
    assert "never flags" in unchosen.to_dict()["classifier"]["note"]


@needs_tesseract
def test_clones_of_a_brand_are_caught_and_its_own_pages_and_other_brands_are_not(tmp_path: Path) -> None:
    """Synthetic pages of invented brands: each brand's references are two of its legitimate pages; its other
    legitimate pages and the imitations are identified from them."""
    from cnnkit.apps.phishing.check import Detector
    from cnnkit.apps.phishing.config import DemoConfig
    from cnnkit.apps.phishing.demo import make_demo_screenshots

    shots = make_demo_screenshots(DemoConfig(out=tmp_path / "shots", count=40, width=1024, height=640, seed=4))
    entries = json.loads((shots / "manifest.json").read_text())["entries"]
    by_brand: dict[str, list[dict]] = {}
    for e in entries:
        by_brand.setdefault(e["brand"], []).append(e)
    gallery = Gallery.open(tmp_path / "brands.json", create=True)
    protected = sorted(b for b, es in by_brand.items() if sum(e["label"] == "legitimate" for e in es) >= 3)[:2]
    references = {}
    for brand in protected:
        legit = [e for e in by_brand[brand] if e["label"] == "legitimate"]
        references[brand] = {e["file"] for e in legit[:2]}
        gallery.add(brand, domains=[f"{brand.lower()}.com"], references=[shots / e["file"] for e in legit[:2]])
    detector = Detector(gallery=tmp_path / "brands.json")
    for brand in protected:
        for e in by_brand[brand]:
            if e["file"] in references[brand]:
                continue
            # Identified once (OCR is most of the time), decided from a look-alike address and from its own.
            match = detector.identifier.identify(shots / e["file"])
            lookalike = decide(match, host=host_of(f"https://{brand.lower()}-secure-login.top/"))
            own = decide(match, host=host_of(f"https://www.{brand.lower()}.com/signin"))
            if e["label"] == "legitimate":
                assert own.label == "legitimate" and lookalike.label == "phishing", e["file"]
            elif "misspelled" not in e["telltales"]:
                assert lookalike.label == "phishing", e["file"]
    # Pages of other sites: a different layout (the synthetic brands all share one template, which the gallery's
    # two brands cannot tell from page furniture; bench/phishing_real.py measures other sites' real pages).
    for index, colour in enumerate(((200, 30, 30), (30, 160, 60), (90, 90, 90))):
        other = detector.check(page(tmp_path, f"other{index}", colour), url="https://www.example.org/")
        assert other.label == "no-brand", other.reason
