"""What ``kangae serve`` serves: a run folder, or a tour folder that names one.

A tour folder holds ``tour.json`` with ``"serve_run"``, a run path relative to the tour
folder, and optionally ``"prototypes"``, a relative path to a safetensors file whose key
``images`` is ``(num_classes, C, H, W)`` in [0, 1]. A tour of the user's own model holds
``"serve_model"`` instead: the ``spec``, ``weights`` and ``card`` it was opened with (see
:func:`kangae.open_model`); its prototypes file also has ``targets``, the classes of its
images. Only this folder's checkpoint or model is ever loaded; nothing here takes a path
from a request.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class Source:
    """A run folder to load, or the model of a tour of the user's model (``model``: the
    keyword arguments of :func:`kangae.open_model`), and a prototypes file or None."""

    run: Path | None
    model: dict[str, Any] | None
    prototypes: Path | None


CARD_FIELDS = ("channels", "size", "mean", "std", "normalizes_itself", "resize", "preprocess", "classes",
               "dataset", "name")


def _served_model(tour_file: Path, value: Any) -> dict[str, Any]:
    """``serve_model`` as open_model's arguments: the card without what kangae inferred."""
    if not isinstance(value, dict) or not isinstance(value.get("spec"), str) or not value["spec"]:
        raise KangaeError(f"{tour_file}: 'serve_model' must hold the model's 'spec' (and 'weights', 'card')")
    weights, card = value.get("weights"), value.get("card")
    if weights is not None and not isinstance(weights, str):
        raise KangaeError(f"{tour_file}: 'serve_model.weights' must be a path")
    if card is not None and not isinstance(card, dict):
        raise KangaeError(f"{tour_file}: 'serve_model.card' must be a model card (a JSON object)")
    if card is not None:
        card = {k: v for k, v in card.items() if k in CARD_FIELDS and v is not None and v != ""}
    return {"spec": value["spec"], "weights": weights, "card": card}


def resolve_source(folder: str | os.PathLike) -> Source:
    """What a run or tour folder serves; a clear error otherwise."""
    path = Path(folder)
    tour_file = path / TOUR_FILE
    if path.is_dir() and tour_file.is_file():
        try:
            tour = json.loads(tour_file.read_text())
        except (ValueError, OSError) as e:
            raise KangaeError(f"{tour_file}: not valid JSON ({e})") from None
        if isinstance(tour, dict) and "serve_run" not in tour and "serve_model" in tour:
            protos = _relative(path, tour["prototypes"], "prototypes") if tour.get("prototypes") else None
            return Source(None, _served_model(tour_file, tour["serve_model"]), protos)
    run, protos = resolve(folder)
    return Source(run, None, protos)


def load_picture_prototypes(path: Path, num_classes: int, shape: tuple[int, ...]
                            ) -> tuple[torch.Tensor, list[int]]:
    """(images, their classes) of a prototypes file: every class in order, or the classes of
    its ``targets`` tensor (a tour of the user's model keeps the classes it shows)."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise KangaeError(f"{path}: no such prototypes file")
    try:
        targets = load_file(path).get("targets")
    except Exception as e:  # noqa: BLE001 - load_prototypes says the same below
        raise KangaeError(f"{path}: not a readable safetensors file ({e})") from None
    if targets is None:
        return load_prototypes(path, num_classes, shape), list(range(num_classes))
    classes = [int(t) for t in targets.flatten()]
    if any(not 0 <= t < num_classes for t in classes):
        raise KangaeError(f"{path}: 'targets' must be classes 0..{num_classes - 1}")
    return load_prototypes(path, len(classes), shape), classes


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
            raise KangaeError(f"{tour_file}: no 'serve_run' key (the run to serve, relative to the tour) "
                              "nor 'serve_model'")
        run = _relative(path, tour["serve_run"], "serve_run")
        protos = _relative(path, tour["prototypes"], "prototypes") if tour.get("prototypes") else None
        return run, protos
    if (path / "checkpoints").is_dir() or (path / "model.json").is_file():
        return path, None
    raise RunError(f"{path}: neither a kangae run folder (no checkpoints/) nor a tour folder "
                   f"(no {TOUR_FILE})")
