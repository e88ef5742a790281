"""Open any image classifier: one ``SPEC`` string for every command, as the CLI takes it.

``SPEC`` is one of

- a kangae run or checkpoint folder;
- a zoo name (``vgg16``) or ``package.module:factory`` or ``path/to/file.py:factory``, with
  ``weights=`` a ``.safetensors`` file or a state-dict ``.pt``/``.pth`` (read with
  ``torch.load(weights_only=True)``: a file that needs full unpickling is refused, since
  unpickling runs whatever code the file holds);
- a TorchScript archive (``torch.jit.save``), a ``torch.export`` program (``.pt2``) or an ONNX
  file (with the ``onnx`` extra: ``pip install kangae[onnx]``);
- ``torchvision:NAME`` or ``timm:NAME`` when those packages are installed, with weights from
  their own cache (kangae depends on neither).

A :class:`~kangae.models.card.ModelCard` says what the model expects; the model comes back as
a :class:`PixelModel` that takes pixels in [0, 1] and applies the card's normalization itself,
the way kangae's own models do, so every probe works in pixel space.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pickle
import re
import sys
import types
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..errors import RunError
from .card import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CardWarning,
    ModelCard,
    card_beside,
    complete_card,
    read_card,
)
from .zoo import MODELS, Normalize, create_model

STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_FACTORY = re.compile(r"^(?P<where>[^:]+):(?P<factory>[A-Za-z_][A-Za-z0-9_.]*)$")


class PixelModel(nn.Module):
    """``net(normalize(x))`` for pixels ``x`` in [0, 1]. Layers keep the user's names under
    ``net.`` and :func:`kangae.models.layers.get_layer` also finds them without the prefix."""

    inner_prefix = "net."

    def __init__(self, net: nn.Module, card: ModelCard):
        super().__init__()
        mean, std, c = card.mean, card.std, card.channels or 1
        self.normalize: nn.Module = (Normalize(mean * (c // len(mean)), std * (c // len(std)))
                                     if mean is not None and std is not None else nn.Identity())
        self.net = net
        self.input_shape = card.input_shape
        # exported graphs (torch.export, onnx2torch) refuse .train()/.eval(): their mode is fixed
        self._fixed_mode = _refuses_mode_switch(net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    def train(self, mode: bool = True) -> PixelModel:
        if not self._fixed_mode:
            return super().train(mode)
        self.training = mode
        self.normalize.train(mode)
        return self


def _refuses_mode_switch(net: nn.Module) -> bool:
    try:
        net.train(net.training)
    except (NotImplementedError, RuntimeError):
        return True
    return False


# ---- weights -------------------------------------------------------------------------------

def _refused_pickle(path: Path, why: str) -> RunError:
    why = " ".join(why.split())[:160]
    return RunError(
        f"{path}: refused: loading it needs full unpickling, which runs any code the file holds "
        f"({why}). Where you trust the file, convert it to plain tensors: "
        "torch.save(model.state_dict(), 'weights.pt'), or safetensors' "
        "save_file(model.state_dict(), 'weights.safetensors')")


def _unpickler_reason(message: str) -> str:
    m = re.search(r"Unsupported global: GLOBAL (\S+)", message)
    if m:
        return f"it holds a {m.group(1)} object, not only tensors"
    m = re.search(r"WeightsUnpickler error: ([^\n]+)", message)
    return m.group(1) if m else "it holds Python objects, not only tensors"


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file or a state-dict ``.pt``; never unpickles code."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise RunError(f"{path}: not a readable safetensors file ({e})") from None
    if _is_torchscript(path):
        raise RunError(f"{path}: this is a TorchScript archive, which holds its own code: give it as the "
                       "SPEC itself, without a factory")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise _refused_pickle(path, _unpickler_reason(str(e))) from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        detail = " ".join(str(e).split())[:200]
        raise RunError(f"{path}: not a readable PyTorch weights file ({detail})") from None
    return _tensors_in(obj, path)


def _tensors_in(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    # common checkpoint layouts: {"state_dict": ...}, {"model": ...}, {"model_state_dict": ...}
    if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model_state_dict", "model", "net", "weights"):
            if isinstance(obj.get(key), Mapping):
                return _tensors_in(obj[key], path)
    if not (isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())):
        raise RunError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")
    tensors = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in tensors):  # saved from DistributedDataParallel
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def load_weights(net: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Load a state dict; a zoo model's own normalization buffers may be absent (torchvision's
    files lack them), anything else missing or unexpected is an error naming the keys."""
    result = net.load_state_dict(tensors, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("normalize.")]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
    if result.unexpected_keys:
        extra = result.unexpected_keys
        problems.append(f"unexpected {', '.join(extra[:4])}{' ...' if len(extra) > 4 else ''}")
    if problems:
        raise RunError(f"{source}: the weights do not fit the model ({'; '.join(problems)})")


def _num_classes_in(tensors: dict[str, torch.Tensor]) -> int | None:
    last = [v for k, v in tensors.items() if k.endswith("weight") and v.ndim == 2]
    return int(last[-1].shape[0]) if last else None


# ---- model sources ---------------------------------------------------------------------------

def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.split("/", 1)[-1].startswith("code/") for n in z.namelist())


def _import_factory(where: str, factory: str) -> Any:
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise RunError(f"{where}: no such Python file")
        name = f"kangae_user_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        except Exception as e:  # noqa: BLE001 - the user's file failed to import
            sys.modules.pop(name, None)
            raise RunError(f"{where}: importing it failed ({type(e).__name__}: {e})") from None
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise RunError(f"{where}: cannot import this module ({e})") from None
    obj: Any = module
    for part in factory.split("."):
        if not hasattr(obj, part):
            raise RunError(f"{where}: has no '{factory}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise RunError(f"{where}:{factory} is not callable")
    return obj


class NoWeightsWarning(UserWarning):
    """A model opened without weights: said, since its answers mean nothing if untrained."""


def _from_factory(where: str, factory: str, weights: Path | None) -> nn.Module:
    build = _import_factory(where, factory)
    try:
        net = build()
    except Exception as e:  # noqa: BLE001 - the user's factory raised
        raise RunError(f"{where}:{factory}() failed ({type(e).__name__}: {e})") from None
    if not isinstance(net, nn.Module):
        raise RunError(f"{where}:{factory}() returned a {type(net).__name__}, not an nn.Module")
    if weights is not None:
        load_weights(net, read_state_dict(weights), str(weights))
    else:
        warnings.warn(f"{where}:{factory} without --weights: the model has the weights {factory}() "
                      "gave it, random unless it loads its own", NoWeightsWarning, stacklevel=4)
    return net


def _from_zoo(name: str, weights: Path | None, card: ModelCard) -> tuple[nn.Module, ModelCard]:
    tensors = read_state_dict(weights) if weights is not None else None
    n = len(card.classes) if card.classes else (_num_classes_in(tensors) if tensors else None)
    kw: dict[str, Any] = {"num_classes": n} if n else {}  # else the zoo model's own default
    if card.channels:
        kw["in_channels"] = card.channels
    net = create_model(name, **kw)
    if tensors is not None:
        load_weights(net, tensors, str(weights))
    else:
        warnings.warn(f"zoo model {name} without --weights: its weights are random, so what it "
                      "shows is not what a trained model learned", NoWeightsWarning, stacklevel=3)
    own = next((m for m in net.modules() if isinstance(m, Normalize)), None)
    if own is not None and card.mean is not None and card.normalizes_itself is None:
        numbers = lambda t: ", ".join(f"{v:.4g}" for v in t.flatten().tolist())  # noqa: E731
        warnings.warn(
            f"{name} normalizes its input itself (its Normalize layer: mean {numbers(own.mean)}, std "
            f"{numbers(own.std)}), so the card's mean and std normalize the pictures a second time "
            "before it; drop them from the card, or say \"normalizes_itself\": false if the model "
            "was trained on pictures normalized that way", CardWarning, stacklevel=3)
    shape = getattr(net, "input_shape", None)
    zoo = ModelCard(normalizes_itself=True, name=name, source=card.source,
                    channels=shape[0] if shape else None, size=tuple(shape[1:]) if shape else None)
    return net, _merge(zoo, card)


def _onnx2torch() -> Any:
    """onnx2torch imports torchvision's detection ops at import time, and torchvision may not
    import beside this torch build; classifiers never use those ops, so a stand-in lets the
    import through when the real torchvision is absent or broken."""
    try:
        import onnx2torch

        return onnx2torch
    except ImportError as e:
        if "onnx2torch" in str(e) or "onnx" == getattr(e, "name", ""):
            raise RunError("reading ONNX needs the onnx extra: pip install 'kangae[onnx]'") from None
    except RuntimeError:
        pass
    stand_in, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")

    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise RunError("this ONNX graph uses a detection op that needs a working torchvision")

    ops.nms = ops.roi_align = ops.batched_nms = unavailable  # type: ignore[attr-defined]
    stand_in.ops = ops  # type: ignore[attr-defined]
    saved = {k: sys.modules.pop(k) for k in list(sys.modules)
             if k == "torchvision" or k.startswith("torchvision.")}
    sys.modules.update({"torchvision": stand_in, "torchvision.ops": ops})
    try:
        import onnx2torch
    except ImportError:
        raise RunError("reading ONNX needs the onnx extra: pip install 'kangae[onnx]'") from None
    finally:
        for k in ("torchvision", "torchvision.ops"):
            sys.modules.pop(k, None)
        sys.modules.update(saved)
    return onnx2torch


def _from_file(path: Path) -> nn.Module:
    if path.suffix == ".onnx":
        try:
            return _onnx2torch().convert(str(path))
        except RunError:
            raise
        except Exception as e:  # noqa: BLE001 - onnx's parser and converter raise many kinds
            raise RunError(f"{path}: cannot convert this ONNX model ({type(e).__name__}: {e})") from None
    if path.suffix == ".pt2":
        try:
            return torch.export.load(str(path)).module()
        except Exception as e:  # noqa: BLE001
            raise RunError(f"{path}: not a readable torch.export program ({type(e).__name__}: {e})") from None
    if _is_torchscript(path):
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except Exception as e:  # noqa: BLE001
            raise RunError(f"{path}: not a readable TorchScript archive ({type(e).__name__}: {e})") from None
    if path.suffix in STATE_DICT_SUFFIXES or path.suffix == ".safetensors":
        raise RunError(f"{path}: weights alone do not say how to build the model; give the code that builds "
                       f"it as SPEC (package.module:factory, file.py:factory or a zoo name) and this file "
                       f"as --weights")
    raise RunError(f"{path}: kangae does not know this kind of model file (it reads .safetensors or .pt "
                   "weights with a factory, TorchScript, .pt2 and .onnx)")


def _library_module(library: str) -> Any:
    try:
        return importlib.import_module(library if library == "timm" else "torchvision.models")
    except ImportError:
        raise RunError(f"'{library}:' models need the {library} package, which is not installed") from None
    except Exception as e:  # noqa: BLE001 - e.g. torchvision built for another torch
        raise RunError(f"{library} does not import beside this torch ({type(e).__name__}: "
                       f"{' '.join(str(e).split())[:160]})") from None


def _torchvision(name: str) -> tuple[nn.Module, ModelCard]:
    models = _library_module("torchvision")
    try:
        weights = models.get_model_weights(name).DEFAULT
        net = models.get_model(name, weights=weights)
    except (ValueError, KeyError) as e:
        raise RunError(f"torchvision has no model '{name}' ({e})") from None
    except OSError as e:  # URLError is an OSError: the weights are not in the user's cache
        raise RunError(f"torchvision:{name}: its weights are not in torch's cache and cannot be downloaded "
                       f"({e}); download them once where there is a network") from None
    t = weights.transforms()
    crop = list(getattr(t, "crop_size", [224]))
    resize = list(getattr(t, "resize_size", [round(crop[0] / 0.875)]))
    card = ModelCard(channels=3, size=(crop[0], crop[-1]), resize=resize[0],
                     mean=tuple(getattr(t, "mean", IMAGENET_MEAN)),
                     std=tuple(getattr(t, "std", IMAGENET_STD)),
                     classes=tuple(weights.meta["categories"]), dataset="imagenet", name=name)
    return net, card


def _timm(name: str) -> tuple[nn.Module, ModelCard]:
    timm = _library_module("timm")
    try:
        net = timm.create_model(name, pretrained=True)
    except (RuntimeError, ValueError, KeyError) as e:
        raise RunError(f"timm:{name}: cannot create it ({' '.join(str(e).split())[:200]})") from None
    except OSError as e:
        raise RunError(f"timm:{name}: its weights are not in the local cache and cannot be downloaded "
                       f"({e}); download them once where there is a network") from None
    cfg = dict(getattr(net, "pretrained_cfg", None) or {})
    c, h, w = cfg.get("input_size", (3, 224, 224))
    crop_pct = float(cfg.get("crop_pct", 0.875))
    dataset = "imagenet" if cfg.get("num_classes", 1000) == 1000 else ""
    card = ModelCard(channels=c, size=(h, w), resize=round(max(h, w) / crop_pct),
                     mean=tuple(cfg.get("mean", IMAGENET_MEAN)), std=tuple(cfg.get("std", IMAGENET_STD)),
                     dataset=dataset, name=name)
    return net, card


# ---- cards --------------------------------------------------------------------------------

def _merge(base: ModelCard, over: ModelCard) -> ModelCard:
    """``base`` with every field ``over`` says replacing it."""
    default = ModelCard()
    changes = {f.name: getattr(over, f.name) for f in fields(ModelCard)
               if getattr(over, f.name) != getattr(default, f.name)}
    if changes.get("mean") is not None and "normalizes_itself" not in changes:
        changes["normalizes_itself"] = None
    if changes.get("normalizes_itself"):
        changes.setdefault("mean", None)
        changes.setdefault("std", None)
    return replace(base, **changes)


def as_card(card: ModelCard | str | os.PathLike | Mapping[str, Any] | None) -> ModelCard | None:
    """A card given as a card, a path to its JSON, or a dict."""
    from .card import card_from_dict

    if card is None or isinstance(card, ModelCard):
        return card
    if isinstance(card, Mapping):
        return card_from_dict(dict(card), "card")
    return read_card(card)


def _spec_card(spec: str, weights: Path | None) -> ModelCard:
    """The card beside the weights or the model file, if there is one."""
    for anchor in (weights, Path(spec)):
        if anchor is not None and anchor.suffix and anchor.is_file():
            found = card_beside(anchor)
            if found is not None:
                return read_card(found)
    return ModelCard()


def build_net(spec: str, weights: Path | None, card: ModelCard) -> tuple[nn.Module, ModelCard]:
    """The raw network a ``SPEC`` names, and the card its source implies merged under ``card``."""
    path = Path(spec)
    m = _FACTORY.match(spec)
    if spec.startswith(("torchvision:", "timm:")):
        library, name = spec.split(":", 1)
        if weights is not None:
            raise RunError(f"{spec}: takes its weights from {library}'s cache; --weights is for factories")
        net, lib = _torchvision(name) if library == "torchvision" else _timm(name)
        return net, _merge(lib, card)
    if spec in MODELS:
        return _from_zoo(spec, weights, card)
    if m and not path.exists():
        return _from_factory(m["where"], m["factory"], weights), card
    if path.is_file():
        if weights is not None:
            raise RunError(f"{spec}: a model file holds its own weights; --weights is for factories")
        return _from_file(path), card
    raise RunError(f"{spec}: no such run folder or model file, and not a zoo name, module:factory, "
                   "file.py:factory, torchvision:NAME or timm:NAME")


def open_net(spec: str | os.PathLike, *, weights: str | os.PathLike | None = None,
             card: ModelCard | str | os.PathLike | Mapping[str, Any] | None = None
             ) -> tuple[PixelModel, ModelCard]:
    """The model a non-run ``SPEC`` names, in pixel space and eval mode, with its completed card."""
    spec = str(spec)
    weights_path = Path(weights) if weights is not None else None
    given = as_card(card) or ModelCard()
    merged = _merge(_spec_card(spec, weights_path), given)
    net, merged = build_net(spec, weights_path, merged)
    if not _refuses_mode_switch(net):  # before the trial pass: batch norm must not learn from it
        net.eval()
    full = complete_card(replace(merged, name=merged.name or _short_name(spec)), net)
    return PixelModel(net, full).eval(), full


def _short_name(spec: str) -> str:
    tail = spec.rsplit(":", 1)[-1] if ":" in spec else Path(spec).stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", tail).strip("-") or "model"
