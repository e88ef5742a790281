"""Random draws that belong to one image each, so an image's result does not depend on the
other images of its batch.

A batch drawn from one ``torch.Generator`` gives image 3 different noise when it is computed
beside classes 1 and 5 than when it is computed alone. :class:`RowGenerators` holds one
generator per row (seeded from the caller's seed and what the row is, e.g. its class);
:func:`randint` and :func:`randn` take either kind and draw row by row from a
``RowGenerators``, so activation maximization's starting noise and transforms for a class
are the same whichever classes share its batch (the web app computes prototypes in batches
of whatever was asked at the time).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

_MASK = (1 << 63) - 1


def row_seed(seed: int, *parts: int) -> int:
    """A seed for one row from the caller's ``seed`` and what the row is (its class, its copy):
    distinct parts give distinct, well-spread seeds, the same on every platform."""
    out = seed & _MASK
    for p in parts:
        out = (out * 1_000_003 + int(p) + 0x9E3779B97F4A7C15) & _MASK
    return out


class RowGenerators:
    """One ``torch.Generator`` per row of a batch, for :func:`randint` and :func:`randn`."""

    def __init__(self, seeds: Sequence[int]):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def __len__(self) -> int:
        return len(self.generators)


def randint(generator: torch.Generator | RowGenerators, high: int, shape: Sequence[int]) -> torch.Tensor:
    """``torch.randint(0, high, shape)``; from a :class:`RowGenerators`, row ``i`` (the first
    dimension, which must be its length) comes from generator ``i``."""
    if isinstance(generator, RowGenerators):
        _check(generator, shape)
        tail = tuple(shape[1:])
        return torch.stack([torch.randint(0, high, tail, generator=g) for g in generator.generators])
    return torch.randint(0, high, tuple(shape), generator=generator)


def randn(generator: torch.Generator | RowGenerators, shape: Sequence[int]) -> torch.Tensor:
    """``torch.randn(shape)``, row by row from a :class:`RowGenerators` as :func:`randint`."""
    if isinstance(generator, RowGenerators):
        _check(generator, shape)
        return torch.stack([torch.randn(tuple(shape[1:]), generator=g) for g in generator.generators])
    return torch.randn(tuple(shape), generator=generator)


def _check(generator: RowGenerators, shape: Sequence[int]) -> None:
    if not shape or shape[0] != len(generator):
        raise ValueError(f"a draw of shape {tuple(shape)} from {len(generator)} row generators")
