"""Images and animations of ``(N, C, H, W)`` tensors; signed ones use a diverging colormap."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..utils.atomic import atomic_path
from .plots import pyplot, save_figure


def _rgb(img: torch.Tensor, signed: bool, limit: float | None = None) -> np.ndarray:
    """(C, H, W) -> uint8 (H, W, 3): RGB as it is, one channel (or any count but 3) in grey.
    Signed images map the channel mean -limit..0..+limit to blue-white-red."""
    x = img.detach().float().cpu()
    if signed:
        from matplotlib import colormaps

        lim = limit or float(x.abs().max()) or 1.0
        v = (x.mean(0) / lim * 0.5 + 0.5).clamp(0, 1).numpy()
        return (colormaps["RdBu_r"](v)[..., :3] * 255).round().astype(np.uint8)
    x = x.clamp(0, 1)
    if x.shape[0] != 3:  # grey, or channels that are not a colour picture: their mean in grey
        x = x.mean(0, keepdim=True).expand(3, *x.shape[1:])
    return (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def to_pil(img: torch.Tensor, scale: int = 8, signed: bool = False,
           limit: float | None = None) -> Image.Image:
    """One image, enlarged ``scale`` times with nearest-neighbour so pixels stay crisp."""
    pil = Image.fromarray(_rgb(img, signed, limit))
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST) if scale > 1 else pil


def default_columns(n: int) -> int:
    """Columns for a grid of ``n`` images (4x4 for 16 filters, rows of 5 or 10 for classes)."""
    return n if n <= 6 else 4 if n == 16 else 5 if n <= 10 else 10


def tile_images(images: torch.Tensor, ncols: int, scale: int, signed: bool, pad: int = 2) -> Image.Image:
    """``images`` (N, C, H, W) as one sheet of ``ncols`` columns, each enlarged ``scale`` times."""
    n = images.shape[0]
    rows = math.ceil(n / ncols)
    limit = float(images.abs().max()) if signed else None
    tiles = [to_pil(im, scale, signed, limit) for im in images]
    w, h = tiles[0].size
    sheet = Image.new("RGB", (ncols * (w + pad) + pad, rows * (h + pad) + pad), (40, 40, 40))
    for i, tile in enumerate(tiles):
        r, c = divmod(i, ncols)
        sheet.paste(tile, (pad + c * (w + pad), pad + r * (h + pad)))
    return sheet


def save_image(img: torch.Tensor, path: str | os.PathLike, scale: int = 8, signed: bool = False) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        to_pil(img, scale, signed).save(tmp, format="PNG")
    return path


def save_grid(images: torch.Tensor, path: str | os.PathLike, titles: Sequence[str] | None = None,
              ncols: int | None = None, signed: bool = False, suptitle: str | None = None) -> Path:
    """A labelled grid as PNG (matplotlib), with a colour bar for signed images."""
    plt = pyplot()

    n = images.shape[0]
    ncols = ncols or default_columns(n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.3 * ncols, 1.45 * nrows + (0.3 if suptitle else 0)),
                             squeeze=False)
    limit = float(images.abs().max()) or 1.0
    last = None
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i].detach().float().cpu()
        if signed:
            last = ax.imshow(img.mean(0), cmap="RdBu_r", vmin=-limit, vmax=limit)
        elif img.shape[0] == 3:
            ax.imshow(img.permute(1, 2, 0).clamp(0, 1))
        else:
            ax.imshow(img.mean(0).clamp(0, 1), cmap="gray", vmin=0, vmax=1)
        if titles:
            ax.set_title(titles[i], fontsize=8)
    if signed and last is not None:
        fig.colorbar(last, ax=axes.ravel().tolist(), shrink=0.6)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    return save_figure(fig, path)


def panel_scale(side: int) -> int:
    """Enlargement for an explanation panel: 8x up to 56 px (digits and cluttered canvases,
    as before), then about 448 pixels a tile (7x at 64 px, 2x at 224)."""
    return max(1, min(8, 448 // max(1, side)))


def display_scale(side: int) -> int:
    """Enlargement that shows a ``side``-pixel image at about 112-224 pixels."""
    return max(1, 224 // max(1, side)) if side < 112 else 1


def save_gif(frames: torch.Tensor, path: str | os.PathLike, ncols: int | None = None,
             scale: int = 3, duration_ms: int = 120, signed: bool = False) -> Path:
    """``frames`` ``(F, N, C, H, W)`` as an animated grid; the last frame is held longer."""
    f, n = frames.shape[:2]
    ncols = ncols or default_columns(n)
    sheets = [tile_images(frames[i], ncols, scale, signed) for i in range(f)]
    durations = [duration_ms] * (f - 1) + [duration_ms * 10]
    path = Path(path)
    with atomic_path(path) as tmp:
        sheets[0].save(tmp, format="GIF", save_all=True, append_images=sheets[1:],
                       duration=durations, loop=0)
    return path
