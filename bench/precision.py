"""Training-step speed in fp32 against bf16 autocast, per model, in one process: the evidence behind what
`--precision auto` picks for whole-network training (from scratch, or fine-tuning an unfrozen base) on this machine.

    python bench/precision.py [--models simple-cnn resnet50 ...] [--input-size 128] [--batch-size 32] [--rounds 5]

Each model trains as `cnnkit train` trains it (channels-last, fused Adam, train mode, malloc settings; random
weights and images) for --steps steps per round, fp32 and bf16 taking turns, --rounds rounds, and runs forward
without autograd as a frozen base does; images/s is the median over the rounds, after one warm-up round. Prints
the ratios and what `--precision auto` picks on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from cnnkit.models.transfer import depthwise_convs
from cnnkit.runtime.engine import StepSettings
from cnnkit.training.islands import Fp32Islands

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_name, table  # noqa: E402

MODELS = ["simple-cnn", "lenet5", "alexnet", "vgg16", "resnet50", "efficientnet_b0", "efficientnet_lite0"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--input-size", type=int, default=128, help="pixels for the models whose default is 224")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="steps (batches) per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from cnnkit.models.registry import create_model, default_input_size
    from cnnkit.runtime.allocator import reuse_freed_memory
    from cnnkit.runtime.device import resolve_precision

    reuse_freed_memory()  # as cnnkit's training does on a CPU
    rows = []
    for name in args.models:
        size = min(default_input_size(name), args.input_size)
        torch.manual_seed(0)
        model = create_model(name, num_classes=10, input_size=size).to(memory_format=torch.channels_last)
        bench = Bench(model, batch_size=args.batch_size, size=size, steps=args.steps)
        depthwise = bool(depthwise_convs(model))
        row: dict[str, object] = {"model": name, "px": size}
        for training, what in ((True, "train"), (False, "frozen")):
            modes = ["fp32", "bf16"] + (["bf16 dw-fp32"] if training and depthwise else [])
            times: dict[str, list[float]] = {mode: [] for mode in modes}
            for i in range(args.rounds + 1):
                for mode in modes:
                    seconds = bench.round_s(mode, training=training)
                    if i:  # the first round warms up oneDNN's kernel caches for every mode
                        times[mode].append(seconds)
            speed = {m: args.steps * args.batch_size / statistics.median(t) for m, t in times.items()}
            row |= {f"{what} {m}": speed.get(m, "-") for m in ("fp32", "bf16", "bf16 dw-fp32")[:3 if training else 2]}
            row |= {f"{what} {m}/fp32": speed[m] / speed["fp32"] if m in speed else "-"
                    for m in ("bf16", "bf16 dw-fp32")[:2 if training else 1]}
            print(f"{name} {what}: " + ", ".join(f"{m} {v:.1f}" for m, v in speed.items()) + " images/s",
                  file=sys.stderr, flush=True)
        # What --precision auto picks here: training the whole network, and a frozen base under a new head.
        auto = [resolve_precision("auto", torch.device("cpu"), trains_depthwise=trains).describe()
                for trains in (depthwise, False)]
        rows.append(row | {"auto: train / frozen": " / ".join(auto)})
    print(f"CPU: {cpu_name()}, {torch.get_num_threads()} threads; images/s at batch {args.batch_size}, median of "
          f"{args.rounds} rounds of {args.steps} steps; train: forward, backward and Adam step; frozen: forward "
          "without autograd (a frozen base computing features); dw-fp32: depthwise convolutions in fp32")
    print(table(rows))


class Bench:
    """Random images and labels for one model, and its optimizer."""

    def __init__(self, model: torch.nn.Module, *, batch_size: int, size: int, steps: int) -> None:
        self.model, self.steps = model, steps
        self.optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
        self.x = torch.randn(batch_size, 3, size, size).contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(0, 10, (batch_size,))

    def round_s(self, mode: str, *, training: bool) -> float:
        """Seconds for `steps` training steps, or forward passes without autograd, in `mode` (fp32, bf16, or
        bf16 dw-fp32: bf16 with the depthwise convolutions in fp32, as --precision auto trains them on a CPU)."""
        settings = StepSettings(device=torch.device("cpu"), precision=mode.split()[0])
        islands = Fp32Islands(depthwise_convs(self.model) if mode.endswith("dw-fp32") else [], device_type="cpu")
        self.model.train(training)
        start = time.perf_counter()
        for _ in range(self.steps):
            if not training:
                with torch.no_grad(), settings.autocast():
                    self.model(self.x)
                continue
            self.optimizer.zero_grad(set_to_none=True)
            with settings.autocast():
                loss = torch.nn.functional.cross_entropy(self.model(self.x).float(), self.y)
            loss.backward()
            self.optimizer.step()
        seconds = time.perf_counter() - start
        islands.remove()
        return seconds


if __name__ == "__main__":
    main()
