"""Pick a device the way a user expects: CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import math

import torch

from ..errors import KangaeError


def pick_device(name: str | torch.device | None = "auto") -> torch.device:
    if isinstance(name, torch.device):
        return name
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise KangaeError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise KangaeError("device 'cuda' was asked for but no CUDA GPU is available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise KangaeError("device 'mps' was asked for but MPS is not available")
    return device


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for an empty module)."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def chunk_size(batch_size: int | None, device: torch.device | str,
               image_shape: tuple[int, ...] = (1, 28, 28)) -> int:
    """Images per forward (and backward) pass: ``batch_size`` if given, else 1000 on an
    accelerator and, on a CPU, a power of two near 131,072 input values (128 MNIST digits,
    32 images of 56 x 56), at least 8. A conv net's activations then stay in cache: measured
    on 2 cores, fast-cnn's forward runs 2.3x faster in chunks of 128 than of 1000, the
    56 x 56 global-cnn's 2.8x faster in chunks of 32, and PGD on fast-cnn 1.8x faster."""
    if batch_size is not None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        return int(batch_size)
    if torch.device(device).type != "cpu":
        return 1000
    values = max(1, math.prod(image_shape))
    return max(8, 2 ** max(0, (131072 // values).bit_length() - 1))
