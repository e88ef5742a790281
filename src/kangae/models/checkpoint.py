"""Checkpoints: safetensors weights plus a JSON sidecar. Loading never unpickles.

A checkpoint is a folder::

    model.safetensors   weights and buffers (normalization included)
    model.json          model name and arguments, dataset, classes, metrics, versions
    state.safetensors   optional: optimizer, scheduler and RNG tensors (for --resume)
    state.json          optional: the rest of the training state
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .. import __version__
from ..errors import RunError
from ..utils.atomic import atomic_dir, write_json
from ..utils.state import flatten_state, unflatten_state
from .zoo import MODELS, create_model

MODEL_FILE, META_FILE = "model.safetensors", "model.json"
STATE_FILE, STATE_META = "state.safetensors", "state.json"


@dataclass
class ModelMeta:
    """What a checkpoint says about its model, stored as JSON beside the weights."""

    model: str
    model_args: dict[str, Any] = field(default_factory=dict)
    dataset: str = "mnist"
    classes: list[str] = field(default_factory=lambda: [str(i) for i in range(10)])
    normalization: dict[str, list[float]] = field(default_factory=dict)
    input_shape: list[int] = field(default_factory=lambda: [1, 28, 28])
    metrics: dict[str, Any] = field(default_factory=dict)
    epoch: int = 0
    versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelMeta:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _versions() -> dict[str, str]:
    return {"kangae": __version__, "torch": torch.__version__, "python": platform.python_version()}


def _state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage, so every tensor gets its own contiguous copy.
    return {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}


def normalization_of(model: nn.Module) -> dict[str, list[float]]:
    norm = getattr(model, "normalize", None)
    if norm is None or not hasattr(norm, "mean"):
        return {}
    return {"mean": norm.mean.flatten().tolist(), "std": norm.std.flatten().tolist()}


def write_checkpoint(folder: str | os.PathLike, model: nn.Module, meta: ModelMeta,
                     training_state: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint folder through a temporary folder renamed into place, so a crash
    never leaves a half-written checkpoint under ``folder``'s name."""
    meta.versions = meta.versions or _versions()
    meta.normalization = meta.normalization or normalization_of(model)
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        save_file(_state_tensors(model), str(tmp / MODEL_FILE), metadata={"format": "pt"})
        write_json(tmp / META_FILE, meta.to_dict())
        if training_state is not None:
            tensors: dict[str, torch.Tensor] = {}
            doc = flatten_state(training_state, "state", tensors)
            save_file(tensors, str(tmp / STATE_FILE))
            write_json(tmp / STATE_META, doc)
    return folder


def read_meta(folder: str | os.PathLike) -> ModelMeta:
    path = Path(folder) / META_FILE
    try:
        return ModelMeta.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise RunError(f"{folder}: no checkpoint here ({META_FILE} is missing)") from None
    except (json.JSONDecodeError, TypeError, AttributeError, ValueError) as e:
        raise RunError(f"{path}: not a valid kangae model sidecar ({e})") from None


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise RunError(f"{path}: not a readable safetensors file ({e})") from None


def build_model(meta: ModelMeta) -> nn.Module:
    if meta.model not in MODELS:
        raise RunError(f"checkpoint names model '{meta.model}', which this kangae does not know")
    try:
        return create_model(meta.model, num_classes=len(meta.classes),
                            in_channels=meta.input_shape[0], **meta.model_args)
    except (TypeError, ValueError, IndexError) as e:
        raise RunError(f"checkpoint's arguments for model '{meta.model}' do not fit it ({e})") from None


def read_checkpoint(folder: str | os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> tuple[nn.Module, ModelMeta]:
    """Rebuild the model from its sidecar and load its weights (in eval mode)."""
    folder = Path(folder)
    meta = read_meta(folder)
    model = build_model(meta)
    tensors = _load_tensors(folder / MODEL_FILE)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise RunError(f"{folder / MODEL_FILE}: weights do not fit model '{meta.model}' ({e})") from None
    return model.to(map_location).eval(), meta


def read_training_state(folder: str | os.PathLike) -> dict[str, Any] | None:
    folder = Path(folder)
    if not (folder / STATE_META).is_file():
        return None
    try:
        doc = json.loads((folder / STATE_META).read_text())
        return unflatten_state(doc, _load_tensors(folder / STATE_FILE))
    except (json.JSONDecodeError, ValueError, KeyError, TypeError) as e:
        raise RunError(f"{folder / STATE_META}: unreadable training state ({e})") from None
