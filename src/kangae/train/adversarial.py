"""Adversarial training: fit on L-infinity perturbed batches instead of clean ones.

``fgsm-rs`` is FGSM with a uniform random start and step ``alpha = 1.25 * eps`` (Wong, Rice
& Kolter 2020, "Fast is better than free"): one extra forward and backward per batch.
``pgd`` is Madry et al. (2018): ``steps`` projected signed-gradient steps from a random
start. The perturbation is computed on the bare model (no DDP sync), in its current mode,
with ``torch.autograd.grad`` so no parameter gradients are touched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import KangaeError
from .trainer import Trainer

METHODS = ("fgsm-rs", "pgd")


@dataclass(frozen=True)
class AdversarialSettings:
    """What ``kangae train --adversarial`` stores in the run's config (resume checks it)."""

    method: str
    eps: float
    alpha: float
    steps: int
    warmup_epochs: float = 0.0  # eps grows linearly from 0 over this many epochs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def settings(method: str, eps: float, alpha: float | None = None, steps: int | None = None,
             warmup_epochs: float = 0.0) -> AdversarialSettings:
    """Validated settings with the papers' defaults: FGSM-RS alpha 1.25 eps; PGD 10 steps of eps/4."""
    if method not in METHODS:
        raise KangaeError(f"unknown adversarial method '{method}'; use one of {', '.join(METHODS)}")
    if not 0 < eps <= 1:
        raise KangaeError(f"--eps must be in (0, 1] for images in [0, 1], got {eps}")
    if warmup_epochs < 0:
        raise KangaeError(f"eps warm-up must be at least 0 epochs, got {warmup_epochs}")
    if method == "fgsm-rs":
        steps = 1 if steps is None else steps
        if steps != 1:
            raise KangaeError("fgsm-rs takes one step; use --adversarial pgd for several")
        alpha = 1.25 * eps if alpha is None else alpha
    else:
        steps = 10 if steps is None else steps
        alpha = eps / 4 if alpha is None else alpha
    if alpha <= 0 or steps < 1:
        raise KangaeError(f"step size must be positive and steps at least 1 (alpha={alpha}, steps={steps})")
    return AdversarialSettings(method, float(eps), float(alpha), int(steps), float(warmup_epochs))


def perturb(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float,
            steps: int, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """``x + delta`` with ``|delta| <= eps``, in [0, 1], raising the loss: random start, then
    ``steps`` steps of ``alpha * sign(grad)``, each projected on the eps-ball and [0, 1]."""
    x = x.detach()
    delta = (torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * eps
    delta = (x + delta).clamp_(0, 1) - x
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = loss_fn(model(x + delta), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + alpha * grad.sign()).clamp_(-eps, eps)
        delta = (x + delta).clamp_(0, 1) - x
    return (x + delta).detach()


class AdversarialTrainer(Trainer):
    """A :class:`Trainer` whose loss is on perturbed inputs; accuracy is on them too."""

    def __init__(self, *args: Any, adversarial: AdversarialSettings, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.adversarial = adversarial

    def current_eps(self) -> float:
        a, s = self.adversarial, self.state
        if a.warmup_epochs <= 0 or not s.batches_per_epoch:
            return a.eps
        done = s.epoch + s.batch / s.batches_per_epoch
        return a.eps * min(1.0, (done + 1 / s.batches_per_epoch) / a.warmup_epochs)

    def compute_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.adversarial
        eps = self.current_eps()
        with torch.autocast(self.device.type, enabled=False):
            x_adv = perturb(self.bare_model, x.float(), y, eps, a.alpha * eps / a.eps, a.steps,
                            loss_fn=self.loss_fn)
        logits = self.model(x_adv)
        return self.loss_fn(logits, y), logits
