"""Superpixels: the features KernelSHAP and LIME switch on and off.

SLIC (Achanta et al., "SLIC Superpixels Compared to State-of-the-Art Superpixel Methods",
TPAMI 2012) from scikit-image groups pixels by position and intensity (colour, for RGB
pictures), so a pen stroke and the background around it fall in different segments.
Without scikit-image the features are a fixed grid of square cells (4 px at 28 px, scaled with the image).
"""

from __future__ import annotations

import numpy as np
import torch

# SLIC's distance weighs colour against position: grey values lie in [0, 1], CIELAB's L in
# [0, 100], so the same ``compactness`` is 100 times larger on colour pictures (0.1 -> 10,
# scikit-image's default for colour).
RGB_COMPACTNESS = 100.0


def grid_segments(shape: tuple[int, int], cell: int | None = None) -> torch.Tensor:
    """(H, W) labels 0..K-1 of square cells of ``cell`` px (default: the side / 7, at least 2)."""
    h, w = shape
    cell = cell or max(2, round(min(h, w) / 7))
    rows = torch.arange(h) // cell
    cols = torch.arange(w) // cell
    return rows[:, None] * int(cols.max() + 1) + cols[None, :]


def superpixels(images: torch.Tensor, segments: int = 50, compactness: float = 0.1,
                method: str = "auto") -> torch.Tensor:
    """(N, 1, H, W) labels 0..K-1 per image: SLIC with about ``segments`` segments, on the
    colours of an RGB picture (in CIELAB) and on the channel mean otherwise, the grid for an
    image where SLIC finds under a quarter of them (``method="slic"``; ``"auto"`` falls back to the grid when
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

    x = images.detach().float().cpu()
    if x.shape[1] == 3:  # colour: SLIC in CIELAB (L in 0..100), where its compactness is 10
        pics = x.permute(0, 2, 3, 1).clamp(0, 1).numpy().astype(np.float64)
        axis, compact = -1, compactness * RGB_COMPACTNESS
    else:
        pics = x.mean(1).numpy().astype(np.float64)
        axis, compact = None, compactness
    grid = grid_segments((h, w)).numpy()
    labels = []
    for im in pics:  # one image at a time: SLIC has no batch axis; labels made 0..K-1
        lab = np.unique(slic(im, n_segments=segments, compactness=compact, channel_axis=axis,
                             start_label=0), return_inverse=True)[1].reshape(h, w)
        # SLIC's connectivity step can merge a busy picture into a few segments (one, on
        # strong colour noise): then the grid, so that the surrogate has features to fit
        labels.append(lab if lab.max() + 1 >= max(2, segments // 4) else grid)
    return torch.from_numpy(np.stack(labels)).long()[:, None]
