import numpy as np
import pytest

from cnnkit.errors import CnnkitError
from cnnkit.evaluate.binary import binary_metrics, choose_threshold, positive_index


def scores_and_labels(seed: int = 0, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    positives = rng.random(n) < 0.4
    scores = np.clip(np.where(positives, rng.normal(0.75, 0.15, n), rng.normal(0.3, 0.15, n)), 0, 1)
    return scores, positives


def test_threshold_meets_the_target_fpr_with_the_best_tpr() -> None:
    scores, positives = scores_and_labels(n=8000)  # 0.1% FPR needs 3,000 negatives
    for target in (0.1, 0.01, 0.001):
        chosen = choose_threshold(scores, positives, target_fpr=target, positive="phishing")
        flagged = scores >= chosen.threshold
        fpr = (flagged & ~positives).sum() / (~positives).sum()
        tpr = (flagged & positives).sum() / positives.sum()
        assert fpr <= target and tpr == pytest.approx(chosen.val_tpr)
        # no threshold at all does better: within the target FPR, none reaches a higher TPR
        for t in np.unique(scores):
            at = scores >= t
            if (at & ~positives).sum() / (~positives).sum() <= target:
                assert (at & positives).sum() / positives.sum() <= tpr + 1e-12


def test_binary_metrics_report_aucs_and_low_fpr_tpr() -> None:
    scores, positives = scores_and_labels(1, n=8000)  # 0.1% FPR needs 3,000 negatives
    metrics = binary_metrics(scores, positives, threshold=0.5)
    assert 0.9 < metrics["roc_auc"] <= 1.0 and 0.8 < metrics["pr_auc"] <= 1.0
    assert metrics["tpr_at_fpr_0.001"] <= metrics["tpr_at_fpr_0.01"] <= 1.0
    c = metrics["confusion_at_threshold"]
    assert c["tp"] + c["fp"] + c["tn"] + c["fn"] == len(scores)


def test_tpr_at_an_fpr_the_negatives_cannot_support_is_not_reported() -> None:
    scores, positives = scores_and_labels(1, n=2000)  # about 1,200 negatives: 1% is supported, 0.1% is not
    metrics = binary_metrics(scores, positives, threshold=0.5)
    assert metrics["tpr_at_fpr_0.01"] is not None and metrics["tpr_at_fpr_0.001"] is None
    assert metrics["negatives_for_fpr_0.001"] == 3000
    perfect = binary_metrics(np.array([0.1, 0.2, 0.8, 0.9]), np.array([False, False, True, True]))
    assert perfect["roc_auc"] == 1.0 and perfect["tpr_at_fpr_0.01"] is None


def test_rates_at_the_threshold_carry_exact_intervals_that_are_never_zero_width() -> None:
    from cnnkit.evaluate.metrics import classification_metrics, format_table

    # 0 false positives of 20 negatives: the exact interval is 0-0.168, not 0.000-0.000
    scores = np.array([0.1] * 20 + [0.9] * 10)
    positives = np.array([False] * 20 + [True] * 10)
    metrics = binary_metrics(scores, positives, threshold=0.5)
    low, high = metrics["fpr_at_threshold_ci95"]
    assert low == 0.0 and high == pytest.approx(0.168, abs=1e-3)
    assert metrics["precision_at_threshold"] == 1.0 and metrics["precision_at_threshold_ci95"][0] < 0.75
    probabilities = np.stack([1 - scores, scores], axis=1)
    table = classification_metrics(probabilities, positives.astype(int), class_names=["legitimate", "phishing"],
                                   top_k=None)
    text = format_table({**table, "binary": {"positive": "phishing", **metrics}})
    assert "FPR 0.0000 (95% CI 0.000-0.168)" in text and "TPR at 1% FPR: unsupported (20 negatives; 0.01 FPR " \
        "needs 300)" in text


def test_positive_class_resolution() -> None:
    assert positive_index(["legitimate", "phishing"]) == 1
    assert positive_index(["phishing", "zzz"]) == 0
    assert positive_index(["cat", "dog"]) == 1
    assert positive_index(["cat", "dog"], "cat") == 0
    with pytest.raises(CnnkitError, match="not a class"):
        positive_index(["cat", "dog"], "bird")
    with pytest.raises(CnnkitError, match="needs 2 classes"):
        positive_index(["a", "b", "c"])
    with pytest.raises(CnnkitError, match="both classes"):
        choose_threshold(np.array([0.2, 0.4]), np.array([False, False]), target_fpr=0.01, positive="x")


def test_a_target_fpr_needs_enough_negatives() -> None:
    scores, positives = scores_and_labels(n=40)  # about 24 negatives
    negatives = int((~positives).sum())
    with pytest.raises(CnnkitError, match=f"cannot be estimated from {negatives} negative .* at least 300"):
        choose_threshold(scores, positives, target_fpr=0.01, positive="phishing")
    chosen = choose_threshold(scores, positives, target_fpr=0.15, positive="phishing")
    assert chosen.negatives == negatives and chosen.positives == len(scores) - negatives


def test_bootstrap_intervals_hold_the_estimate_and_narrow_with_more_data() -> None:
    small = binary_metrics(*scores_and_labels(2, n=100), threshold=0.5)
    large = binary_metrics(*scores_and_labels(2, n=4000), threshold=0.5)
    for metrics in (small, large):
        low, high = metrics["roc_auc_ci95"]
        assert low <= metrics["roc_auc"] <= high
        low, high = metrics["tpr_at_threshold_ci95"]
        assert low <= metrics["tpr_at_threshold"] <= high
    width = lambda m: m["roc_auc_ci95"][1] - m["roc_auc_ci95"][0]  # noqa: E731
    assert width(large) < width(small) / 3


def test_the_rank_auc_is_scikit_learns_roc_auc_ties_included() -> None:
    from sklearn.metrics import roc_auc_score

    from cnnkit.evaluate.binary import rank_auc

    rng = np.random.default_rng(0)
    for scores in (rng.random(200), np.round(rng.random(200), 1)):  # the second has many ties
        positives = rng.random(200) < 0.3
        assert rank_auc(scores, positives) == pytest.approx(roc_auc_score(positives, scores), abs=1e-12)
