"""The judge's metrics over epochs as one figure (matplotlib; no computation here)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..render.plots import pyplot, save_figure


def plot_judge(epochs: Sequence[dict[str, Any]], classes: Sequence[str], path: str | os.PathLike) -> Path:
    """Fréchet distance beside the real-data floor, confidence, class entropy (and share of
    asked-for classes), and the predicted-class histogram per epoch."""
    plt = pyplot()
    ep = [e["epoch"] for e in epochs]
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    ax = axes[0]
    ax.plot(ep, [e["fd"] for e in epochs], "-o", ms=3, label="samples")
    ax.plot(ep, [e["fd_floor"] for e in epochs], "--", color="gray", label="real test halves (floor)")
    ax.set(xlabel="epoch", ylabel="Fréchet distance", yscale="log", title="Fréchet distance")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(ep, [100 * e["confidence"] for e in epochs], "-o", ms=3, label="mean confidence")
    if any(e.get("class_match") is not None for e in epochs):
        ax.plot(ep, [100 * (e.get("class_match") or 0) for e in epochs], "-s", ms=3,
                label="read as asked-for class")
    ax.set(xlabel="epoch", ylabel="%", ylim=(0, 100), title="classifier on samples")
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.plot(ep, [e["entropy_bits"] for e in epochs], "-o", ms=3)
    ax.axhline(epochs[0]["max_entropy_bits"], ls="--", color="gray", label="uniform")
    ax.set(xlabel="epoch", ylabel="bits", title="predicted-class entropy")
    ax.legend(fontsize=8)
    ax = axes[3]
    hist = np.array([e["histogram"] for e in epochs]).T
    im = ax.imshow(hist, aspect="auto", cmap="viridis", vmin=0, origin="lower",
                   extent=(ep[0] - 0.5, ep[-1] + 0.5, -0.5, len(classes) - 0.5))
    if len(classes) <= 26:
        ax.set_yticks(range(len(classes)), list(classes), fontsize=7)
    ax.set(xlabel="epoch", title="predicted-class share")
    fig.colorbar(im, ax=ax, shrink=0.8)
    for a in axes[:3]:
        a.grid(alpha=0.3)
    return save_figure(fig, path)
