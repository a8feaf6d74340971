"""A Keras-style model summary: one row per leaf layer with its output shape and parameter count."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

BYTES_PER_KB = 1024


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int | None, ...]
    params: int


def count_params(model: nn.Module) -> tuple[int, int]:
    """Return (trainable, non_trainable) parameter counts; BatchNorm running statistics count as non-trainable."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    frozen += sum(b.numel() for name, b in model.named_buffers() if not name.endswith("num_batches_tracked"))
    return trainable, frozen


def summary(model: nn.Module, *, input_size: int, in_chans: int = 3, name: str = "model") -> str:
    """Render the table Keras prints for `model.summary()`, computed with one forward pass on zeros."""
    rows = _trace(model, input_size=input_size, in_chans=in_chans)
    trainable, frozen = count_params(model)
    total = trainable + frozen
    header = ("Layer (type)", "Output Shape", "Param #")
    cells = [(f"{r.name} ({r.kind})", _shape(r.output_shape), f"{r.params:,}") for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) + 2 for i, h in enumerate(header)]
    rule = "─" * sum(widths)
    lines = [f'Model: "{name}"', rule, _row(header, widths), rule.replace("─", "━")]
    lines += [_row(c, widths) for c in cells]
    lines += [rule]
    for label, value in (("Total", total), ("Trainable", trainable), ("Non-trainable", frozen)):
        lines.append(f" {label} params: {value:,} ({_size(value)})")
    return "\n".join(lines)


def _trace(model: nn.Module, *, input_size: int, in_chans: int) -> list[LayerRow]:
    rows: list[LayerRow] = []
    names = {module: name for name, module in model.named_modules()}
    leaves = [m for m in model.modules() if not list(m.children())]

    def hook(module: nn.Module, _inputs: object, output: object) -> None:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else ()
        params = sum(p.numel() for p in module.parameters(recurse=False))
        rows.append(LayerRow(names[module] or "model", type(module).__name__, (None, *shape[1:]), params))

    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, in_chans, input_size, input_size, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return rows


def _shape(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("None" if s is None else str(s) for s in shape) + ")"


def _size(n_params: int) -> str:
    size = n_params * 4 / BYTES_PER_KB  # float32: 4 bytes per parameter
    for unit in ("KB", "MB", "GB"):
        if size < BYTES_PER_KB or unit == "GB":
            return f"{size:.2f} {unit}"
        size /= BYTES_PER_KB
    raise AssertionError("unreachable")


def _row(cells: tuple[str, ...], widths: list[int]) -> str:
    return "".join(f" {c:<{w - 1}}" for c, w in zip(cells, widths))
