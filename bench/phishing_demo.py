"""The phishing recipe on a generated (synthetic) screenshot set: AUC, TPR at 1% FPR, training time, serving latency.

    python bench/phishing_demo.py [--count 400] [--size 160] [--out runs/bench-phishing]

make-demo-screenshots -> train EfficientNet-Lite0 (ImageNet weights, frozen base + head, then fine-tuning) with
the screenshot augmentation and top-crop preprocessing -> evaluate at a 1% target FPR -> export -> serve -> time
:classify requests. The data are synthetic: the figures say the pipeline works, not how it fares on real phishing.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests")]

from common import table  # noqa: E402
from helpers import free_port, start_server, stop_server  # noqa: E402
from loadgen import drive  # noqa: E402

from cnnkit.apps.phishing.demo import make_demo_screenshots  # noqa: E402
from cnnkit.config import (  # noqa: E402
    DemoConfig,
    EvaluateConfig,
    ExportConfig,
    ScheduleConfig,
    TrainConfig,
)
from cnnkit.deploy.onnx import export_run  # noqa: E402
from cnnkit.evaluate.report import evaluate_run  # noqa: E402
from cnnkit.training.fit import train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-phishing"))
    args = parser.parse_args()
    shots = args.out / "screenshots"
    started = time.perf_counter()
    make_demo_screenshots(DemoConfig(out=shots, count=args.count, seed=1))
    generate_s = time.perf_counter() - started
    run = args.out / "run"
    result = train(TrainConfig(
        data=f"folder:{shots}", out=run, model="efficientnet_lite0", pretrained=True, freeze_base=True,
        input_size=args.size, resize="top-crop", augment="screenshot", epochs=args.epochs,
        finetune_epochs=args.finetune_epochs, finetune_lr=1e-4, batch_size=32, lr=1e-3, val_split=0.2,
        test_split=0.25, precision="bf16", device="cpu", overwrite=True, quiet=True,
        schedule=ScheduleConfig(monitor="val_loss")))
    # A 1% FPR cannot be estimated on this validation split's few dozen negatives (cnnkit refuses): 10%.
    metrics = evaluate_run(EvaluateConfig(run=run, target_fpr=0.1))
    binary = metrics["binary"]
    export_run(ExportConfig(run=run))
    port = free_port()
    server = start_server("--model", f"phish={run}", port=port)
    try:
        shot = sorted((shots / "phishing").glob("*.png"))[0]
        body = json.dumps({"examples": [{"image": {"b64": base64.b64encode(shot.read_bytes()).decode()}}]}).encode()
        drive(port=port, path="/v1/models/phish:classify", body=body, concurrency=1, requests=20)  # warm-up
        latency = drive(port=port, path="/v1/models/phish:classify", body=body, concurrency=1, requests=200)
    finally:
        stop_server(server)
    print(table([{
        "screenshots": args.count, "input_px": args.size, "test_images": metrics["num_samples"],
        "roc_auc": binary["roc_auc"], "pr_auc": binary["pr_auc"], "tpr_at_fpr_1%": binary["tpr_at_fpr_0.01"],
        "roc_auc_95%": "{:.3f}-{:.3f}".format(*binary["roc_auc_ci95"]), "threshold (10% FPR)": binary["threshold"],
        "test_fpr_at_threshold": binary["fpr_at_threshold"], "test_tpr_at_threshold": binary["tpr_at_threshold"],
        "generate_s": generate_s, "train_s": result.metrics["train_time_s"],
        "classify_p50_ms": latency["p50_ms"], "classify_p95_ms": latency["p95_ms"], "errors": latency["errors"],
    }]))
    print("\nSynthetic data (cnnkit make-demo-screenshots): not a measure of accuracy on real phishing pages.")


if __name__ == "__main__":
    main()
