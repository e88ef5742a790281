"""Matplotlib figures for training curves, confusion and calibration (no computation)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..utils.atomic import atomic_path


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files, no screen)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG atomically and close it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return path


def as_picture(draw: Callable[[Path], Path]) -> Any:
    """What a ``plot_*`` function draws, as a PIL image instead of a file."""
    import tempfile

    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="kangae-plot-") as folder:
        with Image.open(draw(Path(folder) / "plot.png")) as im:
            return im.convert("RGB")


def plot_curves(history: Sequence[dict[str, float]], path: str | os.PathLike, title: str = "") -> Path:
    """Loss and accuracy per epoch, train and validation."""
    plt = pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4))
    epochs = [h["epoch"] for h in history]
    for key, style in (("train", "-o"), ("val", "-s")):
        if f"{key}_loss" in history[0]:
            ax_loss.plot(epochs, [h[f"{key}_loss"] for h in history], style, ms=3, label=key)
            ax_acc.plot(epochs, [100 * h[f"{key}_acc"] for h in history], style, ms=3, label=key)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", yscale="log", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_confusion(matrix: torch.Tensor, classes: Sequence[str], path: str | os.PathLike,
                   title: str = "") -> Path:
    """Counts and row-normalized shares side by side."""
    plt = pyplot()
    m = matrix.double()
    norm = m / m.sum(1, keepdim=True).clamp(min=1)
    k = len(classes)
    size = max(4.0, 0.45 * k)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    panels = ((axes[0], m, "count", "{:.0f}"), (axes[1], norm, "share of true class (%)", "{:.1%}"))
    for ax, data, label, fmt in panels:
        im = ax.imshow(data, cmap="Blues")
        ax.set(xticks=range(k), yticks=range(k), xlabel="predicted", ylabel="true", title=label)
        ax.set_xticklabels(classes, fontsize=7)
        ax.set_yticklabels(classes, fontsize=7)
        if k <= 15:
            top = float(data.max())
            for i in range(k):
                for j in range(k):
                    v = float(data[i, j])
                    if v:
                        ax.text(j, i, fmt.format(v).replace("%", ""), ha="center", va="center",
                                fontsize=6, color="white" if v > top / 2 else "black")
        fig.colorbar(im, ax=ax, shrink=0.7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_confused_pairs(images: torch.Tensor, pairs: Sequence[dict[str, Any]], classes: Sequence[str],
                        path: str | os.PathLike) -> Path:
    """One row per confused pair: the mistakes, each with the probability of the wrong class."""
    plt = pyplot()
    rows = max(1, len(pairs))
    cols = max([len(p["indices"]) for p in pairs] + [1])
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, pair in enumerate(pairs):
        for c, (i, p) in enumerate(zip(pair["indices"], pair["probabilities"])):
            img = images[i].float()
            img = img / 255 if images.dtype == torch.uint8 else img
            if img.shape[0] == 3:
                axes[r, c].imshow(img.permute(1, 2, 0).clamp(0, 1))
            else:
                axes[r, c].imshow(img.mean(0), cmap="gray", vmin=0, vmax=1)
            axes[r, c].set_title(f"{classes[pair['true']]}→{classes[pair['pred']]} {p:.0%}", fontsize=7)
    fig.suptitle("most confused pairs: true → predicted (its probability)", fontsize=9)
    return save_figure(fig, path)


def plot_reliability(results: Sequence[tuple[str, Any]], path: str | os.PathLike, title: str = "") -> Path:
    """Reliability diagrams (accuracy against confidence per bin) and confidence histograms
    for right and wrong predictions, one column per result (e.g. before/after scaling)."""
    plt = pyplot()
    fig, axes = plt.subplots(2, len(results), figsize=(4.2 * len(results), 7), squeeze=False)
    for col, (label, res) in enumerate(results):
        ax = axes[0, col]
        edges = res.bin_edges.numpy()
        centers = (edges[:-1] + edges[1:]) / 2
        width = edges[1] - edges[0]
        ok = res.bin_count.numpy() > 0
        ax.bar(centers[ok], res.bin_accuracy.numpy()[ok], width=width * 0.95, color="#4c72b0",
               edgecolor="white", label="accuracy")
        gap_lo = res.bin_accuracy.numpy()[ok]
        gap_hi = res.bin_confidence.numpy()[ok]
        ax.bar(centers[ok], gap_hi - gap_lo, bottom=gap_lo, width=width * 0.95, color="#dd8452",
               alpha=0.5, label="gap to confidence")
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        m = res.metrics
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (max probability)", ylabel="accuracy",
               title=f"{label}\nECE {m['ece']:.2%}  MCE {m['mce']:.2%}  NLL {m['nll']:.3f}")
        ax.legend(loc="upper left", fontsize=7)
        ax = axes[1, col]
        conf, right = res.confidence.numpy(), res.correct.numpy()
        bins = edges
        ax.hist(conf[right], bins=bins, alpha=0.7, label=f"right ({right.sum()})", color="#55a868")
        ax.hist(conf[~right], bins=bins, alpha=0.7, label=f"wrong ({(~right).sum()})", color="#c44e52")
        ax.set(yscale="log", xlabel="confidence (max probability)", ylabel="examples")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_cascade(rows: dict[str, dict[str, Any]], path: str | os.PathLike, title: str = "") -> Path:
    """Spearman rho and SSIM against the trained model's map, per randomization step, one
    line per method (``rows[method]["cascade"]`` as :meth:`CascadeResult.summary` gives it)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    layers: list[str] = []
    for method, row in rows.items():
        c = row.get("cascade")
        if not c or not c["layers"]:
            continue
        layers = c["layers"]
        steps = range(len(layers) + 1)
        for ax, key in zip(axes, ("spearman", "ssim")):
            ax.plot(steps, [1.0] + [v[0] for v in c[key]], marker="o", ms=3, label=method)
    for ax, name in zip(axes, ("Spearman rank correlation (|a|)", "SSIM")):
        ax.set_xticks(range(len(layers) + 1))
        ax.set_xticklabels(["trained", *layers], rotation=45, ha="right", fontsize=7)
        ax.set_ylabel(name)
        ax.axhline(0, color="0.8", lw=0.8)
    axes[0].legend(fontsize=6, ncol=2)
    fig.suptitle(title + " (layers randomized from the top, cumulatively)")
    return save_figure(fig, path)
