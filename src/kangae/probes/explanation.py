"""The result type of every explanation method (masks and attributions alike)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Explanation:
    """Where a decision rests, for a batch of images.

    ``attribution`` is ``(N, 1, H, W)``: higher means more important for ``target``. Masks
    also fill ``mask`` (what the optimizer found: ``(N, 1, H, W)``, or ``(N, A, 1, H, W)``
    for A areas), ``perturbed`` (the image the model saw at the end), ``prob_after`` and
    ``area`` (the share of pixels deleted or kept), and ``loss_curve`` (steps, N).
    """

    method: str
    attribution: torch.Tensor
    target: torch.Tensor
    prob: torch.Tensor
    mask: torch.Tensor | None = None
    perturbed: torch.Tensor | None = None
    prob_after: torch.Tensor | None = None
    area: torch.Tensor | None = None
    areas: tuple[float, ...] | None = None
    game: str | None = None
    loss_curve: torch.Tensor | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def summary(self, i: int, classes: Sequence[str] | None = None) -> str:
        """One line per image, as in the seed: ``7: p=96.1% -> 1.3% after deleting 6.2% of pixels``."""
        t = int(self.target[i])
        name = classes[t] if classes else str(t)
        line = f"{name}: p={float(self.prob[i]):.1%}"
        if self.prob_after is None or self.area is None:
            return f"{line} ({self.method})"
        after, area = self.prob_after[i], self.area[i]
        if after.ndim == 0:
            verb = "deleting" if self.game == "deletion" else "keeping only"
            return f"{line} -> {float(after):.1%} after {verb} {float(area):.1%} of pixels"
        verb = "deleting" if self.game == "deletion" else "keeping"
        parts = [f"{float(a):.0%}: {float(p):.1%}" for a, p in zip(self.areas or (), after)]
        return f"{line} -> after {verb} " + ", ".join(parts)
