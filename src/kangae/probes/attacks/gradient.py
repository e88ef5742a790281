"""L-infinity gradient attacks and the robustness curve.

FGSM (Goodfellow, Shlens & Szegedy 2015): one step ``x + eps * sign(grad_x loss)``
(targeted: minus the gradient of the target's loss). PGD (Madry et al. 2018): ``steps``
signed-gradient steps of ``alpha`` from a uniform random start in the eps-ball, each
projected back on the ball and on [0, 1]. With ``keep_best`` each image keeps its first
successful iterate, so "accuracy under PGD" counts images that were never fooled.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...utils.device import chunk_size
from ...utils.stop import check_stop
from ...utils.threads import map_pieces, pieces
from .._model import frozen
from ..display import Shows, class_namer
from ..inputs import renamed
from ._common import as_images, as_labels, model_device, probabilities, save_fool_files


@dataclass
class AttackResult(Shows):
    """Adversarial ``images`` beside the ``original`` ones (CPU, (N, C, H, W) in [0, 1]).

    ``target`` holds the true classes (untargeted) or the classes to reach (targeted);
    ``success`` is "prediction changed away from the label" or "prediction equals the target".
    """

    images: torch.Tensor
    original: torch.Tensor
    target: torch.Tensor
    pred_before: torch.Tensor
    pred_after: torch.Tensor
    prob_before: torch.Tensor  # probability of ``target`` before and after
    prob_after: torch.Tensor
    success: torch.Tensor
    method: str
    eps: float
    targeted: bool
    metrics: dict[str, Any] = field(default_factory=dict)

    def picture(self) -> Any:
        """The first 8 originals above their changed versions (and the change, signed)."""
        from ..display import before_after

        return before_after(self.original[:8], self.images[:8])

    def save(self, folder: str | Path, *, classes: Sequence[str] | None = None) -> Path:  # type: ignore[override]
        """The files ``kangae fool --attack fgsm|pgd`` writes for one eps: ``originals.png``,
        ``adversarials.png`` and ``differences.png`` (the first 16), ``fool.json`` (the metrics
        and every image's readings) and ``tensors.safetensors``."""
        from ...render.attacks import SHOW, save_before_after

        name = class_namer(classes)
        steps = self.metrics.get("steps")
        steps_note = f"-{steps}" if self.method == "pgd" and steps else ""
        title = f"{self.method.upper()}{steps_note} eps = {self.eps:g}"
        if self.targeted and len(self.target):
            title += f", target {name(self.target[0])}"
        numbers = {"attack": self.method, "eps": self.eps, "targeted": self.targeted, "n": len(self.target),
                   "metrics": self.metrics,
                   "per_image": {"target": self.target.tolist(), "pred_before": self.pred_before.tolist(),
                                 "pred_after": self.pred_after.tolist(), "success": self.success.tolist(),
                                 "prob_before": self.prob_before.tolist(),
                                 "prob_after": self.prob_after.tolist()}}
        before = [f"read {name(k)}" for k in self.pred_before[:SHOW]]
        after = [f"read {name(k)}" for k in self.pred_after[:SHOW]]
        return save_fool_files(self, folder, numbers, lambda out: save_before_after(
            out, self.original[:SHOW], self.images[:SHOW], before, after, title))

    @property
    def labels(self) -> torch.Tensor:
        """The former name of ``target``."""
        return self.target

    @property
    def difference(self) -> torch.Tensor:
        return self.images - self.original


def _finish(model: nn.Module, x0: torch.Tensor, adv: torch.Tensor, y: torch.Tensor, p0: torch.Tensor,
            method: str, eps: float, targeted: bool, seconds: float, extra: dict[str, Any]) -> AttackResult:
    p1 = probabilities(model, adv)
    before, after = p0.argmax(1), p1.argmax(1)
    success = after == y if targeted else after != y
    idx = torch.arange(len(y))
    linf = (adv - x0).flatten(1).abs().amax(1) if len(y) else torch.zeros(0)
    metrics = {
        "method": method, "eps": eps, "targeted": targeted, "n": len(y),
        "success_rate": float(success.float().mean()) if len(y) else float("nan"),
        "accuracy_before": float((before == y).float().mean()) if len(y) and not targeted else None,
        "accuracy_after": float((after == y).float().mean()) if len(y) and not targeted else None,
        "max_linf": float(linf.max()) if len(y) else 0.0,
        "mean_pixels_changed": float(((adv - x0).abs() > 1e-6).flatten(1).sum(1).float().mean())
        if len(y) else 0.0,
        "seconds": seconds, "images_per_second": len(y) / max(seconds, 1e-9), **extra,
    }
    return AttackResult(adv, x0, y, before, after, p0[idx, y], p1[idx, y], success, method, eps,
                        targeted, metrics)


def _record(best: torch.Tensor, done: torch.Tensor, x: torch.Tensor, logits: torch.Tensor,
            y: torch.Tensor, targeted: bool) -> None:
    """Keep the first successful iterate of each image (in place)."""
    pred = logits.argmax(1)
    hit = ((pred == y) if targeted else (pred != y)) & ~done
    best[hit] = x[hit]
    done.logical_or_(hit)


def _check_eps(eps: float) -> float:
    eps = float(eps)
    if not 0 <= eps <= 1:
        raise ValueError(f"eps must be in [0, 1] for images in [0, 1], got {eps}")
    return eps


@renamed(labels="target")
def fgsm(model: nn.Module, images: torch.Tensor, target: torch.Tensor | int, eps: float,
         targeted: bool = False, batch_size: int | None = None) -> AttackResult:
    """Fast gradient sign method (Goodfellow et al. 2015), L-infinity, clipped to [0, 1].

    Untargeted: ``target`` holds the true classes and the step raises their cross-entropy
    (Captum's convention). Targeted: ``target`` holds the classes to reach, and the step lowers
    their cross-entropy.
    """
    return pgd(model, images, target, eps, steps=1, alpha=eps, random_start=False, targeted=targeted,
               keep_best=False, batch_size=batch_size, _name="fgsm")


@renamed(labels="target")
def pgd(model: nn.Module, images: torch.Tensor, target: torch.Tensor | int, eps: float, steps: int = 40,
        alpha: float | None = None, random_start: bool = True, targeted: bool = False, seed: int = 0,
        keep_best: bool = True, batch_size: int | None = None, restarts: int = 1,
        _name: str = "pgd") -> AttackResult:
    """Projected gradient descent (Madry et al. 2018): ``steps`` steps of ``alpha`` (default
    ``2.5 * eps / steps``) from a uniform random start, projected on the eps-ball and [0, 1].

    ``restarts`` > 1 attacks the images that survived again from new random starts (as
    Madry et al. and Wong et al. evaluate robust models); an image counts as fooled when any
    restart fools it."""
    eps = _check_eps(eps)
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if restarts < 1:
        raise ValueError(f"restarts must be at least 1, got {restarts}")
    alpha = 2.5 * eps / steps if alpha is None else float(alpha)
    x0 = as_images(images)
    device = model_device(model)
    batch_size = chunk_size(batch_size, device, tuple(x0.shape[1:]))
    t0 = time.perf_counter()
    with frozen(model):
        p0 = probabilities(model, x0, batch_size)
        y = as_labels(target, len(x0), p0.shape[1])
        random = random_start and eps > 0
        restarts = restarts if random else 1  # without a random start every restart is the same
        # One stream per restart, drawn for all images at once: an image's start in restart r
        # does not depend on the chunk size, on the order chunks run in, or on which images
        # earlier restarts fooled.
        gens = [torch.Generator(device=device).manual_seed(seed + 1_000_003 * r) for r in range(restarts)]
        starts = [_noise(x0.shape, device, g) for g in gens] if random else []
        attack = dict(eps=eps, alpha=alpha, steps=steps, targeted=targeted, keep_best=keep_best,
                      check=restarts > 1)

        def run(part: slice) -> torch.Tensor:
            xc, yc = x0[part].to(device), y[part].to(device)
            adv, fooled = _pgd_run(model, xc, yc, starts[0][part] if random else None, **attack)
            for start in starts[1:]:
                left = (~fooled).nonzero().squeeze(1)
                if not len(left):
                    continue
                again, hit = _pgd_run(model, xc[left], yc[left], start[part][left], **attack)
                adv[left[hit]] = again[hit]
                fooled[left[hit]] = True
            return adv.detach().cpu()

        # on a busy machine, pieces run side by side on one thread each (kangae.utils.threads)
        out = map_pieces(run, pieces(len(x0), batch_size, device))
        adv_all = torch.cat(out) if out else x0.clone()
    extra = {"steps": steps, "alpha": alpha, "random_start": random_start, "keep_best": keep_best,
             "seed": seed, "restarts": restarts} if _name == "pgd" else {}
    return _finish(model, x0, adv_all, y, p0, _name, eps, targeted, time.perf_counter() - t0, extra)


def _noise(shape: torch.Size, device: torch.device, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=gen, device=device) * 2 - 1


def _pgd_run(model: nn.Module, xc: torch.Tensor, yc: torch.Tensor, start: torch.Tensor | None, *,
             eps: float, alpha: float, steps: int, targeted: bool, keep_best: bool,
             check: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One PGD run on one chunk from ``xc + eps * start`` (``start`` in [-1, 1], or None for
    no random start): the adversarial images and which of them succeeded (the latter only
    when ``keep_best`` or ``check``; otherwise all False).

    The iterate is one buffer updated in place, projected by one clamp on the precomputed
    bounds (the eps-ball meets [0, 1]: the same numbers as clamping on each in turn), and laid
    out channels-last so a conv net's activations, pooling and their backward run in the
    vectorized channels-last kernels of a CPU (the same numbers, laid out otherwise)."""
    sign = -1.0 if targeted else 1.0
    adv = torch.empty_like(xc, memory_format=_layout(xc))
    adv.copy_(xc if start is None else (xc + eps * start).clamp_(0, 1))
    lo, hi = (xc - eps).clamp_(min=0), (xc + eps).clamp_(max=1)
    best = xc.clone()
    done = torch.zeros(len(xc), dtype=torch.bool, device=xc.device)
    for i in range(steps if eps > 0 else 0):
        check_stop()
        grad, logits = _step_gradient(model, adv, yc)
        if keep_best and i > 0:  # the logits of the previous iterate come for free
            _record(best, done, adv, logits, yc, targeted)
        adv.add_(grad.sign_(), alpha=sign * alpha).clamp_(lo, hi)
    if (keep_best or check) and steps > 0 and eps > 0:
        with torch.no_grad():
            _record(best, done, adv, model(adv).float(), yc, targeted)
        if keep_best:  # without it, ``done`` says whether the last iterate succeeded
            adv = torch.where(done.view(-1, 1, 1, 1), best, adv)
    return adv.contiguous(), done


def _layout(x: torch.Tensor) -> torch.memory_format:
    """Channels-last for CPU image batches (oneDNN's fast layout); an accelerator's as given."""
    return torch.channels_last if x.ndim == 4 and x.device.type == "cpu" else torch.contiguous_format


def _step_gradient(model: nn.Module, adv: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of the summed cross-entropy at ``adv`` (a detached buffer, left detached), and
    the logits; the gradient keeps ``adv``'s layout."""
    adv.requires_grad_(True)
    try:
        with torch.enable_grad():
            logits = model(adv).float()
            (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), adv)
    finally:
        adv.requires_grad_(False)
    return grad, logits.detach()


@dataclass
class RobustnessCurve(Shows):
    """Accuracy against eps for each method (Madry et al. 2018 report PGD-40 at eps = 0.3)."""

    eps: list[float]
    accuracy: dict[str, list[float]]
    n: int
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"eps": self.eps, "accuracy": self.accuracy, "n": self.n, **self.metrics}

    def save(self, folder: str | Path) -> Path:
        """``curve.png`` (accuracy against eps, as ``kangae fool`` draws it), ``fool.json``."""
        from ...render.attacks import plot_share_lines

        steps = self.metrics.get("pgd_steps", 40)
        series = {(f"PGD-{steps}" if k == "pgd" else "FGSM"): v for k, v in self.accuracy.items()}
        return save_fool_files(self, folder, {"attack": "curve", **self.to_dict()}, lambda out: [
            plot_share_lines(self.eps, series, out / "curve.png", "eps (L-inf)", "accuracy (%)",
                             "accuracy under attack").name])

    def picture(self) -> Any:
        """Accuracy against eps, one line per attack."""
        from ...render.plots import as_picture, pyplot, save_figure

        def draw(path: Any) -> Any:
            fig, ax = pyplot().subplots(figsize=(4.5, 3.2))
            for name, acc in self.accuracy.items():
                ax.plot(self.eps, acc, "o-", label=name)
            ax.set(xlabel="eps (pixel units)", ylabel="accuracy", ylim=(0, 1), title=f"{self.n} images")
            ax.legend()
            return save_figure(fig, path)

        return as_picture(draw)


@renamed(labels="target")
def robustness_curve(model: nn.Module, images: torch.Tensor, target: torch.Tensor,
                     eps_list: Sequence[float] = (0, 0.05, 0.1, 0.2, 0.3),
                     methods: Sequence[str] = ("fgsm", "pgd"), steps: int = 40, seed: int = 0,
                     batch_size: int | None = None) -> RobustnessCurve:
    """Accuracy under FGSM and PGD-``steps`` at every eps (eps 0: clean accuracy); ``target``
    holds the true classes."""
    bad = [m for m in methods if m not in ("fgsm", "pgd")]
    if bad:
        raise ValueError(f"unknown method(s) {bad}; use fgsm and/or pgd")
    eps_list = [_check_eps(e) for e in eps_list]
    x = as_images(images)
    y = as_labels(target, len(x))
    acc: dict[str, list[float]] = {m: [] for m in methods}
    seconds: dict[str, list[float]] = {m: [] for m in methods}
    for m in methods:
        for e in eps_list:
            if m == "fgsm":
                r = fgsm(model, x, y, e, batch_size=batch_size)
            else:
                r = pgd(model, x, y, e, steps=steps, seed=seed, batch_size=batch_size)
            acc[m].append(r.metrics["accuracy_after"])
            seconds[m].append(r.metrics["seconds"])
    return RobustnessCurve(eps_list, acc, len(x), {"pgd_steps": steps, "seconds": seconds, "seed": seed})


@renamed(targets="target")
def saliency(model: nn.Module, images: torch.Tensor, target: torch.Tensor | int,
             batch_size: int | None = None) -> torch.Tensor:
    """Plain input gradient of the target logit (Simonyan et al. 2013), (N, C, H, W) on CPU."""
    x = as_images(images)
    device = model_device(model)
    batch_size = chunk_size(batch_size, device, tuple(x.shape[1:]))
    out = []
    with frozen(model):
        k = probabilities(model, x[:1]).shape[1] if len(x) else 1
        y = as_labels(target, len(x), k)
        for xc, yc in zip(x.split(batch_size), y.split(batch_size)):
            xc = xc.to(device).detach().requires_grad_(True)
            with torch.enable_grad():
                logit = model(xc).float().gather(1, yc.to(device)[:, None]).sum()
                (g,) = torch.autograd.grad(logit, xc)
            out.append(g.cpu())
    return torch.cat(out) if out else torch.zeros_like(x)
