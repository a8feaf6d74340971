"""`python bench/phishing_real.py --part detector`: reference-based brand identification and the (screenshot, URL)
decision on the real pages of ../shared/data/phishing-real.

The gallery: every brand with legitimate pages in the data (login-pages' 32 brands, www24's 13; Microsoft, Skype
and Outlook as one brand), with its public domains (GALLERY below) and its legitimate pages as references. Each page
is identified against references other than itself:
- a legitimate page of a gallery brand with at least one other page: its own reference left out (top-1);
- a phishing page of a gallery brand: the whole gallery (top-1);
- "other organisations' pages": each legitimate brand page with its whole brand left out of the gallery (its
  references and its name), and PhishOracle's legitimate pages (other sites), less the few that are a gallery brand's
  own page (OWN_PAGES, found by looking at every page the bench identified; they count as brand pages).
The detector: each phishing page served from a look-alike domain (`<brand>-account-verify.com`), each legitimate page
from its own domain (a gallery brand's page from that brand's domain, any other page from a domain of its own):
phishing pages flagged (TPR) and legitimate pages flagged (FPR), with Wilson 95% intervals. The threshold and
weights in cnnkit.apps.phishing.identify were chosen on these pages, so the figures are optimistic for new pages;
the sweep over thresholds shows how steeply they move.
"""

from __future__ import annotations

import csv
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

GALLERY = {  # key -> (name as pages show it, its domains)
    "amazon": ("Amazon", "amazon.com,amazon.in"), "axis_bank": ("Axis Bank", "axisbank.com"),
    "bandhan_bank": ("Bandhan Bank", "bandhanbank.com"), "bank_of_baroda": ("Bank of Baroda", "bankofbaroda.in"),
    "bank_of_india": ("Bank of India", "bankofindia.co.in"),
    "bank_of_maharashtra": ("Bank of Maharashtra", "bankofmaharashtra.in"),
    "canara_bank": ("Canara Bank", "canarabank.com"),
    "central_bank_of_india": ("Central Bank of India", "centralbankofindia.co.in"),
    "dropbox": ("Dropbox", "dropbox.com"), "facebook": ("Facebook", "facebook.com"),
    "federal_bank": ("Federal Bank", "federalbank.co.in"), "google": ("Google", "google.com"),
    "hdfc_bank": ("HDFC Bank", "hdfcbank.com"), "icici_bank": ("ICICI Bank", "icicibank.com"),
    "idbi_bank": ("IDBI Bank", "idbibank.in"), "income_tax": ("Income Tax Department", "incometax.gov.in"),
    "indian_bank": ("Indian Bank", "indianbank.in"), "indian_overseas_bank": ("Indian Overseas Bank", "iob.in"),
    "indusind_bank": ("IndusInd Bank", "indusind.com"), "instagram": ("Instagram", "instagram.com"),
    "kotak_bank": ("Kotak Mahindra Bank", "kotak.com"), "linkedin": ("LinkedIn", "linkedin.com"),
    "microsoft": ("Microsoft", "microsoft.com,live.com,outlook.com,skype.com,office.com"),
    "paypal": ("PayPal", "paypal.com"), "punjab_and_sind_bank": ("Punjab and Sind Bank", "psbindia.com"),
    "punjab_national_bank": ("Punjab National Bank", "pnbindia.in"), "rbl_bank": ("RBL Bank", "rblbank.com"),
    "sbi": ("State Bank of India", "onlinesbi.sbi,sbi.co.in"), "twitter": ("Twitter", "twitter.com,x.com"),
    "uco_bank": ("UCO Bank", "ucobank.com"), "union_bank_of_india": ("Union Bank of India", "unionbankofindia.co.in"),
    "yes_bank": ("YES Bank", "yesbank.in"), "att": ("AT&T", "att.com"), "adobe": ("Adobe", "adobe.com"),
    "apple": ("Apple", "apple.com"), "bank_of_america": ("Bank of America", "bankofamerica.com"),
    "dhl": ("DHL", "dhl.com"), "ebay": ("eBay", "ebay.com"), "wells_fargo": ("Wells Fargo", "wellsfargo.com"),
    "yahoo": ("Yahoo", "yahoo.com"),
}
WWW24_BRANDS = {"ATT": "att", "Adobe": "adobe", "Amazon": "amazon", "Apple": "apple", "BankofAmerica":
                "bank_of_america", "DHL": "dhl", "Dropbox": "dropbox", "Facebook": "facebook", "Google": "google",
                "Microsoft": "microsoft", "Outlook": "microsoft", "PayPal": "paypal", "WellsFargo": "wells_fargo",
                "Yahoo": "yahoo", "eBay": "ebay"}
# PhishOracle legitimate pages that are a gallery brand's own page (looked at: SBI's and HDFC's net-banking pages,
# Axis Bank's card payment page, Google's privacy policy, Office support, a Microsoft sign-in, a LinkedIn sign-up).
OWN_PAGES = {"Legitimate_7.jpg": "sbi", "Legitimate_98.jpg": "hdfc_bank", "Legitimate_51.jpg": "axis_bank",
             "Legitimate_21.jpg": "google", "Legitimate_67.jpg": "microsoft", "Legitimate_77.jpg": "microsoft",
             "Legitimate_71.jpg": "linkedin"}
THIRD_PARTY = re.compile(r"(sign|log) ?(in|up) with|continue with|google play|app store|partner", re.I)
THRESHOLDS = (0.6, 0.8, 1.0, 1.2, 1.5, 2.0)
CREDENTIALS = re.compile(r"pass\s*word|passcode|\bpin\b|sign\s*in|log\s*in|verify", re.I)  # a page asking to log in


@dataclass
class Page:
    path: Path
    label: str  # phishing | legitimate
    brand: str | None  # GALLERY key, None when not a gallery brand's page (or unknown)
    source: str


def pages(data: Path) -> list[Page]:
    found = []
    for row in csv.DictReader((data / "manifest.csv").open()):
        path = data / row["file"]
        brand = None
        if row["source"].startswith("www24"):
            brand = WWW24_BRANDS.get(path.stem.split("_")[0])
        elif row["label"] == "legitimate":
            brand = OWN_PAGES.get(path.name)
        found.append(Page(path, row["label"], brand, row["source"]))
    for row in csv.DictReader((data / "login-pages" / "manifest.csv").open()):
        brand = row["brand"].replace("microsoft_skype", "microsoft")
        found.append(Page(data / row["file"], row["label"], brand, "login-pages"))
    return found


def wilson(hits: int, n: int) -> str:
    from cnnkit.evaluate.metrics import wilson_interval

    low, high = wilson_interval(hits, n)
    return f"{hits}/{n} = {hits / max(n, 1):.3f} ({low:.3f}-{high:.3f})"


def detector_part(data: Path, work: Path, *, pages_csv: Path | None = None) -> list[list[dict[str, object]]]:
    from cnnkit.apps.phishing.gallery import Gallery
    from cnnkit.apps.phishing.identify import BrandIdentifier
    from cnnkit.apps.phishing.text import read_page
    from cnnkit.files import sha256_file

    os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # Tesseract: one thread a page, two pages at once
    every = pages(data)
    for key, (name, domains) in GALLERY.items():
        own = [p.path for p in every if p.brand == key and p.label == "legitimate" and p.source != "PhishOracle"]
        Gallery.open(work / "brands.json", create=True).add(name, domains=domains.split(","), references=own)
    gallery = Gallery.open(work / "brands.json")
    started = time.perf_counter()
    identifier = BrandIdentifier(gallery)
    print(f"gallery: {len(gallery.brands)} brands, {sum(len(b.references) for b in gallery.brands.values())} "
          f"references; index built in {time.perf_counter() - started:.1f} s")
    ref_id = {r.sha256: r.file for b in gallery.brands.values() for r in b.references}
    key_of = {name: key for key, (name, _) in GALLERY.items()}
    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        texts = list(pool.map(read_page, [p.path for p in every]))
    ocr_seconds = (time.perf_counter() - started) / len(every)
    results = []
    started = time.perf_counter()
    for page, text in zip(every, texts):
        own_ref = ref_id.get(sha256_file(page.path))
        own = identifier.identify(page.path, page=text, exclude=frozenset({own_ref} if own_ref else ()))
        left = None
        if page.label == "legitimate" and page.brand and page.source != "PhishOracle":
            name = GALLERY[page.brand][0]
            left = identifier.identify(page.path, page=text, leave_out=frozenset({name}),
                                       exclude=frozenset(r.file for r in gallery.brands[name].references))
        results.append((page, own, left, text))
    match_seconds = (time.perf_counter() - started) / (len(every) + sum(r[2] is not None for r in results))
    timing = _timing(identifier, every[:12])
    rows_id, rows_det = [], []
    for threshold in THRESHOLDS:
        rows_id.append(_identification(results, gallery, key_of, threshold))
        rows_det.append(_detection(results, key_of, threshold))
    print(f"OCR {ocr_seconds:.2f} s a page (two at once); keypoints and matching {match_seconds:.2f} s a page")
    if pages_csv is not None:
        _write_pages(pages_csv, results)
    return [rows_id, rows_det, [timing], _third_party(results, key_of)]


def _write_pages(path: Path, results: list) -> None:
    """One row per identification: what the page is, what was found, and the evidence (to study misses)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "source", "label", "brand", "against", "candidate", "score", "keypoints", "words",
                         "runner_up", "asks_credentials"])
        for page, own, left, text in results:
            credentials = bool(CREDENTIALS.search(text.text))
            for against, match in (("gallery", own), ("brand left out", left)):
                if match is None:
                    continue
                found = match.to_dict()
                writer.writerow([page.path.relative_to(page.path.parents[1]), page.source, page.label, page.brand,
                                 against, match.candidate, f"{match.score:.3f}", found["matched_keypoints"],
                                 "; ".join(f"{w['keyword']}@{w['where']}={w['weight']}" for w in found["words"]),
                                 found["runner_up"] and f"{found['runner_up']['brand']}={found['runner_up']['score']}",
                                 credentials])
    print(f"per-page results: {path}")


def _shown(match: object, threshold: float) -> str | None:
    return match.candidate if match.score >= threshold else None  # type: ignore[attr-defined]


def _identification(results: list, gallery: object, key_of: dict, threshold: float) -> dict[str, object]:
    counts = {}
    for page, own, left, _ in results:
        if page.label == "legitimate" and page.brand:
            name = GALLERY[page.brand][0]
            if len(gallery.brands[name].references) - (page.source != "PhishOracle") >= 1:  # type: ignore[attr-defined]
                counts.setdefault("legit", []).append(key_of.get(_shown(own, threshold)) == page.brand)
        if page.label == "phishing" and page.brand:
            counts.setdefault("phish", []).append(key_of.get(_shown(own, threshold)) == page.brand)
        if left is not None:
            counts.setdefault("other", []).append(_shown(left, threshold) is None)
        if page.label == "legitimate" and page.source == "PhishOracle" and not page.brand:
            counts.setdefault("other", []).append(_shown(own, threshold) is None)
    both = counts["legit"] + counts["phish"]
    return {"brand threshold": threshold, "top-1, brand pages (legit + phishing)": wilson(sum(both), len(both)),
            "legit": wilson(sum(counts["legit"]), len(counts["legit"])),
            "phishing": wilson(sum(counts["phish"]), len(counts["phish"])),
            "'no brand' on other organisations' pages": wilson(sum(counts["other"]), len(counts["other"]))}


def _detection(results: list, key_of: dict, threshold: float) -> dict[str, object]:
    caught, alarms = [], []
    for page, own, left, _ in results:
        shown = key_of.get(_shown(own, threshold))
        if page.label == "phishing" and page.brand:
            caught.append(shown is not None)  # any protected brand on a look-alike domain is phishing
        elif page.label == "legitimate" and page.brand:
            alarms.append(shown is not None and shown != page.brand)  # its own domain clears its own brand only
            if left is not None:
                alarms.append(_shown(left, threshold) is not None)  # as another organisation's page
        elif page.label == "legitimate":
            alarms.append(shown is not None)
    return {"brand threshold": threshold, "TPR, phishing pages of gallery brands": wilson(sum(caught), len(caught)),
            "FPR, legitimate pages on their own domains": wilson(sum(alarms), len(alarms))}


def _third_party(results: list, key_of: dict) -> list[dict[str, object]]:
    """Legitimate pages of other organisations whose text names a third party: sign-in buttons, badges, partners."""
    hits = [(page, left if left is not None else own) for page, own, left, text in results
            if page.label == "legitimate" and (left is not None or not page.brand) and THIRD_PARTY.search(text.text)]
    flagged = [p.path.name for p, m in hits if m.brand is not None]
    print(f"other organisations' pages naming a third party, flagged: {flagged}")
    return [{"other organisations' pages with 'sign in with', app-store badges or partners": len(hits),
             "flagged at the default threshold": wilson(len(flagged), len(hits))}]


def _timing(identifier: object, sample: list[Page]) -> dict[str, object]:
    """Seconds a page for the whole identification (OCR, keypoints, matching), one page at a time."""
    os.environ.pop("OMP_THREAD_LIMIT", None)
    started = time.perf_counter()
    for page in sample:
        identifier.identify(page.path)  # type: ignore[attr-defined]
    return {"pages timed one at a time": len(sample),
            "s a page (OCR + keypoints + matching)": (time.perf_counter() - started) / len(sample)}
