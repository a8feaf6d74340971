"""Two-class evaluation: ROC and PR curves, TPR at low FPR, and a decision threshold chosen for a target FPR.

Security users care about catching the positive class (e.g. phishing) at a very low false-positive rate, so the
threshold is chosen on validation data for a target FPR rather than left at 0.5.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnkit.errors import CnnkitError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REPORTED_FPRS = (0.01, 0.001)
NEGATIVES_PER_FPR = 3  # a target FPR F is estimated from at least 3 / F negatives: a few false positives, not 0
BOOTSTRAP_RESAMPLES = 1000
POSITIVE_NAMES = ("phishing", "positive", "malicious", "fraud", "1", "yes", "true")


@dataclass(frozen=True)
class Threshold:
    """Predict `positive` when its probability >= `threshold`."""

    positive: str
    threshold: float
    target_fpr: float
    val_fpr: float
    val_tpr: float
    calibration: str = "validation split"  # the data the threshold was chosen on
    negatives: int = 0
    positives: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def positive_index(class_names: list[str], positive: str | None = None) -> int:
    """Index of the positive class: the one named, else a conventional name, else the second class."""
    if len(class_names) != 2:
        raise CnnkitError(f"binary evaluation needs 2 classes, this run has {len(class_names)}")
    if positive is not None:
        if positive not in class_names:
            raise CnnkitError(f"--positive {positive!r} is not a class; classes: {', '.join(class_names)}")
        return class_names.index(positive)
    for index, name in enumerate(class_names):
        if name.lower() in POSITIVE_NAMES:
            return index
    return 1


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """The best true-positive rate reachable with a false-positive rate at most `target`."""
    allowed = fpr <= target + 1e-12
    return float(tpr[allowed].max()) if allowed.any() else 0.0


def required_negatives(target_fpr: float) -> int:
    return int(np.ceil(NEGATIVES_PER_FPR / target_fpr - 1e-9))


def choose_threshold(scores: np.ndarray, positives: np.ndarray, *, target_fpr: float, positive: str) -> Threshold:
    """The lowest threshold (highest TPR) whose FPR on these scores stays within `target_fpr`.

    Refused when there are too few negatives to estimate that FPR: with ten negatives, a 1% FPR is a guess."""
    if positives.all() or not positives.any():
        raise CnnkitError("choosing a threshold needs validation data with both classes")
    negatives = int((~positives).sum())
    if negatives < required_negatives(target_fpr):
        raise CnnkitError(
            f"--target-fpr {target_fpr:g} cannot be estimated from {negatives} negative (non-{positive}) images: it "
            f"takes at least {required_negatives(target_fpr)} ({NEGATIVES_PER_FPR} / FPR); with {negatives} the "
            f"lowest target is {NEGATIVES_PER_FPR / negatives:.2g}. Give more negatives with --calibration-data "
            "FOLDER, or a larger --target-fpr")
    from sklearn.metrics import roc_curve  # scikit-learn loads where it is used: a second off every command's start

    fpr, tpr, thresholds = roc_curve(positives, scores)
    allowed = np.flatnonzero(fpr <= target_fpr + 1e-12)
    best = allowed[np.argmax(tpr[allowed])]
    threshold = float(min(thresholds[best], 1.0))  # roc_curve's first threshold is +inf: nothing flagged
    return Threshold(positive=positive, threshold=threshold, target_fpr=target_fpr, val_fpr=float(fpr[best]),
                     val_tpr=float(tpr[best]), negatives=negatives, positives=int(positives.sum()))


def bootstrap_ci(scores: np.ndarray, positives: np.ndarray, statistic: Any, *, seed: int = 0) -> list[float]:
    """95% percentile-bootstrap interval of `statistic(scores, positives)`, resampling within each class (so every
    resample has both), seeded."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(positives), np.flatnonzero(~positives)
    values = []
    for _ in range(BOOTSTRAP_RESAMPLES):
        index = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        values.append(statistic(scores[index], positives[index]))
    low, high = np.percentile(values, [2.5, 97.5])
    return [float(low), float(high)]


def rank_auc(scores: np.ndarray, positives: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney U statistic: the chance that a random positive scores above a random negative
    (ties count a half), from the scores' average ranks. The same figure as scikit-learn's roc_auc_score, without
    its input validation, which made 1,000 bootstrap resamples take seconds."""
    from scipy.stats import rankdata

    n_pos = int(positives.sum())
    n_neg = len(positives) - n_pos
    ranks = rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def binary_metrics(scores: np.ndarray, positives: np.ndarray, *, threshold: float = 0.5) -> dict[str, Any]:
    """AUCs, TPR at 1% and 0.1% FPR (None where the negatives cannot support that FPR: fewer than 3 / FPR), and the
    confusion counts at `threshold` with exact binomial intervals for its TPR, FPR and precision."""
    from cnnkit.evaluate.metrics import exact_interval

    both = positives.any() and not positives.all()
    predicted = scores >= threshold
    tp = int((predicted & positives).sum())
    fp = int((predicted & ~positives).sum())
    tn = int((~predicted & ~positives).sum())
    fn = int((~predicted & positives).sum())
    result: dict[str, Any] = {
        "threshold": threshold,
        "confusion_at_threshold": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
        "tpr_at_threshold": tp / max(tp + fn, 1),
        "fpr_at_threshold": fp / max(fp + tn, 1),
        "precision_at_threshold": tp / (tp + fp) if tp + fp else None,
        "tpr_at_threshold_ci95": exact_interval(tp, tp + fn),
        "fpr_at_threshold_ci95": exact_interval(fp, fp + tn),
    }
    if tp + fp:
        result["precision_at_threshold_ci95"] = exact_interval(tp, tp + fp)
    if both:
        from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

        fpr, tpr, _ = roc_curve(positives, scores)
        result["roc_auc"] = float(roc_auc_score(positives, scores))
        result["roc_auc_ci95"] = bootstrap_ci(scores, positives, rank_auc)
        result["pr_auc"] = float(average_precision_score(positives, scores))
        for target in REPORTED_FPRS:
            supported = fp + tn >= required_negatives(target)
            result[f"tpr_at_fpr_{target:g}"] = tpr_at_fpr(fpr, tpr, target) if supported else None
            result[f"negatives_for_fpr_{target:g}"] = required_negatives(target)
    return result


def roc_pr_figure(scores: np.ndarray, positives: np.ndarray, *, threshold: float | None = None) -> Figure:
    """ROC (log-scaled FPR, where the low-FPR region is readable) beside the precision-recall curve."""
    from matplotlib.figure import Figure
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    figure = Figure(figsize=(10, 4))
    roc_ax, pr_ax = figure.subplots(1, 2)
    fpr, tpr, thresholds = roc_curve(positives, scores)
    roc_ax.plot(np.maximum(fpr, 1e-4), tpr, label=f"AUC {roc_auc_score(positives, scores):.4f}")
    roc_ax.set_xscale("log")
    roc_ax.set_xlim(1e-4, 1)
    for target in REPORTED_FPRS:
        roc_ax.axvline(target, color="grey", linestyle=":", linewidth=1)
    if threshold is not None:
        index = np.argmin(np.abs(np.minimum(thresholds, 1.0) - threshold))
        roc_ax.plot(max(fpr[index], 1e-4), tpr[index], "o", color="red", label=f"threshold {threshold:.3f}")
    roc_ax.set_xlabel("false-positive rate (log)")
    roc_ax.set_ylabel("true-positive rate")
    roc_ax.set_title("ROC")
    roc_ax.legend(loc="lower right")
    precision, recall, _ = precision_recall_curve(positives, scores)
    pr_ax.plot(recall, precision, label=f"AP {average_precision_score(positives, scores):.4f}")
    pr_ax.set_xlabel("recall")
    pr_ax.set_ylabel("precision")
    pr_ax.set_title("Precision-recall")
    pr_ax.legend(loc="lower left")
    for ax in (roc_ax, pr_ax):
        ax.grid(alpha=0.3)
    return figure
