"""Mini-batches straight from uint8 tensors: no per-sample collation, reproducible, resumable."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from ..utils.rng import RowGenerators, randint
from .dataset import ImageSet


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator | RowGenerators) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels in x and y, filling with zeros
    (``generator``: one for the batch, or one per image, see :mod:`kangae.utils.rng`)."""
    if max_shift <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dy = randint(generator, 2 * max_shift + 1, (b,)).to(x.device)
    dx = randint(generator, 2 * max_shift + 1, (b,)).to(x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)
    cols = dx[:, None] + torch.arange(w, device=x.device)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


class BatchLoader:
    """Batches ``(x, y)`` with ``x`` float32 in [0, 1] of shape ``(B, C, H, W)``.

    The order of epoch ``e`` depends only on ``(seed, e)``, so a run resumed at any batch
    sees exactly the batches it would have seen. With ``world_size > 1`` each rank takes
    an equal share of every epoch, as ``DistributedSampler`` does.
    """

    def __init__(self, data: ImageSet, batch_size: int = 128, shuffle: bool = False,
                 seed: int = 0, max_shift: int = 0, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1, device: torch.device | str | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.max_shift = max_shift
        self.drop_last = drop_last
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device) if device is not None else None
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    @property
    def samples_per_rank(self) -> int:
        return math.ceil(len(self.data) / self.world_size)

    def __len__(self) -> int:
        n = self.samples_per_rank
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _order(self) -> torch.Tensor:
        n = len(self.data)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            total = self.samples_per_rank * self.world_size
            order = torch.cat([order, order[: total - n]])[self.rank :: self.world_size]
        return order

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()
        images, labels = self.data.images, self.data.labels
        start, self.start_batch = self.start_batch, 0
        for i in range(start, len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = images[idx]
            y = labels[idx]
            if self.device is not None and self.device.type != "cpu":
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            x = x.float().div_(255)
            if self.max_shift:
                g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 100_003 + i)
                x = random_shift(x, self.max_shift, g)
            yield x, y
