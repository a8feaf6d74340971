"""The phishing app's commands: `capture`, `make-demo-screenshots` and `phishing brands|check|scan`, and its
`serve --brands` option. The core CLI calls add_commands() and serve_hooks() and knows nothing else of the app."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cnnkit.apps.phishing.config import (
    BrandAddConfig,
    BrandImportConfig,
    CaptureConfig,
    CheckConfig,
    DemoConfig,
    ScanConfig,
)
from cnnkit.options import add_arguments, from_keywords, typed_values


def add_commands(commands: argparse._SubParsersAction) -> None:
    _command(commands, "capture", _run_capture, "screenshot URLs in headless Chromium, with a manifest",
             CaptureConfig)
    _command(commands, "make-demo-screenshots", _run_demo,
             "generate a synthetic set of login-page screenshots (legitimate / phishing)", DemoConfig)
    about = "protected brands, and verdicts on (screenshot, URL): brand, domain and classifier"
    actions = commands.add_parser("phishing", help=about, description=about).add_subparsers(
        dest="action", required=True, metavar="ACTION")
    brands = actions.add_parser("brands", help="the gallery of protected brands").add_subparsers(
        dest="brands_action", required=True, metavar="ACTION")
    _command(brands, "add", _run_brands_add, "add a brand (or replace its domains) with reference screenshots",
             BrandAddConfig)
    _command(brands, "import", _run_brands_import, "add every BRAND/ folder of reference screenshots",
             BrandImportConfig)
    listing = brands.add_parser("list", help="list the protected brands", description="list the protected brands")
    listing.set_defaults(handler=_run_brands_list)
    listing.add_argument("--gallery", type=Path, default=Path("brands.json"), help="the brand gallery file")
    check = _command(actions, "check", _run_check, "phishing or legitimate, and why, for screenshots and their URL",
                     CheckConfig)
    check.add_argument("--json", action="store_true", help="machine-readable output")
    _command(actions, "scan", _run_scan, "capture reported URLs in headless Chromium and decide on each "
             "(results.jsonl and results.csv)", ScanConfig)


def add_serve_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--brands", type=Path, metavar="GALLERY", help="a protected-brand gallery (cnnkit phishing "
                        "brands add): :classify examples that carry a \"url\" or \"domain\" get the phishing "
                        "detector's verdict (Tesseract OCR and reference matching)")


def serve_hooks(args: argparse.Namespace) -> tuple[Any, ...]:
    from cnnkit.apps.phishing.serving import server_hooks

    return server_hooks(getattr(args, "brands", None))


def _command(commands: argparse._SubParsersAction, name: str, handler: Any, about: str,
             config: type) -> argparse.ArgumentParser:
    sub = commands.add_parser(name, help=about, description=about)
    sub.set_defaults(handler=handler, config_class=config)
    add_arguments(sub, config)
    return sub


def _config(args: argparse.Namespace) -> Any:
    return from_keywords(args.config_class, typed_values(args, args.config_class))


def _run_capture(args: argparse.Namespace) -> int:
    from cnnkit.apps.phishing.capture import capture

    report = capture(_config(args))
    print(f"Captured {report.captured}, failed {report.failed}; manifest: {report.manifest}")
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from cnnkit.apps.phishing.demo import make_demo_screenshots

    config = _config(args)
    out = make_demo_screenshots(config)
    print(f"Wrote {config.count} synthetic screenshots to {out}/legitimate and {out}/phishing (manifest.json)")
    return 0


def _run_brands_add(args: argparse.Namespace) -> int:
    from cnnkit.apps.phishing.gallery import Gallery

    config: BrandAddConfig = _config(args)
    keywords = config.keywords.split(",") if config.keywords else None
    brand = Gallery.open(config.gallery, create=True).add(config.name, domains=config.domains.split(","),
                                                          keywords=keywords, references=list(config.reference))
    _describe(brand, config.gallery)
    return 0


def _run_brands_import(args: argparse.Namespace) -> int:
    from cnnkit.apps.phishing.gallery import Gallery

    config: BrandImportConfig = _config(args)
    for brand in Gallery.open(config.gallery, create=True).import_folder(config.folder):
        _describe(brand, config.gallery)
    return 0


def _describe(brand: Any, gallery: Path) -> None:
    references = len(brand.references)
    print(f"{brand.name}: domains {', '.join(brand.domains)}; recognised by {', '.join(brand.keywords)} and "
          f"{references} reference screenshot{'s' * (references != 1)} ({gallery})")
    if references == 0:
        print(f"  note: without references {brand.name} is recognised by its name alone; add screenshots of its "
              "real pages with --reference to catch clones whose logo OCR cannot read")


def _run_brands_list(args: argparse.Namespace) -> int:
    from cnnkit.apps.phishing.gallery import Gallery
    from cnnkit.evaluate.compare import text_table

    gallery = Gallery.open(args.gallery)
    print(text_table([{"brand": b.name, "domains": ", ".join(b.domains), "keywords": ", ".join(b.keywords),
                       "references": len(b.references)} for b in gallery.brands.values()]))
    return 0


def _run_check(args: argparse.Namespace) -> int:
    from cnnkit.apps.phishing.check import check_pages

    results = check_pages(_config(args))
    if args.json:
        print(json.dumps([{"image": str(r.path), **r.verdict.to_dict()} for r in results], indent=2))
        return 0
    for r in results:
        print(f"{r.path}: {r.verdict.label.upper()} ({r.verdict.reason})")
        if r.verdict.signal is not None:
            print(f"  classifier signal: {r.verdict.signal.to_dict()['note']}, score {r.verdict.signal.score:.3f}")
    return 0


def _run_scan(args: argparse.Namespace) -> int:
    from cnnkit.apps.phishing.scan import iter_rows, scan

    report = scan(_config(args))
    for line in iter_rows(report):
        print(line)
    print(f"{len(report.rows)} URLs, {report.flagged} flagged; {report.jsonl}, {report.csv}")
    return 0
