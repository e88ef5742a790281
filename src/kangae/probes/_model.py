"""Shared plumbing for probes: a model's input shape, and a safe way to borrow a model."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..models.layers import eval_mode, forward_hooks
from ..models.zoo import Normalize
from ..utils.device import chunk_size
from .inputs import ProbeInputError, as_target, model_device

# modules that pass the picture on unchanged in shape: a wrapper may put them before the model
_SHAPE_KEEPING = (nn.Identity, nn.Dropout)
_WRAPPED = ("module", "model", "net", "inner", "backbone", "wrapped")


def declared_input_shape(model: nn.Module) -> tuple[int, int, int] | None:
    """``model.input_shape`` (C, H, W) where the model or a simple wrapper around it says it:
    a ``Sequential`` whose first real module says it (after normalization or identity
    modules), a module with one child, or one whose ``module``/``model``/``net``... does."""
    seen: set[int] = set()
    todo = [model]
    while todo:
        m = todo.pop(0)
        if id(m) in seen:
            continue
        seen.add(id(m))
        shape = getattr(m, "input_shape", None)
        if shape is not None:
            return _checked_shape(shape, type(m).__name__)
        kids = list(m.children())
        if isinstance(m, nn.Sequential):
            for kid in kids:
                todo.append(kid)
                if not _keeps_shape(kid):
                    break
        elif len(kids) == 1:
            todo.append(kids[0])
        else:
            todo += [getattr(m, a) for a in _WRAPPED if isinstance(getattr(m, a, None), nn.Module)]
    return None


def _keeps_shape(m: nn.Module) -> bool:
    """Identity, dropout and parameter-free normalization (``Normalize`` and the like)."""
    if isinstance(m, (*_SHAPE_KEEPING, Normalize)):
        return True
    plain = not list(m.children()) and not list(m.parameters())
    return plain and "normaliz" in type(m).__name__.lower()


def _checked_shape(shape: object, owner: str) -> tuple[int, int, int]:
    try:
        out = tuple(int(v) for v in shape)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3 or min(out) < 1:
        raise ProbeInputError(f"{owner}.input_shape must be (C, H, W) of positive ints, got {shape!r}")
    return out  # type: ignore[return-value]


def _first_weighted(model: nn.Module) -> nn.Module | None:
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.LazyLinear, nn.Bilinear)):
            return m
    return None


def input_shape_of(model: nn.Module) -> tuple[int, int, int]:
    """(C, H, W) the model takes: ``model.input_shape`` where it (or a simple wrapper around it)
    says it, else from a first ``Linear`` layer on the flattened pixels (``C*H*W`` inputs, a
    square grey or RGB image). Anything else raises :class:`ProbeInputError` asking for
    ``input_shape=(C, H, W)``: a conv layer tells the channels, never the size."""
    shape = declared_input_shape(model)
    if shape is not None:
        return shape
    first = _first_weighted(model)
    name = type(model).__name__
    if isinstance(first, nn.Linear):
        for c in (1, 3):
            side = math.isqrt(first.in_features // c)
            if c * side * side == first.in_features:
                return (c, side, side)
        raise ProbeInputError(f"cannot tell the input shape of {name}: its first layer takes "
                              f"{first.in_features} values, not a square grey or RGB image; "
                              "give input_shape=(C, H, W) or set model.input_shape")
    if isinstance(first, nn.Conv2d):
        c = first.in_channels
        raise ProbeInputError(f"cannot tell the input size of {name} (its first conv takes {c} "
                              f"channel{'s' * (c != 1)}, of any size): give input_shape=({c}, H, W) or set "
                              f"model.input_shape = ({c}, H, W)")
    raise ProbeInputError(f"cannot tell the input shape of {name}: give input_shape=(C, H, W) "
                          "or set model.input_shape")


class _Reached(Exception):
    """Raised by a forward hook to stop the forward pass at a layer, carrying its output."""

    def __init__(self, output: torch.Tensor):
        super().__init__("layer reached")
        self.output = output


@contextmanager
def stop_at(model: nn.Module, layer: str) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    """Inside the block, ``run(x)`` returns the output of ``layer`` for ``x`` without computing
    the layers after it (a hook ends the forward pass there; it is removed on exit)."""

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        raise _Reached(output)

    def run(x: torch.Tensor) -> torch.Tensor:
        try:
            model(x)
        except _Reached as reached:
            return reached.output
        raise ProbeInputError(f"layer '{layer}' is not used by the model's forward pass")

    with forward_hooks(model, {layer: hook}):
        yield run


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


def readings(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The class the model reads in each image: what stands in for labels it has none of."""
    return logits_of(model, images).argmax(1)


def resolve_targets(probs: torch.Tensor, target: object) -> torch.Tensor:
    """Target classes for a batch (see :func:`kangae.probes.inputs.as_target`), on the
    device of ``probs``: the predicted ones for ``None``/``"auto"``."""
    return as_target(target, len(probs), probs.shape[1], scores=probs).to(probs.device)  # type: ignore[arg-type]
