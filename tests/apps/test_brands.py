"""Brand checks: the gallery, reading the brand a page shows, and the verdict from brand, domain and score."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cnnkit.apps.phishing.brands import Gallery, decide, normalise_domain, page_text
from cnnkit.apps.phishing.demo import BRANDS
from cnnkit.errors import CnnkitError

needs_tesseract = pytest.mark.skipif(shutil.which("tesseract") is None,
                                     reason="needs Debian's tesseract-ocr (installed by .ci/run)")


def gallery(tmp_path: Path) -> Gallery:
    brands = Gallery.open(tmp_path / "brands.json", create=True)
    brands.add("PayPal", domains=["paypal.com", "https://www.PayPal.me/x"])
    brands.add("Bank of America", domains=["bankofamerica.com"])
    return Gallery.open(tmp_path / "brands.json")


def test_domains_and_ownership(tmp_path: Path) -> None:
    paypal = gallery(tmp_path).brands["PayPal"]
    assert paypal.domains == ("paypal.com", "www.paypal.me") and paypal.keywords == ("paypal",)
    assert normalise_domain("HTTPS://Login.PayPal.com:443/signin") == "login.paypal.com"
    assert paypal.owns("login.paypal.com") and paypal.owns("paypal.com")
    for impostor in ("paypal.com.account-verify.top", "notpaypal.com", "paypa1.com"):
        assert not paypal.owns(impostor)
    with pytest.raises(CnnkitError, match="is not a domain name"):
        normalise_domain("not a domain")


def test_the_brand_named_most_often_wins(tmp_path: Path) -> None:
    brands = gallery(tmp_path)
    assert brands.brands["Bank of America"].keywords == ("bank of america", "bankofamerica")
    brand, counts = brands.identify("Sign in to PayPal\nPayPal account | Bank of America")
    assert brand.name == "PayPal" and counts == {"PayPal": 2, "Bank of America": 1}
    assert brands.identify("PayPal and Bank of America")[0] is None  # a tie names no one
    assert brands.identify("paypalpal mypaypal")[0] is None  # whole words only
    assert brands.identify("Sign in with PayPal", min_mentions=2)[0] is None


def test_a_clone_off_the_brands_domains_is_phishing_at_any_threshold(tmp_path: Path) -> None:
    paypal = gallery(tmp_path).brands["PayPal"]
    clone = decide(paypal, domain="paypal.account-verify.top", score=0.0, threshold=1.0)
    assert clone.label == "phishing" and "served from paypal.account-verify.top, not paypal.com" in clone.reason
    own = decide(paypal, domain="www.paypal.com", score=1.0, threshold=0.0)
    assert own.label == "legitimate" and "its own domain" in own.reason
    assert decide(None, domain="example.com", score=0.7, threshold=0.5).label == "phishing"
    assert decide(paypal, domain=None, score=0.2, threshold=0.5).reason.startswith("shows PayPal, no domain given")
    with pytest.raises(CnnkitError, match="no classifier score"):
        decide(None, domain="example.com", score=None, threshold=0.5)


@needs_tesseract
def test_synthetic_pages_show_their_brand_and_clones_are_caught(tmp_path: Path) -> None:
    from cnnkit.apps.phishing.demo import make_demo_screenshots
    from cnnkit.config import DemoConfig

    shots = make_demo_screenshots(DemoConfig(out=tmp_path / "shots", count=24, width=1024, height=640, seed=4))
    entries = json.loads((shots / "manifest.json").read_text())["entries"]
    brands = Gallery.open(tmp_path / "brands.json", create=True)
    for name, _ in BRANDS:
        brands.add(name, domains=[f"{name.lower()}.com"])
    legitimate = [e for e in entries if e["label"] == "legitimate"]
    found = [brands.identify(page_text(shots / e["file"]))[0] for e in legitimate]
    assert all(b is None or b.name == e["brand"] for b, e in zip(found, legitimate)), "never a wrong brand"
    assert sum(b is not None for b in found) >= 0.9 * len(legitimate)

    page = shots / legitimate[0]["file"]
    brand = legitimate[0]["brand"]
    command = [sys.executable, "-m", "cnnkit", "phishing", "check", str(page), "--gallery",
               str(tmp_path / "brands.json"), "--json", "--domain"]
    lookalike = json.loads(subprocess.run([*command, f"{brand.lower()}-secure-login.top"], capture_output=True,
                                          text=True, check=True).stdout)[0]
    own = json.loads(subprocess.run([*command, f"www.{brand.lower()}.com"], capture_output=True, text=True,
                                    check=True).stdout)[0]
    assert (lookalike["label"], lookalike["brand"]) == ("phishing", brand)
    assert (own["label"], own["brand"]) == ("legitimate", brand)
