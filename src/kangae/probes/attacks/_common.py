"""Shared plumbing: input conversion, chunked forward passes and input gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...utils.device import chunk_size


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def as_images(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    """Float images in [0, 1], shaped (N, C, H, W), on the CPU (results are returned there;
    chunks go to the model's device): uint8 is divided by 255, (C, H, W) gets N=1."""
    x = torch.as_tensor(images).cpu()
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"{name} must be shaped (N, C, H, W), got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float().div(255)
    x = x.detach().float().clone()  # never share storage (or autograd state) with the caller
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"{name} must lie in [0, 1] (got values in [{float(x.min()):.3g}, "
                         f"{float(x.max()):.3g}])")
    return x


def as_labels(labels: torch.Tensor | int | list[int], n: int, num_classes: int | None = None,
              name: str = "labels") -> torch.Tensor:
    """A (N,) long tensor on the CPU; one int is repeated for every image."""
    y = torch.as_tensor(labels, dtype=torch.long).flatten().cpu()
    if y.numel() == 1:
        y = y.expand(n).clone()
    if y.numel() != n:
        raise ValueError(f"{name}: expected {n} values, got {y.numel()}")
    if num_classes is not None and len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{name} must be class indices in 0-{num_classes - 1}, got {y.tolist()[:10]}")
    return y


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
