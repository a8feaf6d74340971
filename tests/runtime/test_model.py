"""A run loaded for inference in PyTorch."""

from pathlib import Path

import numpy as np

from cnnkit.runtime.model import load_run_model


def test_probabilities_come_in_batches_and_agree_with_one_pass(exported_run: Path) -> None:
    classifier = load_run_model(exported_run, device="cpu")
    images = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    classifier.batch_size = 10
    whole = classifier.probabilities(images)
    classifier.batch_size = 3  # four passes, the last one of a single image
    np.testing.assert_allclose(classifier.probabilities(images), whole, atol=1e-5)
    assert classifier.probabilities(images[:0]).shape == (0, len(classifier.class_names))
    classifier.batch_size = 0
    classifier.probabilities(images[:1])
    assert classifier.batch_size == 256  # a 32-px model's layers are far under the memory-map threshold
