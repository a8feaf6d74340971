"""Classification metrics: macro averages over the classes the data holds, and the table that says so."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit.evaluate.metrics import calibration, classification_metrics, format_table, selective


def test_a_class_without_images_is_left_out_of_the_macro_averages_and_named() -> None:
    # Three classes, images of the first two only; every image right except one 'a' given to the absent 'c'.
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    predicted = np.array([0, 0, 0, 2, 1, 1, 1, 1])
    probs = np.eye(3)[predicted] * 0.8 + 0.1
    metrics = classification_metrics(probs, labels, class_names=["a", "b", "c"], top_k=None)
    assert metrics["classes_without_images"] == ["c"]
    assert metrics["macro_recall"] == pytest.approx((0.75 + 1.0) / 2)  # not (0.75 + 1 + 0) / 3
    assert metrics["macro_precision"] == pytest.approx(1.0)  # 'c' took one image wrongly: its precision is 0, apart
    assert metrics["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    table = format_table(metrics).splitlines()
    assert table[3].split() == ["c", "0.000", "-", "-", "0"]
    assert table[5] == "(no images of c here: the macro averages are over the other 2 classes)"
    everyone = classification_metrics(np.eye(3)[[0, 1, 2]], np.array([0, 1, 2]), class_names=["a", "b", "c"],
                                      top_k=None)
    assert "classes_without_images" not in everyone and everyone["macro_recall"] == 1.0


def test_the_most_confused_pairs_are_the_largest_off_diagonal_cells() -> None:
    from cnnkit.evaluate.metrics import most_confused

    matrix = [[50, 3, 9], [1, 40, 0], [7, 0, 30]]
    assert most_confused(matrix, ["cat", "dog", "fox"]) == [("cat", "fox", 9), ("fox", "cat", 7), ("cat", "dog", 3)]
    assert most_confused([[5, 0], [0, 5]], ["a", "b"]) == []
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    table = format_table(classification_metrics(probs, np.array([0, 0, 1]), class_names=["a", "b"], top_k=None))
    assert "Most confused (true -> predicted): a -> b 1, b -> a 1" in table


def test_accuracy_comes_with_its_95_percent_interval() -> None:
    """12 test images at 4 right say little (0.14-0.61); 10,000 at 70.66% pin it within a point."""
    from cnnkit.evaluate.metrics import wilson_interval

    assert wilson_interval(4, 12) == pytest.approx((0.1381, 0.6094), abs=1e-4)
    assert wilson_interval(7066, 10000) == pytest.approx((0.6976, 0.7154), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0) and wilson_interval(10, 10)[1] == 1.0
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    metrics = classification_metrics(probs, np.array([0, 1, 1, 1]), class_names=["a", "b"], top_k=None)
    assert metrics["accuracy"] == 0.75 and metrics["accuracy_ci95"] == pytest.approx(wilson_interval(3, 4))
    assert "Accuracy: 0.7500 (95% interval 0.3006-0.9544)" in format_table(metrics)


def test_learning_curves_mark_the_kept_epoch_and_the_start_of_fine_tuning() -> None:
    from cnnkit.evaluate.plots import learning_curves

    history = [{"epoch": e, "phase": "head" if e < 3 else "finetune", "loss": 1 / e, "accuracy": e / 4,
                "val_loss": 1 / e, "val_accuracy": e / 5} for e in (1, 2, 3, 4)]
    figure = learning_curves(history, kept_epoch=2)
    for ax in figure.axes:
        marks = {line.get_label(): line.get_xdata()[0] for line in ax.get_lines()}
        assert marks["kept: epoch 2"] == 2 and marks["fine-tuning"] == 2.5


def test_calibration_measures_the_gap_between_confidence_and_accuracy() -> None:
    # Every image at 90% confidence, 70% of them right: over-confident by 0.2, in one bin.
    probs = np.tile([0.9, 0.1], (100, 1))
    labels = np.array([0] * 70 + [1] * 30)
    cal = calibration(probs, labels)
    assert cal["ece"] == pytest.approx(0.2) and cal["mean_confidence"] == pytest.approx(0.9)
    assert cal["log_loss"] == pytest.approx(-(0.7 * np.log(0.9) + 0.3 * np.log(0.1)))
    assert cal["bins"] == [{"low": pytest.approx(13 / 15), "high": pytest.approx(14 / 15), "count": 100,
                            "confidence": pytest.approx(0.9), "accuracy": pytest.approx(0.7)}]
    table = format_table(classification_metrics(probs, labels, class_names=["a", "b"], top_k=None))
    assert "Calibration: ECE 0.2000 (mean confidence 0.9000: over-confident; rough: 100 images over 15 bins)" in table
    # Confidence that matches accuracy in every bin: an ECE near 0, over many images.
    rng = np.random.default_rng(0)
    p = rng.uniform(0.5, 1.0, 20_000)
    right = rng.uniform(size=p.size) < p
    labels = np.where(right, 0, 1)
    calibrated = calibration(np.stack([p, 1 - p], axis=1), labels)
    assert calibrated["ece"] < 0.015
    assert sum(b["count"] for b in calibrated["bins"]) == 20_000


def test_selective_accuracy_answers_the_most_confident_share_first() -> None:
    """Ten images: the five most confident right, the rest half wrong; a NaN row is the least confident."""
    confidence = np.array([0.99, 0.97, 0.95, 0.9, 0.85, 0.8, 0.7, 0.65, 0.6, np.nan])
    probs = np.stack([confidence, 1 - confidence], axis=1)
    labels = np.array([0, 0, 0, 0, 0, 1, 0, 1, 0, 0])  # right, except at 0.8 and 0.65 (and the NaN)
    rows = {row["coverage"]: row for row in selective(probs, labels)}
    assert rows[0.5] == {"coverage": 0.5, "images": 5, "accuracy": 1.0, "min_confidence": 0.85}
    assert rows[0.8]["images"] == 8 and rows[0.8]["accuracy"] == pytest.approx(6 / 8)
    assert rows[0.9]["accuracy"] == pytest.approx(7 / 9) and rows[0.9]["min_confidence"] == 0.6
    metrics = classification_metrics(probs, labels, class_names=["a", "b"], top_k=None)
    assert metrics["selective"] == selective(probs, labels)
    assert "Answering only the most confident: 90% of images at accuracy 0.7778 (confidence >= 0.600)" in \
        format_table(metrics)
