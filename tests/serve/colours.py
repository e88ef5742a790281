"""A plain-torch RGB classifier whose answer is known: the class is the picture's mean colour,
rounded to a corner of the colour cube (black, red, green, yellow, blue, magenta, cyan, white).

One 1x1 convolution gives each pixel a logit per class, ``SCALE * c_k . (2 x - 1)`` for the
class colour ``c_k`` in {0, 1}^3, and a global average pool makes the picture's logits. A
picture of colour ``c`` scores highest for the class ``c`` itself; Grad-CAM of class ``k`` is
the pixels' own logit for ``k``, clipped at 0 (known exactly).
"""

from __future__ import annotations

import torch
from torch import nn

NAMES = ("black", "red", "green", "yellow", "blue", "magenta", "cyan", "white")
COLOURS = torch.tensor([[k & 1, (k >> 1) & 1, (k >> 2) & 1] for k in range(8)], dtype=torch.float32)
SCALE = 4.0


def colour_net() -> nn.Module:
    """Untrained layers; the weights come from :func:`colour_weights` (a safetensors file)."""
    return nn.Sequential(nn.Conv2d(3, 8, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def colour_weights() -> dict[str, torch.Tensor]:
    return {"0.weight": (2 * SCALE * COLOURS)[:, :, None, None].contiguous(),
            "0.bias": -SCALE * COLOURS.sum(1)}


def pixel_logits(x: torch.Tensor) -> torch.Tensor:
    """(3, H, W) pixels -> (8, H, W): each pixel's logit per class (what Grad-CAM sees)."""
    return SCALE * torch.einsum("kc,chw->khw", COLOURS, 2 * x - 1)
