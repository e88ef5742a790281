"""Address layers by dotted name (as Lucent does), hook them safely, and list them."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UnknownNameError
from ..utils.device import module_device

Hook = Callable[[nn.Module, tuple, torch.Tensor], torch.Tensor | None]


def layer_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (e.g. ``"block1.conv2"``); the error lists valid names."""
    modules = dict(model.named_modules())
    prefix = getattr(model, "inner_prefix", "")  # a wrapped user model also answers to its own names
    if name and name not in modules and prefix and prefix + name in modules:
        return modules[prefix + name]
    if not name or name not in modules:
        raise UnknownNameError("layer", name, layer_names(model))
    return modules[name]


@contextmanager
def forward_hooks(model: nn.Module, hooks: Mapping[str, Hook]) -> Iterator[None]:
    """Register forward hooks by layer name; they are removed on exit, even on error."""
    handles = []
    try:
        for name, fn in hooks.items():
            handles.append(get_layer(model, name).register_forward_hook(fn))
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def capture(model: nn.Module, names: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of the named layers during forward passes inside the block."""
    outputs: dict[str, torch.Tensor] = {}

    def make(name: str) -> Hook:
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            outputs[name] = output

        return hook

    with forward_hooks(model, {n: make(n) for n in names}):
        yield outputs


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside the block; the caller's train/eval mode comes back on exit."""
    was_training = model.training
    try:
        yield model.eval()
    finally:
        model.train(was_training)


@dataclass(frozen=True)
class LayerInfo:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int

    @property
    def depth(self) -> int:
        return self.name.count(".")


@torch.no_grad()
def describe_layers(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> list[LayerInfo]:
    """Every named submodule with its output shape (for one image of ``input_shape``, by
    default the model's own: ``model.input_shape`` or what its first layer tells) and own
    parameter count."""
    if input_shape is None:
        from ..probes._model import input_shape_of  # probes build on this module

        input_shape = input_shape_of(model)
    names = layer_names(model)
    with eval_mode(model), capture(model, names) as out:
        model(torch.zeros(1, *input_shape, device=module_device(model)))
    modules = dict(model.named_modules())
    rows = []
    for name in names:
        m = modules[name]
        o = out.get(name)
        shape = tuple(o.shape[1:]) if isinstance(o, torch.Tensor) else ()
        rows.append(LayerInfo(name, type(m).__name__, shape,
                              sum(p.numel() for p in m.parameters())))
    return rows
