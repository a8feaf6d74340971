"""Classification metrics from probabilities and labels (scikit-learn does the counting)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


def classification_metrics(
    probs: np.ndarray, labels: np.ndarray, *, class_names: list[str], top_k: int
) -> dict[str, Any]:
    """Top-1 and top-k accuracy, per-class precision/recall/F1/support, macro averages and the confusion matrix."""
    n_classes = len(class_names)
    predicted = probs.argmax(axis=1)
    k = min(top_k, n_classes)
    top = np.argsort(-probs, axis=1)[:, :k]
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=np.arange(n_classes), zero_division=0)
    per_class = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
    }
    return {
        "num_samples": int(len(labels)),
        "accuracy": float((predicted == labels).mean()) if len(labels) else 0.0,
        f"top{top_k}_accuracy": float((top == labels[:, None]).any(axis=1).mean()) if len(labels) else 0.0,
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(labels, predicted, labels=np.arange(n_classes)).tolist(),
    }


def format_table(metrics: dict[str, Any], *, top_k: int) -> str:
    """Per-class table with the headline figures, for the terminal."""
    per_class = metrics["per_class"]
    width = max(12, *(len(n) for n in per_class)) + 2
    lines = [f"{'class':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for name, row in per_class.items():
        lines.append(f"{name:<{width}}{row['precision']:>10.3f}{row['recall']:>10.3f}{row['f1']:>10.3f}"
                     f"{row['support']:>10d}")
    lines.append(f"{'macro avg':<{width}}{metrics['macro_precision']:>10.3f}{metrics['macro_recall']:>10.3f}"
                 f"{metrics['macro_f1']:>10.3f}{metrics['num_samples']:>10d}")
    lines.append("")
    lines.append(f"Accuracy: {metrics['accuracy']:.4f}   Top-{top_k} accuracy: {metrics[f'top{top_k}_accuracy']:.4f}")
    binary = metrics.get("binary")
    if binary:
        lines.append("")
        lines.append(f"Positive class: {binary['positive']}")
        if "roc_auc" in binary:
            lines.append(f"ROC AUC: {binary['roc_auc']:.4f}   PR AUC: {binary['pr_auc']:.4f}   "
                         f"TPR at 1% FPR: {binary['tpr_at_fpr_0.01']:.4f}   "
                         f"TPR at 0.1% FPR: {binary['tpr_at_fpr_0.001']:.4f}")
        c = binary["confusion_at_threshold"]
        lines.append(f"At threshold {binary['threshold']:.4f}: TPR {binary['tpr_at_threshold']:.4f}, "
                     f"FPR {binary['fpr_at_threshold']:.4f} (tp {c['tp']}, fp {c['fp']}, tn {c['tn']}, fn {c['fn']})")
    return "\n".join(lines)
