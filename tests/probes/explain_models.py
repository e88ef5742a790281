"""Models whose right explanation is known by construction."""

from __future__ import annotations

import torch
from torch import nn

REGION = (slice(4, 16), slice(4, 16))  # the only pixels class 1 looks at


def region_model(weight: float = 1.0, bias0: float = 8.0) -> nn.Module:
    """Two classes on 28x28: logit 1 = weight * (ink inside REGION), logit 0 = ``bias0``."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 2))
    w = torch.zeros(2, 1, 28, 28)
    w[1, 0][REGION] = weight
    with torch.no_grad():
        model[1].weight.copy_(w.view(2, 784))
        model[1].bias.copy_(torch.tensor([bias0, 0.0]))
    return model


def region_images(n: int = 4) -> torch.Tensor:
    """Ink inside REGION (a 4x4 block, read as class 1) and a decoy block outside it."""
    x = torch.zeros(n, 1, 28, 28)
    x[:, 0, 8:12, 8:12] = 1.0
    x[:, 0, 20:24, 20:24] = 1.0
    return x


def in_region_share(attribution: torch.Tensor) -> torch.Tensor:
    """Share of each image's positive attribution that falls inside REGION."""
    a = attribution.clamp(min=0)[:, 0]
    inside = a[:, REGION[0], REGION[1]].flatten(1).sum(1)
    return inside / a.flatten(1).sum(1).clamp_min(1e-12)
