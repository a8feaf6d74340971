"""The phishing application on real pages (../shared/data/phishing-real; read its README first).

Brand identification (`--part brands`): each www24 phishing page whose brand (the file-name prefix) is one of the
13 brands of the www24 legitimate pages. By text (what `cnnkit phishing check` does): a gallery of those brands'
names and public domains, Tesseract OCR of the page; the share identified correctly, wrongly, or not at all, and
how many of the PhishOracle legitimate pages (other sites) name a gallery brand (each would be flagged when served
from a domain not that brand's). By image: the 13 legitimate pages as references, cosine similarity of embeddings
(the pretrained Lite0 features, or with --run a trained run's base); top-1 and top-3.

Classifier (`--part classifier`): Lite0 transfer runs trained on one collection and tested on the other (both
ways), and pooled 5-fold; ROC AUC with its 95% bootstrap interval, TPR at 1% and 5% FPR on the test data, and the
threshold for each FPR chosen on the training side's validation split, or refused there when it has fewer than
3 / FPR negatives (as `cnnkit evaluate --target-fpr` refuses). Cross-source rows also give the AUC against the
legitimate test pages that are login pages and against the others (see words_part).

Linear probe (`--part probe`): logistic regression on the pretrained Lite0's embeddings, trained on one collection
(its L2 penalty chosen by cross-validation there) and tested on the other; no network is trained.

Words (`--part words`): the same, on the page's OCR text instead of its pixels, with the test's legitimate pages
split by whether they are login pages (see words_part).

    python bench/phishing_real.py [--data ../shared/data/phishing-real] [--part brands|classifier|probe|words|all]
"""

from __future__ import annotations

import argparse
import csv
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from common import table  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "phishing-real"
WWW24 = "www24-threatAdvPhish"
COLLECTIONS = ("PhishOracle", WWW24)


def brand_of(path: Path) -> str | None:
    """'PayPal_P00466_phish.jpg' -> 'PayPal'; None for pages without a brand prefix."""
    prefix = path.stem.split("_", 1)[0]
    return prefix if "_" in path.stem and not prefix.startswith("P0") else None


class Embedder:
    """Screenshots -> L2-normalised global-average-pooled features of a convolutional base: the pretrained Lite0
    (top of the page at 224 px), or a transfer run's own base with its preprocessing."""

    def __init__(self, *, run: Path | None = None) -> None:
        from cnnkit.data.preprocess import Preprocess
        from cnnkit.models.network import NetworkConfig, build_network
        from cnnkit.models.transfer import split_base

        if run is None:
            model, weights = build_network(NetworkConfig(model="efficientnet_lite0", num_classes=2, input_size=224,
                                                         pretrained=True), load_weights=True)
            assert weights is not None
            self.base, _ = split_base(model)
            self.preprocess = Preprocess(input_size=224, mean=weights.mean, std=weights.std, resize="top-crop",
                                         interpolation=weights.interpolation)
            self.name = "efficientnet_lite0.imagenet"
        else:
            from cnnkit.runtime.model import load_run_model

            loaded = load_run_model(run, device="cpu")
            self.base, self.preprocess, self.name = loaded.model.base, loaded.preprocess, f"run {run.name}"
        self.base.eval()

    def __call__(self, paths: list[Path]) -> np.ndarray:
        import torch

        from cnnkit.runtime.inputs import to_batch

        batch, _, _ = to_batch(paths, preprocess=self.preprocess)
        with torch.no_grad():
            x = self.preprocess(torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))))
            return torch.nn.functional.normalize(self.base(x).float(), dim=1).numpy()


# The gallery a user would declare for the www24 brands: name as pages show it, and the brand's public domains.
GALLERY = {"ATT": ("AT&T", "att.com"), "Adobe": ("Adobe", "adobe.com"), "Amazon": ("Amazon", "amazon.com"),
           "Apple": ("Apple", "apple.com"), "BankofAmerica": ("Bank of America", "bankofamerica.com"),
           "Dropbox": ("Dropbox", "dropbox.com"), "Facebook": ("Facebook", "facebook.com"),
           "Google": ("Google", "google.com"), "Microsoft": ("Microsoft", "microsoft.com,live.com"),
           "Outlook": ("Outlook", "outlook.com,live.com"), "WellsFargo": ("Wells Fargo", "wellsfargo.com"),
           "Yahoo": ("Yahoo", "yahoo.com"), "eBay": ("eBay", "ebay.com")}


def penalised_logistic(cs: list[float]) -> object:
    """Logistic regression whose L2 penalty C is chosen among `cs` by 5-fold ROC AUC within the training data.
    Where scikit-learn has them (1.8+), the keywords that keep today's behaviour without FutureWarnings."""
    import inspect

    from sklearn.linear_model import LogisticRegressionCV

    current = {"l1_ratios": (0.0,), "use_legacy_attributes": False}
    accepted = inspect.signature(LogisticRegressionCV).parameters
    return LogisticRegressionCV(Cs=cs, cv=5, scoring="roc_auc", class_weight="balanced", max_iter=5000,
                                **{k: v for k, v in current.items() if k in accepted})


def probe_part(data: Path) -> list[dict[str, object]]:
    """A linear probe: logistic regression on the pretrained Lite0's embeddings (no training of the network), its
    L2 penalty chosen by 5-fold cross-validation (ROC AUC) inside the training collection, tested on the other."""

    from cnnkit.evaluate.binary import binary_metrics

    embed = Embedder()
    sets = {}
    for collection in COLLECTIONS:
        files = [(p, label == "phishing") for label in ("legitimate", "phishing")
                 for p in sorted((data / collection / label).glob("*.jpg"))]
        x = np.concatenate([embed([p for p, _ in files[i : i + 16]]) for i in range(0, len(files), 16)])
        sets[collection] = (x, np.array([y for _, y in files]))
    rows = []
    for train_on, test_on in (COLLECTIONS, COLLECTIONS[::-1]):
        probe = penalised_logistic([0.001, 0.01, 0.1, 1.0, 10.0]).fit(*sets[train_on])
        scores = probe.predict_proba(sets[test_on][0])[:, 1]
        metrics = binary_metrics(scores, sets[test_on][1])
        rows.append({"linear probe, pretrained Lite0": f"{train_on} -> {test_on}", "test pages": len(scores),
                     "C (chosen on train)": float(np.ravel(probe.C_)[0]), "ROC AUC": metrics["roc_auc"],
                     "95% CI": "{:.3f}-{:.3f}".format(*metrics["roc_auc_ci95"])})
    return rows


LOGIN_WORDS = re.compile(r"sign.?in|log.?in|password")


def page_texts(paths: list[Path]) -> list[str]:
    """Each page's OCR text, lower-cased (Tesseract, two pages at a time)."""
    from concurrent.futures import ThreadPoolExecutor

    from cnnkit.apps.phishing.text import read_page

    with ThreadPoolExecutor(2) as pool:
        return [t.text.lower() for t in pool.map(read_page, paths)]


def login_split_aucs(scores: np.ndarray, labels: np.ndarray, texts: list[str]) -> dict[str, str]:
    """ROC AUC (95% interval; legitimate pages) of the phishing pages against all legitimate pages, against those
    that are login pages too (OCR finds sign in, log in or password), and against the others."""
    from cnnkit.evaluate.binary import binary_metrics

    login = np.array([bool(LOGIN_WORDS.search(t)) for t in texts])
    row = {}
    for name, legit in (("all legit", ~labels), ("legit login pages", ~labels & login),
                        ("legit other pages", ~labels & ~login)):
        keep = labels | legit
        metrics = binary_metrics(scores[keep], labels[keep])
        row[f"AUC vs {name} (n)"] = "{:.3f} ({:.2f}-{:.2f}; {})".format(
            metrics["roc_auc"], *metrics["roc_auc_ci95"], int(legit.sum()))
    return row


def words_part(data: Path) -> list[dict[str, object]]:
    """The page's words instead of its pixels: Tesseract OCR, TF-IDF of character 3-5-grams (robust to OCR's
    misreadings), logistic regression with its penalty chosen by 5-fold cross-validation inside the training
    collection, tested on the other. Both collections' legitimate pages are mostly home pages and their phishing
    pages mostly login pages, so the test's legitimate pages are also split by whether OCR finds login words
    (sign in, log in, password): the AUC against each half says whether the model found phishing or login pages."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline

    sets = {}
    for collection in COLLECTIONS:
        files = [(p, label == "phishing") for label in ("legitimate", "phishing")
                 for p in sorted((data / collection / label).glob("*.jpg"))]
        sets[collection] = (page_texts([p for p, _ in files]), np.array([y for _, y in files]))
    rows = []
    for train_on, test_on in (COLLECTIONS, COLLECTIONS[::-1]):
        model = make_pipeline(
            TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=2, sublinear_tf=True),
            penalised_logistic([0.1, 1.0, 10.0, 100.0])).fit(*sets[train_on])
        texts, labels = sets[test_on]
        rows.append({"OCR words": f"{train_on} -> {test_on}", "test pages": len(texts),
                     **login_split_aucs(model.predict_proba(texts)[:, 1], labels, texts)})
    return rows


def split_collection(data: Path, out: Path, *, collections: tuple[str, ...]) -> Path:
    """A folder tree (class subfolders) of the given collections, as symlinks: nothing is copied."""
    for collection in collections:
        for label in ("legitimate", "phishing"):
            (out / label).mkdir(parents=True, exist_ok=True)
            for image in (data / collection / label).glob("*.jpg"):
                (out / label / f"{collection}-{image.name}").symlink_to(image.resolve())
    return out


def classifier_row(
    name: str, train_dir: Path, test_dir: Path, work: Path, settings: dict[str, object], *, login_split: bool = False
) -> dict[str, object]:
    import cnnkit
    from cnnkit.errors import CnnkitError
    from cnnkit.evaluate.binary import binary_metrics, choose_threshold, positive_index

    started = time.perf_counter()
    result = cnnkit.train(f"folder:{train_dir}", model="efficientnet_lite0", pretrained=True, freeze_base=True,
                          finetune_lr=1e-4, input_size=224, resize="top-crop", augment="screenshot", val_split=0.2,
                          test_split=0.0, precision="bf16", device="cpu", quiet=True, out=work / name,
                          overwrite=True, **settings)
    clf = cnnkit.load(result.run_dir, device="cpu")
    index = positive_index(clf.class_names)
    test = sorted(p for p in test_dir.rglob("*.jpg"))
    scores = clf.probabilities(test)[:, index]
    positives = np.array([p.parent.name == "phishing" for p in test])
    val = _validation_scores(result.run_dir, clf, index)
    metrics = binary_metrics(scores, positives)
    row: dict[str, object] = {"train -> test": name, "test pages": len(test),
                              "ROC AUC": metrics["roc_auc"],
                              "95% CI": "{:.3f}-{:.3f}".format(*metrics["roc_auc_ci95"])}
    if login_split:
        row |= login_split_aucs(scores, positives, page_texts(test))
    for target in (0.01, 0.05):
        try:
            chosen = choose_threshold(val[0], val[1], target_fpr=target, positive="phishing")
            flagged = scores >= chosen.threshold
            row[f"TPR@{target:.0%}"] = float((flagged & positives).sum() / positives.sum())
            row[f"FPR@{target:.0%}"] = float((flagged & ~positives).sum() / (~positives).sum())
            row[f"thr@{target:.0%}"] = chosen.threshold
        except CnnkitError:
            row[f"TPR@{target:.0%}"] = f"refused ({int((~val[1]).sum())} val negatives)"
    row["train s"] = time.perf_counter() - started
    return row


def _validation_scores(run: Path, clf: object, index: int) -> tuple[np.ndarray, np.ndarray]:
    """The run's validation split, re-made as training made it, scored."""
    from cnnkit.data.sources import SourceOptions, load_data
    from cnnkit.training.fit import resume_config

    config = resume_config(run)
    bundle = load_data(config.data, options=SourceOptions(preprocess=clf.preprocess, val_split=config.val_split,
                                                          test_split=config.test_split, seed=config.seed))
    assert bundle.val is not None
    scores = clf.probabilities(bundle.val.images.permute(0, 2, 3, 1).numpy())[:, index]  # type: ignore[attr-defined]
    return scores, bundle.val.labels.numpy() == index


def classifier_part(data: Path, work: Path, settings: dict[str, object], folds: int) -> list[dict[str, object]]:
    rows = []
    for train_on, test_on in (COLLECTIONS, COLLECTIONS[::-1]):
        train_dir = split_collection(data, work / f"{train_on}-train", collections=(train_on,))
        test_dir = split_collection(data, work / f"{test_on}-test", collections=(test_on,))
        rows.append(classifier_row(f"{train_on} -> {test_on}", train_dir, test_dir, work, settings,
                                   login_split=True))
        print(rows[-1], flush=True)
    pooled = split_collection(data, work / "pooled", collections=COLLECTIONS)
    files = sorted(pooled.rglob("*.jpg"))
    order = np.random.default_rng(0).permutation(len(files))
    for fold in range(folds):
        held = set(order[fold::folds].tolist())
        train_dir, test_dir = work / f"fold{fold}-train", work / f"fold{fold}-test"
        for i, path in enumerate(files):
            target = (test_dir if i in held else train_dir) / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path.resolve())
        rows.append(classifier_row(f"pooled fold {fold + 1}/{folds}", train_dir, test_dir, work, settings))
        print(rows[-1], flush=True)
    return rows


SOURCES = ("PhishOracle", WWW24, "login-pages")


def source_pages(data: Path) -> dict[str, list[tuple[Path, str, str | None, str | None]]]:
    """Per source: (file, label, brand, page kind) of every page; brands from file names (www24) or the
    login-pages manifest, page kinds (login or home) from that manifest only."""
    from phishing_detector import WWW24_BRANDS

    found: dict[str, list[tuple[Path, str, str | None, str | None]]] = {s: [] for s in SOURCES}
    for row in csv.DictReader((data / "manifest.csv").open()):
        path = data / row["file"]
        brand = WWW24_BRANDS.get(path.stem.split("_")[0]) if row["source"] == WWW24 else None
        found[row["source"]].append((path, row["label"], brand, None))
    for row in csv.DictReader((data / "login-pages" / "manifest.csv").open()):
        found["login-pages"].append((data / row["file"], row["label"],
                                     row["brand"].replace("microsoft_skype", "microsoft"), row["page_kind"]))
    return found


def sources_part(data: Path, work: Path, settings: dict[str, object]) -> list[dict[str, object]]:
    """Leave one source out, over the three collections (login-pages included): train on the other two, test on it.
    Grouped by brand: training drops every page of a brand the test source has pages of, so near-duplicate pages
    of one brand never straddle train and test (PhishOracle's pages carry no brand and cannot be grouped). Reports
    ROC AUC with its bootstrap interval, the same against legitimate login pages only, and the false-alarm rate on
    legitimate login pages at the threshold that catches 90% of the test source's phishing pages (a threshold
    chosen on the test pages themselves: what the rate would be, not a deployable setting)."""
    import cnnkit
    from cnnkit.evaluate.binary import binary_metrics, positive_index
    from cnnkit.evaluate.metrics import wilson_interval

    pages = source_pages(data)
    rows = []
    for test_on in SOURCES:
        test = pages[test_on]
        test_brands = {b for _, _, b, _ in test if b}
        train = [p for s in SOURCES if s != test_on for p in pages[s] if p[2] is None or p[2] not in test_brands]
        train_dir = work / f"not-{test_on}"
        for path, label, _, _ in train:
            target = train_dir / label / f"{path.parent.parent.name}-{path.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path.resolve())
        started = time.perf_counter()
        result = cnnkit.train(f"folder:{train_dir}", model="efficientnet_lite0", pretrained=True, freeze_base=True,
                              finetune_lr=1e-4, input_size=224, resize="top-crop", augment="screenshot",
                              val_split=0.2, test_split=0.0, device="cpu", quiet=True, out=work / f"run-{test_on}",
                              overwrite=True, **settings)
        clf = cnnkit.load(result.run_dir, device="cpu")
        scores = clf.probabilities([p for p, _, _, _ in test])[:, positive_index(clf.class_names)]
        phishing = np.array([label == "phishing" for _, label, _, _ in test])
        login = np.array([kind == "login" for _, _, _, kind in test])
        metrics = binary_metrics(scores, phishing)
        row: dict[str, object] = {"test source": test_on, "train pages (grouped)": len(train),
                                  "test phishing / legit": f"{phishing.sum()} / {(~phishing).sum()}",
                                  "ROC AUC (95% CI)": "{:.3f} ({:.3f}-{:.3f})".format(metrics["roc_auc"],
                                                                                      *metrics["roc_auc_ci95"])}
        against_login = phishing | login
        if (login & ~phishing).sum() >= 5:
            m = binary_metrics(scores[against_login], phishing[against_login])
            row["AUC vs legit login pages"] = "{:.3f} ({:.3f}-{:.3f})".format(m["roc_auc"], *m["roc_auc_ci95"])
            threshold = float(np.quantile(scores[phishing], 0.10))  # 90% of phishing at or above it
            alarms, n = int((scores[login & ~phishing] >= threshold).sum()), int((login & ~phishing).sum())
            low, high = wilson_interval(alarms, n)
            row["FPR on legit login pages at 90% TPR"] = f"{alarms}/{n} = {alarms / n:.2f} ({low:.2f}-{high:.2f})"
        else:
            row["AUC vs legit login pages"] = "no labelled login pages"
        row["s"] = time.perf_counter() - started
        rows.append(row)
        print(row, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--part", choices=("detector", "sources", "classifier", "probe", "words", "all"),
                        default="all")
    parser.add_argument("--run", type=Path, action="append", default=[], help="also embed with this run's base")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--head-hidden", type=int, default=128, help="the new head's hidden units (0: linear)")
    parser.add_argument("--folds", type=int, default=5, help="pooled folds (0: cross-source only)")
    parser.add_argument("--crop-browser-frame", action="store_true", help="train and score with frames cropped")
    parser.add_argument("--first-screen", action="store_true", help="train and score in one capture format")
    parser.add_argument("--pages-csv", type=Path, help="detector: write each page's brand, score and words here")
    args = parser.parse_args()
    manifest = list(csv.DictReader((args.data / "manifest.csv").open()))
    print(f"{len(manifest)} screenshots in {args.data}")
    if args.part in ("detector", "all"):
        from phishing_detector import detector_part

        with tempfile.TemporaryDirectory() as work:
            for rows in detector_part(args.data, Path(work), pages_csv=args.pages_csv):
                print(table(rows))
    if args.part in ("probe", "all"):
        print(table(probe_part(args.data)))
    if args.part in ("words", "all"):
        print(table(words_part(args.data)))
    if args.part in ("sources", "all"):
        with tempfile.TemporaryDirectory() as work:
            settings = {"epochs": args.epochs, "finetune_epochs": args.finetune_epochs, "head_hidden": args.head_hidden}
            print(table(sources_part(args.data, Path(work), settings)))
    if args.part in ("classifier", "all"):
        work = Path(tempfile.mkdtemp(prefix="cnnkit-phishing-real-"))
        try:
            settings = {"epochs": args.epochs, "finetune_epochs": args.finetune_epochs,
                        "head_hidden": args.head_hidden, "crop_browser_frame": args.crop_browser_frame,
                        "first_screen": args.first_screen}
            print(table(classifier_part(args.data, work, settings, args.folds)))
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
