"""What ``kangae serve`` serves: a run folder, or a tour folder that names one.

A tour folder holds ``tour.json`` with ``"serve_run"``, a run path relative to the tour
folder, and optionally ``"prototypes"``, a relative path to a safetensors file whose key
``images`` is ``(num_classes, C, H, W)`` in [0, 1]. Only this folder's checkpoint is ever
loaded; nothing here takes a path from a request.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..errors import KangaeError, RunError

TOUR_FILE = "tour.json"


def _relative(tour: Path, value: object, key: str) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise KangaeError(f"{tour / TOUR_FILE}: '{key}' must be a path relative to the tour folder")
    p = Path(value)
    if p.is_absolute():
        raise KangaeError(f"{tour / TOUR_FILE}: '{key}' must be relative to the tour folder, got {value}")
    return tour / p


def load_prototypes(path: Path, num_classes: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The ``images`` tensor of a safetensors file, checked against the model."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise KangaeError(f"{path}: no such prototypes file")
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise KangaeError(f"{path}: not a readable safetensors file ({e})") from None
    if "images" not in tensors:
        raise KangaeError(f"{path}: no 'images' tensor (found: {', '.join(tensors) or 'none'})")
    images = tensors["images"].float()
    want = (num_classes, *shape)
    if tuple(images.shape) != want:
        raise KangaeError(f"{path}: 'images' has shape {list(images.shape)}; expected {list(want)}")
    if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise KangaeError(f"{path}: 'images' must hold values in [0, 1]")
    return images


def resolve(folder: str | os.PathLike) -> tuple[Path, Path | None]:
    """(run folder, prototypes file or None) for a run or tour folder; a clear error otherwise."""
    path = Path(folder)
    if not path.is_dir():
        raise KangaeError(f"{path}: no such folder (give a kangae run folder or a tour folder)")
    tour_file = path / TOUR_FILE
    if tour_file.is_file():
        try:
            tour = json.loads(tour_file.read_text())
        except (ValueError, OSError) as e:
            raise KangaeError(f"{tour_file}: not valid JSON ({e})") from None
        if not isinstance(tour, dict) or "serve_run" not in tour:
            raise KangaeError(f"{tour_file}: no 'serve_run' key (the run to serve, relative to the tour)")
        run = _relative(path, tour["serve_run"], "serve_run")
        protos = _relative(path, tour["prototypes"], "prototypes") if tour.get("prototypes") else None
        return run, protos
    if (path / "checkpoints").is_dir() or (path / "model.json").is_file():
        return path, None
    raise RunError(f"{path}: neither a kangae run folder (no checkpoints/) nor a tour folder "
                   f"(no {TOUR_FILE})")
