"""Cluttered MNIST: a localization set where the right answer to "where does it look?" is known.

After the cluttered MNIST of Jaderberg et al. ("Spatial Transformer Networks", NeurIPS
2015): each digit is placed at a random position on a larger black canvas strewn with
fragments cut from other digits. The digit's box is kept, so a pointing game can score an
explanation. Generation is deterministic (seeded per split) and cached in memory, so
``load_dataset("cluttered-mnist", split)`` gives the same images every time and can be
trained on like any dataset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .dataset import ImageSet, load_dataset
from .integrity import is_strict

NAME = "cluttered-mnist"
SIZE = 56
TRAIN_N, TEST_N = 20_000, 2_000


@dataclass(frozen=True)
class ClutteredSet:
    """``data`` holds the canvases; ``boxes`` each digit's ink box (left, top, right, bottom),
    right and bottom exclusive, in canvas pixels."""

    data: ImageSet
    boxes: torch.Tensor


def _ink_box(img: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(img.any(1))
    cols = np.flatnonzero(img.any(0))
    if not len(rows):
        return 0, 0, img.shape[1], img.shape[0]
    return int(cols[0]), int(rows[0]), int(cols[-1] + 1), int(rows[-1] + 1)


def make_cluttered(source: ImageSet, n: int | None = None, size: int = SIZE, fragments: int = 8,
                   fragment_size: int = 8, seed: int = 0) -> ClutteredSet:
    """Place ``n`` digits of ``source`` on ``size`` x ``size`` canvases with ``fragments``
    clutter pieces each (never overlapping the digit's box, so a hit is unambiguous)."""
    rng = np.random.default_rng(seed)
    src = source.images[:, 0].numpy()
    n = len(src) if n is None else min(n, len(src))
    side = src.shape[-1]
    canvases = np.zeros((n, size, size), dtype=np.uint8)
    boxes = np.zeros((n, 4), dtype=np.int64)
    for i in range(n):
        digit = src[i]
        left, top, right, bottom = _ink_box(digit)
        y, x = rng.integers(0, size - side + 1, 2)
        box = (x + left, y + top, x + right, y + bottom)
        boxes[i] = box
        canvas = canvases[i]
        placed = 0
        for _ in range(fragments * 6):
            if placed == fragments:
                break
            other = src[rng.integers(0, len(src))]
            oy, ox = rng.integers(0, side - fragment_size + 1, 2)
            piece = other[oy : oy + fragment_size, ox : ox + fragment_size]
            if piece.max() < 64:
                continue
            py, px = rng.integers(0, size - fragment_size + 1, 2)
            if px < box[2] and px + fragment_size > box[0] and py < box[3] and py + fragment_size > box[1]:
                continue
            region = canvas[py : py + fragment_size, px : px + fragment_size]
            np.maximum(region, piece, out=region)
            placed += 1
        region = canvas[y : y + side, x : x + side]
        np.maximum(region, digit, out=region)
    data = ImageSet(torch.from_numpy(canvases[:, None]), source.labels[:n].clone(), source.classes,
                    NAME, source.split, f"{source.source} (cluttered {size}x{size}, seed {seed})")
    return ClutteredSet(data, torch.from_numpy(boxes))


@lru_cache(maxsize=4)
def _cached(split: str, data_dir: str | None, strict: bool, _env: tuple[str | None, ...]) -> ClutteredSet:
    source = load_dataset("mnist", split, data_dir=data_dir, strict=strict)
    n = TRAIN_N if split == "train" else TEST_N
    return make_cluttered(source, n, seed=1 if split == "train" else 2)


def load_cluttered(split: str = "test", data_dir: str | os.PathLike | None = None,
                   strict: bool | None = None) -> ClutteredSet:
    """The standard cluttered-MNIST split: 20,000 train / 2,000 test canvases of 56 x 56."""
    env = tuple(os.environ.get(k) for k in ("KANGAE_DATA", "KANGAE_CACHE", "KANGAE_OFFLINE", "HOME"))
    return _cached(split, str(data_dir) if data_dir else None, is_strict(strict), env)


def load_split(split: str, data_dir: str | os.PathLike | None = None, strict: bool | None = None) -> ImageSet:
    """The registry's builder for ``load_dataset("cluttered-mnist", split)``."""
    return load_cluttered(split, data_dir, strict).data
