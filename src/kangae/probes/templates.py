"""What a linear model's weights look like as images (post 002), and the nearest analogue
for non-linear models: the class-mean input gradient (Simonyan et al. 2013)."""

from __future__ import annotations

import torch
from torch import nn

from ..models.zoo import Normalize
from ._model import frozen, input_shape_of
from .inputs import ProbeInputError, as_images, as_target, model_device, renamed
from .result import PrototypeResult

_AFFINE_FREE = (Normalize, nn.Flatten, nn.Identity, nn.Dropout)


def _linear_only(model: nn.Module) -> tuple[Normalize | None, nn.Linear] | None:
    """(normalize, linear) if ``model`` is normalization, flattening and one Linear layer."""
    if not isinstance(model, nn.Sequential):
        return None
    mods = [m for m in model.modules() if not isinstance(m, nn.Sequential)]
    linears = [m for m in mods if isinstance(m, nn.Linear)]
    if len(linears) != 1 or not all(isinstance(m, (*_AFFINE_FREE, nn.Linear)) for m in mods):
        return None
    norms = [m for m in mods if isinstance(m, Normalize)]
    return (norms[0] if norms else None), linears[0]


def is_linear(model: nn.Module) -> bool:
    return _linear_only(model) is not None


@renamed(labels="target")
def weight_templates(model: nn.Module, images: torch.Tensor | None = None,
                     target: torch.Tensor | None = None,
                     input_shape: tuple[int, ...] | None = None) -> PrototypeResult:
    """One signed image per class.

    For a linear model, the rows of its weight matrix in pixel space (normalization folded
    in): ``logit_k = <template_k, x> + const``. For any other model, the mean over the
    images of class k of the gradient of logit k with respect to the input, which needs
    ``images`` (float in [0, 1]) and their classes as ``target``; ``metrics["kind"]`` says
    which one was computed.
    """
    parts = _linear_only(model)
    if parts is not None:
        norm, linear = parts
        shape = tuple(input_shape or input_shape_of(model))
        w = linear.weight.detach().float().cpu().view(linear.out_features, *shape)
        if norm is not None:
            w = w / norm.std.detach().float().cpu().view(1, -1, 1, 1)
        k = linear.out_features
        return PrototypeResult(images=w, target=torch.arange(k), scores=w.flatten(1).norm(dim=1),
                               method="template", signed=True,
                               metrics={"kind": "weights", "note": "weight rows in pixel space"})
    if images is None or target is None:
        raise ProbeInputError("the model is not linear: class-mean input gradients need images and "
                              "labels (their classes, as target=)")
    device = model_device(model)
    x0 = as_images(images, shape=input_shape)
    shape = tuple(x0.shape[1:])
    with frozen(model):
        x = x0.to(device).requires_grad_(True)
        logits = model(x)
        k = logits.shape[1]
        lab = as_target(target, len(x0), k)
        logits.gather(1, lab.to(device)[:, None]).sum().backward()
    grads = x.grad.detach().cpu().flatten(1)
    sums = torch.zeros(k, grads.shape[1]).index_add_(0, lab, grads)
    counts = torch.bincount(lab, minlength=k).clamp(min=1)[:, None]
    mean = (sums / counts).view(k, *shape)
    return PrototypeResult(images=mean, target=torch.arange(k), scores=mean.flatten(1).norm(dim=1),
                           method="template", signed=True,
                           metrics={"kind": "mean-gradient",
                                    "note": "class-mean input gradient (the model is not linear)",
                                    "images_per_class": torch.bincount(lab, minlength=k).tolist()})
