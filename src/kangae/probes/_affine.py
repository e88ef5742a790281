"""Models that start with an affine map of the pixels: a change of pixel p by d then moves
the first layer's output by ``d * columns[p]``, so a search scores a candidate with one
column instead of a first-layer product. Used by the prototype search and the edit search."""

from __future__ import annotations

import torch
from torch import nn

from ..models.zoo import Normalize


def affine_prefix(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """Split ``model`` into (affine prefix ending in its first Linear/Conv2d, the rest)."""
    if not isinstance(model, nn.Sequential):
        return None
    children = leaves(model)
    for i, m in enumerate(children):
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            return nn.Sequential(*children[: i + 1]), nn.Sequential(*children[i + 1 :])
        if not isinstance(m, (Normalize, nn.Flatten, nn.Identity)):
            return None
    return None


def leaves(seq: nn.Sequential) -> list[nn.Module]:
    """A nested Sequential as one flat list of modules (same computation)."""
    out: list[nn.Module] = []
    for m in seq.children():
        out += leaves(m) if isinstance(m, nn.Sequential) else [m]
    return out


def linear_columns(prefix: nn.Sequential, shape: tuple[int, ...]) -> torch.Tensor | None:
    """The columns of a ``[Normalize | Flatten | Identity]* Linear`` prefix read off its
    weights (``W[:, p] / std``) instead of pushing an identity batch through it."""
    scale = torch.ones(shape, dtype=torch.float64)
    *head, last = list(prefix)
    if not isinstance(last, nn.Linear) or last.in_features != scale.numel():
        return None
    flat = False
    for m in head:
        if isinstance(m, Normalize) and not flat and len(shape) == 3:
            scale = scale / m.std.to(scale).view(-1, 1, 1)
        elif isinstance(m, (nn.Flatten, nn.Identity)):
            flat = flat or isinstance(m, nn.Flatten)
        else:
            return None
    w = last.weight
    return (w * scale.flatten().to(w)).t().contiguous()


def affine_split(model: nn.Module, shape: tuple[int, ...]
                 ) -> tuple[nn.Module, torch.Tensor, nn.Module] | None:
    """(prefix, columns ``(D, P)`` in float32, rest) when ``model`` starts with
    ``[Normalize | Flatten | Identity]* Linear``: ``model(x) = rest(prefix(x))``."""
    split = affine_prefix(model)
    if split is None:
        return None
    columns = linear_columns(split[0], shape)
    return None if columns is None else (split[0], columns.detach().float().contiguous(), split[1])
