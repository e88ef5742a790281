"""Superpixels: the features KernelSHAP and LIME switch on and off.

SLIC (Achanta et al., "SLIC Superpixels Compared to State-of-the-Art Superpixel Methods",
TPAMI 2012) from scikit-image groups pixels by position and intensity, so a pen stroke and
the background around it fall in different segments. Without scikit-image the features are a
fixed grid of square cells (4 px at 28 px, scaled with the image).
"""

from __future__ import annotations

import numpy as np
import torch


def grid_segments(shape: tuple[int, int], cell: int | None = None) -> torch.Tensor:
    """(H, W) labels 0..K-1 of square cells of ``cell`` px (default: the side / 7, at least 2)."""
    h, w = shape
    cell = cell or max(2, round(min(h, w) / 7))
    rows = torch.arange(h) // cell
    cols = torch.arange(w) // cell
    return rows[:, None] * int(cols.max() + 1) + cols[None, :]


def superpixels(images: torch.Tensor, segments: int = 50, compactness: float = 0.1,
                method: str = "auto") -> torch.Tensor:
    """(N, 1, H, W) labels 0..K-1 per image: SLIC with about ``segments`` segments on the
    channel-mean image (``method="slic"``; ``"auto"`` falls back to the grid when
    scikit-image is not installed), or the fixed grid (``"grid"``)."""
    n, _, h, w = images.shape
    if method == "auto":
        try:
            import skimage.segmentation  # noqa: F401
            method = "slic"
        except ImportError:
            method = "grid"
    if method == "grid":
        return grid_segments((h, w)).expand(n, 1, h, w).clone()
    if method != "slic":
        raise ValueError(f"unknown superpixel method '{method}'; use auto, slic or grid")
    from skimage.segmentation import slic

    gray = images.detach().float().mean(1).cpu().numpy().astype(np.float64)
    labels = [np.unique(slic(im, n_segments=segments, compactness=compactness, channel_axis=None,
                             start_label=0), return_inverse=True)[1].reshape(h, w)
              for im in gray]  # one image at a time: SLIC has no batch axis; labels made 0..K-1
    return torch.from_numpy(np.stack(labels)).long()[:, None]
