"""The pictures ``kangae fool`` writes, shared by the command and the attack results' ``save``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from .images import save_grid
from .plots import pyplot, save_figure

GRIDS = ["originals.png", "adversarials.png", "differences.png"]
SHOW = 16  # images in each grid


def save_before_after(out: Path, original: torch.Tensor, changed: torch.Tensor, titles_before: Sequence[str],
                      titles_after: Sequence[str], suptitle: str) -> list[str]:
    """``originals.png``, ``adversarials.png`` (titled ``suptitle``) and ``differences.png``
    (changed - original, signed) in ``out``; returns their names."""
    save_grid(original, out / GRIDS[0], titles=list(titles_before), suptitle="originals")
    save_grid(changed, out / GRIDS[1], titles=list(titles_after), suptitle=suptitle)
    save_grid(changed - original, out / GRIDS[2], signed=True, suptitle="adversarial - original")
    return list(GRIDS)


def plot_share_lines(x: Sequence[float], series: dict[str, Sequence[float]], path: Path, xlabel: str,
                     ylabel: str, title: str) -> Path:
    """One line per series of shares (drawn as %), against ``x``: accuracy against eps, the
    share read as the target against alpha."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for name, ys in series.items():
        ax.plot(list(x), [100 * v for v in ys], "-o", ms=3, label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, ylim=(-2, 102))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
