"""Adversarial training: fit on L-infinity perturbed batches instead of clean ones.

``fgsm-rs`` is FGSM with a uniform random start and step ``alpha = 1.25 * eps`` (Wong, Rice
& Kolter 2020, "Fast is better than free"): one extra forward and backward per batch.
``pgd`` is Madry et al. (2018): ``steps`` projected signed-gradient steps from a random
start. The perturbation is computed on the bare model (no DDP sync), in its current mode,
with ``torch.autograd.grad`` so no parameter gradients are touched.

FGSM training can overfit catastrophically: within one epoch the model learns to beat its
own single step while PGD accuracy falls to near 0 (Wong et al., section 5.3). After every
epoch the trainer measures PGD-10 accuracy on a fixed set of training images
(``train_pgd_acc``); when it falls more than ``check_drop`` below its best, training stops
and the weights of the best epoch are kept.
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
    check_images: int = 1000  # training images for the per-epoch PGD-10 check (0: no check)
    check_drop: float = 0.2  # stop when the check falls this far below its best

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def settings(method: str, eps: float, alpha: float | None = None, steps: int | None = None,
             warmup_epochs: float = 0.0, check_images: int = 1000,
             check_drop: float = 0.2) -> AdversarialSettings:
    """Validated settings with the papers' defaults: FGSM-RS alpha 1.25 eps; PGD 10 steps of eps/4."""
    if method not in METHODS:
        raise KangaeError(f"unknown adversarial method '{method}'; use one of {', '.join(METHODS)}")
    if not 0 < eps <= 1:
        raise KangaeError(f"--eps must be in (0, 1] for images in [0, 1], got {eps}")
    if warmup_epochs < 0:
        raise KangaeError(f"eps warm-up must be at least 0 epochs, got {warmup_epochs}")
    if check_images < 0 or not 0 < check_drop <= 1:
        raise KangaeError(f"--adv-check takes a number of images >= 0 (got {check_images}) and the "
                          f"drop that stops training must be in (0, 1] (got {check_drop})")
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
    return AdversarialSettings(method, float(eps), float(alpha), int(steps), float(warmup_epochs),
                               int(check_images), float(check_drop))


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
    """A :class:`Trainer` whose loss is on perturbed inputs; accuracy is on them too.

    ``check`` (images, labels) turns on the guard against catastrophic overfitting: the
    PGD-10 accuracy on them after every epoch is logged as ``train_pgd_acc``; the best
    epoch's weights are kept (in memory and in the training state, so a resumed run keeps
    them), and when the accuracy falls more than ``check_drop`` below the best the weights are
    rolled back, ``kept_epoch`` is logged and training stops.
    """

    def __init__(self, *args: Any, adversarial: AdversarialSettings,
                 check: tuple[torch.Tensor, torch.Tensor] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.adversarial = adversarial
        self.check = check
        self.best: dict[str, Any] | None = None  # epoch, acc, weights

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

    def robust_accuracy(self) -> float:
        """PGD-10 (step eps/4, fixed random start, last iterate) accuracy on the check images,
        with :func:`kangae.probes.attacks.pgd` (eval mode, parameters untouched).

        Under DDP each process attacks its share and the counts are summed, so every process
        reads the same number and takes the same decision to stop."""
        from ..probes import pgd

        assert self.check is not None
        x, y = self.check
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if distributed:
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
            x, y = x[rank::world], y[rank::world]
        eps = self.adversarial.eps
        r = pgd(self.bare_model, x, y, eps, steps=10, alpha=eps / 4, keep_best=False, seed=0)
        counts = torch.tensor([float((r.pred_after == r.labels).sum()), float(len(y))],
                              dtype=torch.float64, device=x.device)
        if distributed:
            torch.distributed.all_reduce(counts)
        return float(counts[0] / counts[1].clamp(min=1))

    def check_epoch(self, logs: dict[str, float]) -> None:
        """Log ``train_pgd_acc``; keep the best epoch's weights; roll back and stop on a collapse."""
        if self.check is None:
            return
        acc = self.robust_accuracy()
        logs["train_pgd_acc"] = acc
        epoch = self.state.epoch + 1
        if self.best is None or acc > self.best["acc"]:
            weights = {k: v.detach().clone() for k, v in self.bare_model.state_dict().items()}
            self.best = {"epoch": epoch, "acc": acc, "weights": weights}
        elif acc < self.best["acc"] - self.adversarial.check_drop:
            self.bare_model.load_state_dict(self.best["weights"])
            logs["kept_epoch"] = self.best["epoch"]
            self.state.stopped = (
                f"PGD accuracy on {len(self.check[0])} training images fell from "
                f"{self.best['acc']:.1%} (epoch {self.best['epoch']}) to {acc:.1%} (epoch {epoch}): "
                f"catastrophic overfitting; stopped and kept the weights of epoch {self.best['epoch']}")

    def extra_state(self) -> dict[str, Any]:
        """The best epoch so far (its number, check accuracy and weights), for a resume."""
        return {"robust_best": self.best} if self.best is not None else {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`extra_state`'s best epoch."""
        best = state.get("robust_best")
        if best is not None:
            self.best = {"epoch": int(best["epoch"]), "acc": float(best["acc"]),
                         "weights": dict(best["weights"])}
