"""Input preparation for every probe, written once.

- :func:`model_device`: where a model lives (its first parameter, else buffer, else the CPU),
  so a model without parameters works too.
- :func:`as_images`: pictures as float ``(N, C, H, W)`` in [0, 1] on the CPU (uint8 divided
  by 255, a single ``(C, H, W)`` image given N = 1), checked against the model's input shape.
- :func:`as_target`: one class per image (an int for all, a sequence or tensor, or
  ``None``/``"auto"`` for the predicted class), as a CPU long tensor.
- :func:`as_classes`: the classes (or channels) a prototype method makes one image for.

Chunks go to the model's device inside each probe; results come back on the CPU.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from ..errors import KangaeError
from ..utils.device import module_device

Target = int | Sequence[int] | torch.Tensor | str | None
F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["ProbeInputError", "Target", "as_classes", "as_images", "as_target", "model_device",
           "renamed"]


class ProbeInputError(KangaeError, ValueError):
    """Images or targets a probe cannot use: a user mistake (one line in the CLI), and a
    ``ValueError`` for Python callers."""


def model_device(model: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for an empty module)."""
    return module_device(model)


def as_images(images: Any, name: str = "images", shape: Sequence[int] | None = None) -> torch.Tensor:
    """Float images in [0, 1], shaped (N, C, H, W), on the CPU, sharing no storage or autograd
    state with the caller: uint8 is divided by 255, (C, H, W) gets N = 1. With ``shape``
    (C, H, W), a batch of another shape is refused with a message saying both."""
    x = torch.as_tensor(images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ProbeInputError(f"{name} must be shaped (N, C, H, W), got {tuple(x.shape)}")
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        want = "x".join(map(str, shape))
        raise ProbeInputError(f"{name} are {'x'.join(map(str, x.shape[1:]))}; the model takes {want}")
    if x.dtype == torch.uint8:
        return x.cpu().float().div(255)
    if not (x.is_floating_point() or x.dtype == torch.bool):
        raise ProbeInputError(f"{name} must be uint8 (0-255) or float in [0, 1], got {x.dtype}")
    x = x.detach().cpu().float().clone()
    if x.numel() and not torch.isfinite(x).all():
        raise ProbeInputError(f"{name} hold NaN or infinite values")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ProbeInputError(f"{name} must lie in [0, 1] (got values in [{float(x.min()):.3g}, "
                              f"{float(x.max()):.3g}])")
    return x


def as_target(target: Target, n: int, num_classes: int | None = None, *, name: str = "target",
              scores: torch.Tensor | None = None) -> torch.Tensor:
    """One class per image as an ``(n,)`` long CPU tensor: one int for all, a sequence or
    tensor of ``n``, or ``None``/``"auto"`` for the highest of ``scores`` (N, K)."""
    if target is None or (isinstance(target, str) and target == "auto"):
        if scores is None:
            raise ProbeInputError(f"{name} is needed here ('auto' picks the predicted class only "
                                  "where the probe has the model's scores)")
        return scores.detach().argmax(1).cpu().long()
    if isinstance(target, str):
        raise ProbeInputError(f"{name} must be 'auto' or a class index, not '{target}'")
    y = _long(target, name).flatten()
    if y.numel() == 1:
        y = y.expand(n)
    if y.numel() != n:
        raise ProbeInputError(f"{y.numel()} values of {name} for {n} images")
    _check_range(y, num_classes, name)
    return y.clone()


def as_classes(target: Target, count: int | None = None, *, name: str = "target") -> torch.Tensor:
    """The classes (or channels) to make one prototype each for, as a non-empty ``(T,)`` long
    CPU tensor checked against ``count``; ``None`` or ``"all"`` means every one of them."""
    if target is None or (isinstance(target, str) and target == "all"):
        if count is None:
            raise ProbeInputError(f"{name}: say which classes")
        return torch.arange(count)
    if isinstance(target, str):
        raise ProbeInputError(f"{name} must be class indices or 'all', not '{target}'")
    t = _long(target, name).flatten()
    if len(t) == 0:
        raise ProbeInputError(f"{name} must be a non-empty list of class indices")
    _check_range(t, count, name)
    return t.clone()


def _long(values: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(values)
    if t.is_floating_point() or t.is_complex():
        if not torch.equal(t, t.round()):
            raise ProbeInputError(f"{name} must be whole class indices, got {t.flatten()[:10].tolist()}")
    return t.detach().cpu().long()


def _check_range(t: torch.Tensor, count: int | None, name: str) -> None:
    if count is not None and len(t) and ((t < 0).any() or (t >= count).any()):
        raise ProbeInputError(f"{name} must lie in 0..{count - 1} (class indices), got {t.tolist()[:10]}")


def renamed(**old_to_new: str) -> Callable[[F], F]:
    """Accept a keyword's old name (``targets=``, ``labels=``) with a DeprecationWarning."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            for old, new in old_to_new.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{fn.__name__}() got both '{old}' and '{new}'")
                    warnings.warn(f"{fn.__name__}({old}=...) is now {fn.__name__}({new}=...)",
                                  DeprecationWarning, stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return call  # type: ignore[return-value]

    return wrap
