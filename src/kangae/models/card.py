"""Model cards: what a model expects, so kangae can feed it pictures and name its answers.

A card is a small JSON file beside the weights (``<weights>.card.json`` or ``card.json``) or
given with ``--card``::

    {"channels": 3, "size": 224, "resize": 256, "preprocess": "center-crop",
     "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
     "classes": "imagenet", "dataset": "imagenet", "name": "my-vgg16"}

``classes`` is a list, a text file (one name a line, relative to the card) or ``"imagenet"``
(the 1,000 names ship with kangae). ``"normalizes_itself": true`` replaces mean and std for
a model that takes pixels in [0, 1]. Whatever can be inferred is (the channel count from the
first layer, the number of classes from a trial forward pass, the size of a model whose first
layer is linear); what cannot is one :class:`CardError` line naming the field.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import KangaeError
from ..utils.device import module_device


class CardWarning(UserWarning):
    """A card that is valid but probably not what its author meant (said, not refused)."""

PREPROCESS = ("center-crop", "stretch", "mnist")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_FRACTION = 0.875  # resize the shorter side to size / 0.875 (256 for 224), then crop: torchvision's rule
_FIELDS = ("channels", "size", "mean", "std", "normalizes_itself", "resize", "preprocess", "classes",
           "dataset", "name")


class CardError(KangaeError):
    """A model card that is missing a field, contradicts itself or does not fit the model."""


@cache
def imagenet_classes() -> tuple[str, ...]:
    """ImageNet-1k's class names in index order (Keras' short WordNet names)."""
    text = (Path(__file__).with_name("imagenet_classes.txt")).read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line)


@dataclass(frozen=True)
class ModelCard:
    """What a model expects. ``None`` means "not said"; :func:`complete_card` fills it in."""

    channels: int | None = None
    size: tuple[int, int] | None = None  # (H, W) the model sees
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    normalizes_itself: bool | None = None
    resize: int | None = None  # shorter side before the centre crop
    preprocess: str = "center-crop"
    classes: tuple[str, ...] | None = None
    dataset: str = ""
    name: str = ""
    source: str = ""  # where the card came from, for messages
    inferred: tuple[str, ...] = field(default=())  # the fields kangae worked out itself

    @property
    def input_shape(self) -> tuple[int, int, int]:
        if self.channels is None or self.size is None:
            raise CardError(f"{self.where}: the input shape is not known yet")
        return (self.channels, *self.size)

    @property
    def where(self) -> str:
        return self.source or "model card"

    @property
    def resize_to(self) -> int:
        """The shorter side a picture is resized to before the centre crop."""
        h, w = self.size or (0, 0)
        return self.resize or round(max(h, w) / CROP_FRACTION)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("source")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _error(where: str, message: str) -> CardError:
    return CardError(f"{where}: {message}")


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _positive_int(value: Any, what: str, where: str) -> int:
    if not _is_positive_int(value):
        raise _error(where, f"{what} must be a positive integer, not {value!r}")
    return int(value)


def _size(value: Any, where: str) -> tuple[int, int]:
    if _is_positive_int(value):
        value = [value, value]
    if isinstance(value, list) and len(value) == 2 and all(map(_is_positive_int, value)):
        return (value[0], value[1])
    raise _error(where, f"'size' must be a positive integer or [height, width], not {value!r}")


def _floats(value: Any, key: str, where: str) -> tuple[float, ...]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = [value]
    if not (isinstance(value, list) and value and all(isinstance(v, int | float) and not isinstance(v, bool)
                                                      for v in value)):
        raise _error(where, f"'{key}' must be a number or a list of numbers, not {value!r}")
    return tuple(float(v) for v in value)


def _classes(value: Any, folder: Path | None, where: str) -> tuple[str, ...]:
    if value == "imagenet":
        return imagenet_classes()
    if isinstance(value, list) and value and all(isinstance(v, str | int) for v in value):
        return tuple(str(v) for v in value)
    if isinstance(value, str):
        path = Path(value) if folder is None or Path(value).is_absolute() else folder / value
        try:
            names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as e:
            raise _error(where, f"'classes' names {path}, which cannot be read "
                                f"({getattr(e, 'strerror', None) or e})") from None
        names = [n for n in names if n]
        if not names:
            raise _error(where, f"'classes' file {path} has no names (one a line)")
        return tuple(names)
    raise _error(where, "'classes' must be a list of names, a text file with one name a line, "
                        f"or \"imagenet\", not {value!r}")


def card_from_dict(d: Any, source: str = "", folder: Path | None = None) -> ModelCard:
    """A card from parsed JSON; unknown keys and wrong types are one line naming the field."""
    where = source or "model card"
    if not isinstance(d, dict):
        raise _error(where, "a model card is a JSON object such as "
                            "{\"size\": 224, \"classes\": \"imagenet\"}")
    unknown = sorted(set(d) - set(_FIELDS))
    if unknown:
        raise _error(where, f"unknown field '{unknown[0]}'; a card has {', '.join(_FIELDS)}")
    kw: dict[str, Any] = {"source": source}
    if "channels" in d:
        kw["channels"] = _positive_int(d["channels"], "'channels'", where)
    if "size" in d:
        kw["size"] = _size(d["size"], where)
    for key in ("mean", "std"):
        if key in d:
            kw[key] = _floats(d[key], key, where)
    if "normalizes_itself" in d:
        if not isinstance(d["normalizes_itself"], bool):
            raise _error(where, "'normalizes_itself' must be true or false")
        kw["normalizes_itself"] = d["normalizes_itself"]
    if "resize" in d:
        kw["resize"] = _positive_int(d["resize"], "'resize' (the shorter side)", where)
    if "preprocess" in d:
        if d["preprocess"] not in PREPROCESS:
            raise _error(where, f"'preprocess' must be one of {', '.join(PREPROCESS)}, "
                                f"not {d['preprocess']!r}")
        kw["preprocess"] = d["preprocess"]
    if "classes" in d:
        kw["classes"] = _classes(d["classes"], folder, where)
    for key in ("dataset", "name"):
        if key in d:
            if not isinstance(d[key], str):
                raise _error(where, f"'{key}' must be a string")
            kw[key] = d[key]
    return check_card(ModelCard(**kw))


def read_card(path: str | os.PathLike) -> ModelCard:
    """Read a card's JSON file (never anything that executes)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CardError(f"{path}: no such model card") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CardError(f"{path}: cannot read the model card ({e})") from None
    except json.JSONDecodeError as e:
        raise CardError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    return card_from_dict(doc, str(path), path.parent)


def card_beside(weights: str | os.PathLike) -> Path | None:
    """The card that sits beside a weights file, if any: ``w.safetensors.card.json``, then
    ``w.card.json`` (the name without its suffix, or up to its first dot), then ``card.json``."""
    w = Path(weights)
    names = dict.fromkeys([w.name + ".card.json", w.stem + ".card.json",
                           w.name.split(".")[0] + ".card.json", "card.json"])
    for name in names:
        if (w.parent / name).is_file():
            return w.parent / name
    return None


def check_card(card: ModelCard) -> ModelCard:
    """Refuse a card whose fields contradict each other (model-independent checks)."""
    where = card.where
    if (card.mean is None) != (card.std is None):
        missing = "std" if card.std is None else "mean"
        raise _error(where, f"'{missing}' is missing: give both 'mean' and 'std', or neither")
    if card.normalizes_itself and card.mean is not None:
        raise _error(where, "'normalizes_itself' is true but 'mean' and 'std' are given too; "
                            "say one or the other")
    if card.mean is not None and card.std is not None:
        if len(card.mean) != len(card.std):
            raise _error(where, f"'mean' has {len(card.mean)} values but 'std' has {len(card.std)}")
        if card.channels is not None and len(card.mean) not in (1, card.channels):
            raise _error(where, f"'mean' has {len(card.mean)} values for {card.channels} channels")
        if any(s <= 0 for s in card.std):
            raise _error(where, "'std' values must be positive")
        if max(card.mean) > 1.0 or max(card.std) > 1.0:
            raise _error(where, "'mean' and 'std' look like 0-255 values; kangae gives the model pixels in "
                                "[0, 1], so divide them by 255")
    if card.resize is not None and card.size is not None and card.resize < min(card.size):
        raise _error(where, f"'resize' {card.resize} is smaller than the crop 'size' {list(card.size)}")
    if card.preprocess == "mnist" and card.channels not in (None, 1):
        raise _error(where, "'preprocess': \"mnist\" makes grey digits, but 'channels' is "
                            f"{card.channels}")
    return card


def _first_layer(model: nn.Module) -> nn.Module | None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            return m
    return None


def _infer_shape(card: ModelCard, model: nn.Module) -> tuple[ModelCard, list[str]]:
    inferred: list[str] = []
    channels, size = card.channels, card.size
    first = _first_layer(model)
    if channels is None and isinstance(first, nn.Conv2d):
        channels = first.in_channels
        inferred.append("channels")
    if size is None and isinstance(first, nn.Linear):
        c = channels or 1
        side = round((first.in_features / c) ** 0.5)
        if c * side * side == first.in_features:
            channels, size = c, (side, side)
            inferred += ["size"] + (["channels"] if card.channels is None else [])
    if channels is None and size is not None and isinstance(first, nn.Linear):
        c, left = divmod(first.in_features, size[0] * size[1])
        if c and not left:  # a flat first layer of C x H x W inputs
            channels = c
            inferred.append("channels")
    if channels is None and card.mean is not None and len(card.mean) > 1:
        channels = len(card.mean)
        inferred.append("channels")
    if channels is None:
        raise _error(card.where, "'channels' is missing and the model's first layer does not say it; "
                                 "add e.g. \"channels\": 3")
    if size is None:
        raise _error(card.where, "'size' is missing: say the input size the model expects, "
                                 "e.g. \"size\": 224")
    return replace(card, channels=channels, size=size), sorted(set(inferred))


@torch.no_grad()
def _trial_outputs(model: nn.Module, shape: tuple[int, int, int], where: str) -> int:
    x = torch.zeros(2, *shape, device=module_device(model))
    try:
        out = model(x)
    except Exception as e:  # noqa: BLE001 - any failure here means the card's shape does not fit
        raise _error(where, f"the model does not take a batch of {list(shape)} pictures "
                            f"({type(e).__name__}: {' '.join(str(e).split())[:200]}); check 'channels' "
                            "and 'size'") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise _error(where, f"the model's output for 2 pictures is {got}, not (2, classes): kangae "
                            "explains classifiers that return one row of logits per picture")
    return int(out.shape[1])


def complete_card(card: ModelCard, model: nn.Module) -> ModelCard:
    """Fill in what the model can tell (shape, classes) and check the card against it with one
    trial forward pass on two black pictures."""
    card, inferred = _infer_shape(card, model)
    card = check_card(card)
    if card.mean is None and not card.normalizes_itself:
        raise _error(card.where, "say how the model normalizes: give 'mean' and 'std' (as in training), "
                                 "or \"normalizes_itself\": true")
    n = _trial_outputs(model, card.input_shape, card.where)
    classes = card.classes
    if classes is None:
        imagenet = card.dataset == "imagenet" and n == 1000
        classes = imagenet_classes() if imagenet else tuple(map(str, range(n)))
        inferred.append("classes")
    elif len(classes) != n:
        raise _error(card.where, f"'classes' has {len(classes)} names but the model has {n} outputs")
    return replace(card, classes=tuple(classes), inferred=tuple(sorted(set(inferred) | set(card.inferred))))
