"""Shared plumbing for probes: a model's input shape, and a safe way to borrow a model."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..models.layers import eval_mode
from ..utils.device import chunk_size
from .inputs import as_target, model_device


def input_shape_of(model: nn.Module, default: tuple[int, ...] = (1, 28, 28)) -> tuple[int, ...]:
    """(C, H, W) the model expects: from its first conv or linear layer where that is clear."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return (m.in_channels, *default[1:])
        if isinstance(m, nn.Linear):
            side = int(round((m.in_features / default[0]) ** 0.5))
            if default[0] * side * side == m.in_features:
                return (default[0], side, side)
            return default
    return default


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no parameter gradients inside the block; both restored on exit."""
    flags = [p.requires_grad for p in model.parameters()]
    try:
        with eval_mode(model):
            for p in model.parameters():
                p.requires_grad_(False)
            yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


def eval_copy(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A private eval-mode copy in ``dtype``: searches never touch the caller's model."""
    clone = copy.deepcopy(model).eval()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone.to(dtype)


@torch.no_grad()
def logits_of(model: nn.Module, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Logits for all ``images`` (uint8 0-255 or float in [0, 1]), batched, in eval mode."""
    device = model_device(model)
    batch_size = chunk_size(batch_size, device, tuple(images.shape[1:]))
    out = []
    with frozen(model):
        for chunk in images.split(batch_size):
            x = chunk.to(device)
            x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
            out.append(model(x).float().cpu())
    return torch.cat(out)


def resolve_targets(probs: torch.Tensor, target: object) -> torch.Tensor:
    """Target classes for a batch (see :func:`kangae.probes.inputs.as_target`), on the
    device of ``probs``: the predicted ones for ``None``/``"auto"``."""
    return as_target(target, len(probs), probs.shape[1], scores=probs).to(probs.device)  # type: ignore[arg-type]
