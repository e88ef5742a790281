"""Shared plumbing: input conversion, chunked forward passes and input gradients."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...utils.device import chunk_size
from ..display import Shows
from ..inputs import as_images, as_target, model_device

__all__ = ["PIXEL_UNITS", "as_images", "as_labels", "loss_gradient", "model_device", "probabilities"]

# What an eps, an alpha or a level means here: a change of a pixel's value on the [0, 1]
# scale (8/255 = 0.031 is the usual ImageNet eps), whatever normalization the model applies
# inside, since every model takes pixels and normalizes them itself.
PIXEL_UNITS = "pixels on the [0, 1] scale"


def as_labels(labels: torch.Tensor | int | list[int], n: int, num_classes: int | None = None,
              name: str = "target") -> torch.Tensor:
    """A (N,) long tensor on the CPU; one int is repeated for every image."""
    return as_target(labels, n, num_classes, name=name)


@torch.no_grad()
def probabilities(model: nn.Module, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Softmax output for ``x`` (on any device), computed on the model's device, returned on CPU."""
    device = model_device(model)
    batch_size = chunk_size(batch_size, device, tuple(x.shape[1:]))
    return torch.cat([F.softmax(model(c.to(device)).float(), 1).cpu() for c in x.split(batch_size)])


def loss_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of the summed cross-entropy with respect to ``x`` (one batch, model's device),
    and the logits it was computed from."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x).float()
        loss = F.cross_entropy(logits, y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad, logits.detach()


def save_fool_files(result: Shows, folder: str | Path, numbers: dict[str, Any],
                    draw: Callable[[Path], list[str]]) -> Path:
    """The ``kangae fool`` layout for one result: the pictures ``draw`` writes, ``fool.json``
    (``numbers`` and the file names) and the tensors in ``tensors.safetensors``."""
    from ...utils.atomic import write_json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = draw(folder)
    write_json(folder / "fool.json", {**numbers, "files": files})
    result._save_tensors(folder)
    return folder
