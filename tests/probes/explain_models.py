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


def linear_model(weight: torch.Tensor) -> nn.Module:
    """Two classes: logit 1 = sum(weight * x), logit 0 = 0. Its exact attribution for class 1
    is ``weight * x`` (every attribution method that is complete agrees)."""
    c, h, w = weight.shape
    model = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 2))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[1] = weight.flatten()
        model[1].bias.zero_()
    return model


class HalfBlind(nn.Module):
    """A model that ignores the right half of the image: ``decide`` reads only the left half
    (its weights on the right are 0), and ``head`` (identity at first) maps its two units to
    the classes. Randomizing ``decide`` is what makes the explanation look at the right."""

    def __init__(self) -> None:
        super().__init__()
        self.decide = nn.Linear(784, 2)
        self.head = nn.Linear(2, 2)
        w = torch.zeros(2, 1, 28, 28)
        w[1, 0, :, :14] = torch.linspace(0.1, 1.0, 28 * 14).view(28, 14)
        with torch.no_grad():
            self.decide.weight.copy_(w.view(2, 784))
            self.decide.bias.zero_()
            self.head.weight.copy_(torch.eye(2))
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.decide(x.flatten(1)))
