"""Classification metrics from probabilities and labels (scikit-learn does the counting)."""

from __future__ import annotations

from typing import Any

import numpy as np


def finite_probabilities(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities with non-finite rows replaced by a uniform guess, and the mask of those rows.

    A diverged model outputs NaN; such rows count as wrong (never as a crash or a silent 'right')."""
    bad = ~np.isfinite(probs).all(axis=1)
    if bad.any():
        probs = probs.copy()
        probs[bad] = 1.0 / probs.shape[1]
    return probs, bad


def wilson_interval(hits: int, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion (hits of n; scipy): unlike the normal approximation it stays
    within [0, 1] and is honest for small n and for proportions near 0 or 1 (12 test images at 0.33: 0.14-0.61)."""
    if n == 0:
        return 0.0, 1.0
    from scipy.stats import binomtest  # SciPy and scikit-learn load where used: a second off every command's start

    interval = binomtest(hits, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(interval.low), float(interval.high)


def exact_interval(hits: int, n: int) -> tuple[float, float]:
    """The exact (Clopper-Pearson) 95% interval of a proportion, hits of n: for rates near 0 or 1 on few cases, where
    0 false positives of 20 negatives is 0-0.17, not "0.000-0.000"."""
    if n == 0:
        return 0.0, 1.0
    from scipy.stats import binomtest

    interval = binomtest(hits, n).proportion_ci(confidence_level=0.95, method="exact")
    return float(interval.low), float(interval.high)


CALIBRATION_BINS = 15  # equal-width confidence bins of the expected calibration error (Guo et al. 2017)
ROUGH_CALIBRATION = 1000  # below this many images the ECE is flagged as rough: few per bin, biased upward


def calibration(probs: np.ndarray, labels: np.ndarray, *, bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """How far the top-1 probability is from the accuracy: the expected calibration error (the images-weighted mean
    gap between confidence and accuracy over equal-width confidence bins), mean confidence, the negative log-
    likelihood of the true class (log loss), and the bins for a reliability diagram. Non-finite rows count as a
    uniform guess, as everywhere."""
    probs, _ = finite_probabilities(probs)
    confidence = probs.max(axis=1)
    right = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            conf, acc = float(confidence[inside].mean()), float(right[inside].mean())
            ece += inside.mean() * abs(conf - acc)
            table.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": int(inside.sum()),
                          "confidence": conf, "accuracy": acc})
    true_class = probs[np.arange(len(labels)), labels] if len(labels) else np.zeros(0)
    return {"ece": float(ece), "mean_confidence": float(confidence.mean()) if len(labels) else 0.0,
            "log_loss": float(-np.log(np.clip(true_class, 1e-12, 1.0)).mean()) if len(labels) else 0.0,
            "bins": table}


COVERAGES = (0.9, 0.8, 0.5)  # shares of the images the model answers, the most confident first


def selective(probs: np.ndarray, labels: np.ndarray) -> list[dict[str, Any]]:
    """The accuracy when the model answers only its most confident share of the images and leaves the rest to a
    person (the risk-coverage curve at a few points; Geifman and El-Yaniv, 2017): per coverage, the images
    answered, their accuracy, and the lowest confidence among them. Non-finite rows are the least confident."""
    if not len(labels):
        return []
    finite, bad = finite_probabilities(probs)
    confidence = np.where(bad, -1.0, finite.max(axis=1))
    order = np.argsort(-confidence, kind="stable")
    right = ((finite.argmax(axis=1) == labels) & ~bad)[order]
    rows = []
    for coverage in COVERAGES:
        answered = max(1, int(np.ceil(coverage * len(labels))))
        rows.append({"coverage": coverage, "images": answered, "accuracy": float(right[:answered].mean()),
                     "min_confidence": float(confidence[order][answered - 1])})
    return rows


def classification_metrics(
    probs: np.ndarray, labels: np.ndarray, *, class_names: list[str], top_k: int | None
) -> dict[str, Any]:
    """Top-1 and top-k accuracy (top_k None: none), per-class precision/recall/F1/support, macro averages and the
    confusion matrix. Non-finite outputs count as wrong and are reported as `non_finite_outputs`."""
    n_classes = len(class_names)
    probs, bad = finite_probabilities(probs)
    predicted = np.where(bad, -1, probs.argmax(axis=1))  # -1: no class, so always wrong
    non_finite = int(bad.sum())
    k = min(top_k or 1, n_classes)
    top = np.argsort(-probs, axis=1)[:, :k]
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=np.arange(n_classes), zero_division=0)
    per_class = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
    }
    result: dict[str, Any] = {
        "num_samples": int(len(labels)),
        "accuracy": float((predicted == labels).mean()) if len(labels) else 0.0,
        # what the test images allow one to say: how far the accuracy on new images may lie from this figure
        "accuracy_ci95": wilson_interval(int((predicted == labels).sum()), int(len(labels))),
    }
    if top_k:
        result[f"top{top_k}_accuracy"] = float((top == labels[:, None]).any(axis=1).mean()) if len(labels) else 0.0
    if non_finite:
        result["non_finite_outputs"] = non_finite
    # A class with no images here has no recall: counted as 0 it would pull every macro average down (by a third
    # with one class in three absent). Macro averages are over the classes the data has, and the others are named.
    present = support > 0 if support.any() else np.ones(n_classes, dtype=bool)
    if not present.all():
        result["classes_without_images"] = [name for name, here in zip(class_names, present) if not here]
    return result | {
        "macro_precision": float(precision[present].mean()),
        "macro_recall": float(recall[present].mean()),
        "macro_f1": float(f1[present].mean()),
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(labels, predicted, labels=np.arange(n_classes)).tolist(),
        "calibration": calibration(probs, labels),
        "selective": selective(probs, labels),
    }


def top_k_of(metrics: dict[str, Any]) -> int | None:
    """The k of the `topK_accuracy` entry, if there is one."""
    return next((int(key[3:-9]) for key in metrics if key.startswith("top") and key.endswith("_accuracy")), None)


def most_confused(matrix: list[list[int]], class_names: list[str], *, limit: int = 3) -> list[tuple[str, str, int]]:
    """The `limit` largest off-diagonal cells of a confusion matrix: (true class, predicted class, images)."""
    cells = [(count, i, j) for i, row in enumerate(matrix) for j, count in enumerate(row) if i != j and count]
    return [(class_names[i], class_names[j], count) for count, i, j in sorted(cells, key=lambda c: -c[0])[:limit]]


def format_table(metrics: dict[str, Any]) -> str:
    """Per-class table with the headline figures, for the terminal."""
    per_class = metrics["per_class"]
    width = max(12, *(len(n) for n in per_class)) + 2
    lines = [f"{'class':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    absent = set(metrics.get("classes_without_images", []))
    for name, row in per_class.items():
        # Without images a class has no recall or F1; its precision still counts the images wrongly given it.
        recall, f1 = (f"{'-':>10}", f"{'-':>10}") if name in absent else (f"{row['recall']:>10.3f}",
                                                                          f"{row['f1']:>10.3f}")
        lines.append(f"{name:<{width}}{row['precision']:>10.3f}{recall}{f1}{row['support']:>10d}")
    lines.append(f"{'macro avg':<{width}}{metrics['macro_precision']:>10.3f}{metrics['macro_recall']:>10.3f}"
                 f"{metrics['macro_f1']:>10.3f}{metrics['num_samples']:>10d}")
    if absent:
        lines.append(f"(no images of {', '.join(sorted(absent))} here: the macro averages are over the other "
                     f"{len(per_class) - len(absent)} classes)")
    lines.append("")
    top_k = top_k_of(metrics)
    low, high = metrics.get("accuracy_ci95", (None, None))
    headline = f"Accuracy: {metrics['accuracy']:.4f}" + (f" (95% interval {low:.4f}-{high:.4f})" if low is not None
                                                        else "")
    if top_k:
        headline += f"   Top-{top_k} accuracy: {metrics[f'top{top_k}_accuracy']:.4f}"
    lines.append(headline)
    confused = most_confused(metrics["confusion_matrix"], list(per_class))
    if confused:
        lines.append("Most confused (true -> predicted): " + ", ".join(f"{t} -> {p} {n}" for t, p, n in confused))
    if "calibration" in metrics:
        lines.append(_calibration_line(metrics["calibration"], accuracy=metrics["accuracy"],
                                       images=metrics["num_samples"])
                     + (f", with temperature {metrics['temperature']:.4f}" if "temperature" in metrics else ""))
    if metrics.get("selective"):
        lines.append(selective_line(metrics["selective"]))
    if metrics.get("non_finite_outputs"):
        lines.append(f"WARNING: {metrics['non_finite_outputs']} of {metrics['num_samples']} outputs were NaN or "
                     "infinite (a diverged model); they count as wrong")
    binary = metrics.get("binary")
    if binary:
        lines.append("")
        lines.append(f"Positive class: {binary['positive']}")
        if "roc_auc" in binary:
            lines.append(f"ROC AUC: {binary['roc_auc']:.4f}{_ci(binary, 'roc_auc_ci95')}   "
                         f"PR AUC: {binary['pr_auc']:.4f}   "
                         f"TPR at 1% FPR: {_tpr_at(binary, 0.01)}   TPR at 0.1% FPR: {_tpr_at(binary, 0.001)}")
        c = binary["confusion_at_threshold"]
        lines.append(f"At threshold {binary['threshold']:.4f}: TPR {binary['tpr_at_threshold']:.4f}"
                     f"{_ci(binary, 'tpr_at_threshold_ci95')}, FPR {binary['fpr_at_threshold']:.4f}"
                     f"{_ci(binary, 'fpr_at_threshold_ci95')}, precision {_precision(binary)} "
                     f"(tp {c['tp']}, fp {c['fp']}, tn {c['tn']}, fn {c['fn']}; exact binomial intervals)")
    return "\n".join(lines)


def selective_line(rows: list[dict[str, Any]]) -> str:
    return "Answering only the most confident: " + ", ".join(
        f"{row['coverage']:.0%} of images at accuracy {row['accuracy']:.4f} (confidence >= {row['min_confidence']:.3f})"
        for row in rows)


def _tpr_at(binary: dict[str, Any], target: float) -> str:
    value = binary.get(f"tpr_at_fpr_{target:g}")
    if value is None:
        return f"unsupported ({binary['confusion_at_threshold']['fp'] + binary['confusion_at_threshold']['tn']} " \
               f"negatives; {target:g} FPR needs {binary.get(f'negatives_for_fpr_{target:g}')})"
    return f"{value:.4f}"


def _precision(binary: dict[str, Any]) -> str:
    if binary.get("precision_at_threshold") is None:
        return "undefined (nothing flagged)"
    return f"{binary['precision_at_threshold']:.4f}{_ci(binary, 'precision_at_threshold_ci95')}"


def _ci(metrics: dict[str, Any], key: str) -> str:
    return f" (95% CI {metrics[key][0]:.3f}-{metrics[key][1]:.3f})" if key in metrics else ""


def _calibration_line(cal: dict[str, Any], *, accuracy: float, images: int) -> str:
    gap = cal["mean_confidence"] - accuracy
    lean = "over-confident" if gap > 0.01 else "under-confident" if gap < -0.01 else "confidence matches accuracy"
    rough = (f"; rough: {images} images over {CALIBRATION_BINS} bins" if images < ROUGH_CALIBRATION else "")
    return (f"Calibration: ECE {cal['ece']:.4f} (mean confidence {cal['mean_confidence']:.4f}: {lean}{rough}), "
            f"log loss {cal['log_loss']:.4f}")
