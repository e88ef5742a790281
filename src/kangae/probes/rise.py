"""RISE: Randomized Input Sampling for Explanation (Petsiuk, Das & Saenko, BMVC 2018).

``N`` random binary grids of ``s x s`` cells (each cell kept with probability ``p``) are
upsampled bilinearly to ``(s + 1) * C`` px (``C = ceil(H / s)``, the cell size) and cropped
at a random shift in ``[0, C)``, which gives smooth masks that do not line up with one grid.
The model scores every masked image ``I * M_i`` (the class probability), and the saliency is
the score-weighted mean of the masks, ``S = sum_i f(I * M_i) M_i / (N p)``.

The masks depend only on the seed (drawn once, for all images), and are made and scored in
chunks: many masks per forward pass, through a private copy of the model rewritten to do less
work for the same logits, in passes whose activations stay in cache (``_inference``).
The paper's 4,000 masks of 7 x 7 cells at 224 px are kangae's default at any size: the
number of masks a stable saliency needs depends on the number of cells, not of pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ._inference import Scorer
from ._model import frozen
from .explanation import Explanation
from .masks import _prepare


@dataclass(frozen=True)
class MaskSet:
    """The random part of RISE: ``grids`` (N, s, s) of 0/1 and ``shifts`` (N, 2) in [0, C)."""

    grids: torch.Tensor
    shifts: torch.Tensor
    size: tuple[int, int]
    keep: float

    @property
    def cell(self) -> tuple[int, int]:
        s = self.grids.shape[-1]
        return math.ceil(self.size[0] / s), math.ceil(self.size[1] / s)

    def __len__(self) -> int:
        return int(self.grids.shape[0])

    def masks(self, start: int, stop: int, device: torch.device | str | None = None,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Masks ``start:stop`` as (M, 1, H, W) floats in [0, 1]."""
        g = self.grids[start:stop].to(device, dtype)[:, None]
        s = g.shape[-1]
        (h, w), (ch, cw) = self.size, self.cell
        up = F.interpolate(g, size=((s + 1) * ch, (s + 1) * cw), mode="bilinear", align_corners=False)
        dy, dx = self.shifts[start:stop].to(up.device).T
        rows = (dy[:, None] + torch.arange(h, device=up.device))[:, :, None]
        cols = (dx[:, None] + torch.arange(w, device=up.device))[:, None, :]
        return up[torch.arange(len(g), device=up.device)[:, None, None], 0, rows, cols][:, None]


def rise_masks(n_masks: int, size: tuple[int, int], cells: int = 7, keep: float = 0.5,
               seed: int = 0) -> MaskSet:
    """Draw RISE's masks from a ``torch.Generator`` seeded with ``seed`` (the global RNG is
    not touched): the same seed gives the same masks whatever the images or the chunking."""
    if n_masks < 1 or cells < 1 or not 0 < keep < 1:
        raise ValueError(f"RISE needs n_masks >= 1, cells >= 1 and 0 < keep < 1 "
                         f"(got {n_masks}, {cells}, {keep})")
    g = torch.Generator().manual_seed(seed)
    grids = (torch.rand(n_masks, cells, cells, generator=g) < keep).to(torch.uint8)
    ch, cw = math.ceil(size[0] / cells), math.ceil(size[1] / cells)
    shifts = torch.stack([torch.randint(0, ch, (n_masks,), generator=g),
                          torch.randint(0, cw, (n_masks,), generator=g)], 1)
    return MaskSet(grids, shifts, (int(size[0]), int(size[1])), float(keep))


@torch.no_grad()
def rise_saliency(model: nn.Module, x: torch.Tensor, t: torch.Tensor, masks: MaskSet,
                  batch_size: int | None = None) -> torch.Tensor:
    """(N, 1, H, W) RISE saliency of images ``x`` (on the model's device) for targets ``t``.

    Masks are made a block at a time and each block is scored on every image before the
    next is made, through a private scoring copy of the model in cache-sized chunks
    (:class:`~kangae.probes._inference.Scorer`); the block's saliency is one product of the
    (N, M) scores and the (M, H * W) masks."""
    n, c, h, w = x.shape
    score = Scorer(model, x, batch_size)
    block = 4 * score.chunk
    total = torch.zeros(n, h * w, dtype=torch.float64, device=x.device)
    for start in range(0, len(masks), block):
        m = masks.masks(start, min(start + block, len(masks)), x.device, x.dtype)  # (M, 1, H, W)
        p = torch.stack([score(x[i] * m, t[i].expand(len(m))) for i in range(n)])  # (N, M)
        total += p.double() @ m.view(len(m), h * w).double()
    return (total / (len(masks) * masks.keep)).view(n, 1, h, w).float()


def rise(model: nn.Module, images: torch.Tensor, target: int | Sequence[int] | torch.Tensor | None = None,
         *, n_masks: int = 4000, cells: int = 7, keep: float = 0.5, batch_size: int | None = None,
         seed: int = 0) -> Explanation:
    """RISE saliency for a batch of images (``target`` defaults to the predicted class)."""
    with frozen(model):
        x, t, p0 = _prepare(model, images, target)
        masks = rise_masks(n_masks, tuple(x.shape[-2:]), cells, keep, seed)
        sal = rise_saliency(model, x, t, masks, batch_size)
    return Explanation(method="rise", attribution=sal.cpu(), target=t.cpu(), prob=p0.cpu(),
                       metrics={"n_masks": n_masks, "cells": cells, "keep": keep})


@torch.no_grad()
def rise_reference(model: nn.Module, x: torch.Tensor, t: torch.Tensor, masks: MaskSet) -> torch.Tensor:
    """The same saliency scoring one masked image per forward pass, mask by mask: the oracle
    for :func:`rise_saliency` (and the loop the speed benchmark compares it with)."""
    n, c, h, w = x.shape
    out = torch.zeros(n, h * w, dtype=torch.float64, device=x.device)
    with frozen(model):
        for i in range(n):
            for j in range(len(masks)):
                m = masks.masks(j, j + 1, x.device, x.dtype)[0]
                p = F.softmax(model((x[i] * m)[None]).float(), dim=1)[0, t[i]]
                out[i] += p.double() * m.flatten().double()
    return (out / (len(masks) * masks.keep)).view(n, 1, h, w).float()
