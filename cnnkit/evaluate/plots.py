"""Figures, drawn with matplotlib's object API (no pyplot, so no global backend state is touched)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def learning_curves(history: list[dict[str, Any]], *, title: str = "", kept_epoch: int | None = None) -> Figure:
    """Loss and accuracy per epoch, training against validation; a line at `kept_epoch`, the epoch whose weights
    were kept (and tested), and where fine-tuning began."""
    from matplotlib.figure import Figure  # matplotlib loads when a figure is drawn

    figure = Figure(figsize=(10, 4))
    epochs = [row["epoch"] for row in history]
    finetune = next((row["epoch"] for row in history if row.get("phase") == "finetune"), None)
    for ax, key in zip(figure.subplots(1, 2), ("loss", "accuracy")):
        ax.plot(epochs, [row.get(key) for row in history], marker="o", label=f"train {key}")
        if history and f"val_{key}" in history[0]:
            ax.plot(epochs, [row.get(f"val_{key}") for row in history], marker="o", label=f"val {key}")
        if kept_epoch:
            ax.axvline(kept_epoch, color="grey", linestyle="--", linewidth=1, label=f"kept: epoch {kept_epoch}")
        if finetune:
            ax.axvline(finetune - 0.5, color="tab:green", linestyle=":", linewidth=1, label="fine-tuning")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        figure.suptitle(title)
    return figure


def mistakes_figure(images: np.ndarray, captions: list[str], *, title: str) -> Figure:
    """A grid of HxWx3 uint8 `images`, each with its caption (what it is, what the model said)."""
    columns = min(4, len(images))
    rows = -(-len(images) // columns)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(3 * columns, 3.2 * rows))
    for ax, image, caption in zip(figure.subplots(rows, columns, squeeze=False).flat, images, captions):
        ax.imshow(image, interpolation="nearest")  # a 32-px image shown as blocks, not blurred into false detail
        ax.set_title(caption, fontsize=8)
    for ax in figure.axes:
        ax.axis("off")
    figure.suptitle(title)
    return figure


def confusion_matrix_figure(matrix: list[list[int]], class_names: list[str]) -> Figure:
    """Row-normalised confusion matrix with counts in the cells."""
    counts = np.asarray(matrix)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = max(4.0, 0.6 * len(class_names) + 2)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(side + 1, side))
    ax = figure.subplots()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=ax, fraction=0.046, label="fraction of true class")
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(class_names) <= 20:
        for i, j in np.ndindex(counts.shape):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if rates[i, j] > 0.5 else "black")
    return figure


def reliability_figure(calibration: dict[str, Any], *, title: str = "") -> Figure:
    """Reliability diagram: accuracy against mean top-1 confidence per confidence bin (the diagonal is a perfectly
    calibrated model), and how many images each bin holds."""
    bins = calibration["bins"]
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 6))
    top, bottom = figure.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    width = [b["high"] - b["low"] for b in bins]
    lows = [b["low"] for b in bins]
    top.bar(lows, [b["accuracy"] for b in bins], width=width, align="edge", edgecolor="black", label="accuracy")
    top.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="tab:red",
             label="each bin: mean confidence, accuracy")
    top.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="calibrated")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.legend(loc="upper left", fontsize=8)
    top.set_title(f"{title}ECE {calibration['ece']:.3f}, log loss {calibration['log_loss']:.3f}", fontsize=10)
    bottom.bar(lows, [b["count"] for b in bins], width=width, align="edge", color="grey")
    bottom.set_xlabel("top-1 confidence")
    bottom.set_ylabel("images")
    bottom.set_xlim(0, 1)
    return figure
