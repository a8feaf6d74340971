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

    import torch

    from cnnkit.models.registry import create_model, default_input_size
    from cnnkit.models.transfer import has_depthwise_conv
    from cnnkit.runtime.allocator import reuse_freed_memory
    from cnnkit.runtime.device import resolve_precision

    reuse_freed_memory()  # as cnnkit's training does on a CPU
    rows = []
    for name in args.models:
        size = min(default_input_size(name), args.input_size)
        torch.manual_seed(0)
        model = create_model(name, num_classes=10, input_size=size).to(memory_format=torch.channels_last)
        bench = Bench(model, batch_size=args.batch_size, size=size, steps=args.steps)
        row: dict[str, object] = {"model": name, "px": size}
        for training, what in ((True, "train"), (False, "frozen")):
            times: dict[str, list[float]] = {"fp32": [], "bf16": []}
            for i in range(args.rounds + 1):
                for precision in times:
                    seconds = bench.round_s(precision, training=training)
                    if i:  # the first round warms up oneDNN's kernel caches for both
                        times[precision].append(seconds)
            speed = {p: args.steps * args.batch_size / statistics.median(t) for p, t in times.items()}
            row |= {f"{what} fp32": speed["fp32"], f"{what} bf16": speed["bf16"],
                    f"{what} bf16/fp32": speed["bf16"] / speed["fp32"]}
            print(f"{name} {what}: fp32 {speed['fp32']:.1f}, bf16 {speed['bf16']:.1f} images/s", file=sys.stderr,
                  flush=True)
        # What --precision auto picks here: training the whole network, and a frozen base under a new head.
        auto = [resolve_precision("auto", torch.device("cpu"), trains_depthwise=depthwise)[0]
                for depthwise in (has_depthwise_conv(model), False)]
        rows.append(row | {"auto: train / frozen": " / ".join(auto)})
    print(f"CPU: {cpu_name()}, {torch.get_num_threads()} threads; images/s at batch {args.batch_size}, median of "
          f"{args.rounds} rounds of {args.steps} steps; train: forward, backward and Adam step; frozen: forward "
          "without autograd (a frozen base computing features)")
    print(table(rows))


class Bench:
    """Random images and labels for one model, and its optimizer."""

    def __init__(self, model: torch.nn.Module, *, batch_size: int, size: int, steps: int) -> None:
        self.model, self.steps = model, steps
        self.optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
        self.x = torch.randn(batch_size, 3, size, size).contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(0, 10, (batch_size,))

    def round_s(self, precision: str, *, training: bool) -> float:
        """Seconds for `steps` training steps, or forward passes without autograd."""
        from cnnkit.runtime.engine import StepSettings

        settings = StepSettings(device=torch.device("cpu"), precision=precision)
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
        return time.perf_counter() - start


if __name__ == "__main__":
    main()
