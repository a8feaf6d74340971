"""Temperature scaling on CIFAR-10: how calibrated the tutorial CNN is, trained three ways, before and after
`cnnkit calibrate` (a temperature fitted on the 5,000 validation images), measured on the 10,000 test images.

    python bench/calibration.py [--epochs 10] [--out runs/bench-calibration]

Prints per recipe the fitted temperature, test accuracy (a temperature cannot change it), and test ECE, log loss
and mean confidence before and after.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cifar10_dir, table  # noqa: E402

from cnnkit.config import CalibrateConfig, TrainConfig  # noqa: E402
from cnnkit.evaluate.temperature import calibrate_run  # noqa: E402
from cnnkit.training.fit import train  # noqa: E402

RECIPES = {"plain": {}, "label smoothing 0.1": {"label_smoothing": 0.1}, "mixup 0.2": {"mixup": 0.2}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-calibration"))
    args = parser.parse_args()
    rows = []
    for index, (name, options) in enumerate(RECIPES.items()):
        out = args.out / f"recipe-{index}"
        trained = train(TrainConfig(data="cifar10", data_dir=cifar10_dir(), out=out, overwrite=True, model="simple-cnn",
                                    epochs=args.epochs, batch_size=64, lr=1e-3, val_split=0.1, quiet=True,
                                    **options))
        before = trained.metrics["calibration"]
        result = calibrate_run(CalibrateConfig(run=out))
        assert result.test is not None
        after = result.test["calibration"]
        rows.append({"recipe": name, "temperature": result.temperature, "test_accuracy": result.test["accuracy"],
                     "ece_before": before["ece"], "ece_after": after["ece"], "log_loss_before": before["log_loss"],
                     "log_loss_after": after["log_loss"], "confidence_before": before["mean_confidence"],
                     "confidence_after": after["mean_confidence"]})
    print(table(rows))


if __name__ == "__main__":
    main()
