"""Template addition (post 002): add ``alpha * template(target)`` to images and clip to [0, 1].

Post 002 adds the softmax model's weight image of "7" to 25 test digits and the model reads
21 of them as 7. The template is scaled so its largest absolute value is 1: ``alpha`` is in
pixel units. For non-linear models the template is the class-mean input gradient
(``kangae.probes.templates``), or pass any template, e.g. another model's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._model import frozen
from ..display import Shows, class_namer
from ..inputs import ProbeInputError
from ..templates import weight_templates
from ._common import PIXEL_UNITS, as_images, as_labels, probabilities, save_fool_files


@dataclass
class TemplateResult(Shows):
    """Share of images read as ``target`` at each ``alpha``; ``images`` for the first ``keep``."""

    alphas: list[float]
    target: int
    template: torch.Tensor  # (C, H, W), max |value| 1
    share_target: list[float]  # over the images whose label is not the target (all if no labels)
    mean_prob_target: list[float]
    accuracy: list[float] | None  # with labels: share still read as the label
    images: torch.Tensor  # (A, keep, C, H, W)
    original: torch.Tensor  # (keep, C, H, W)
    predictions: torch.Tensor  # (A, N)
    metrics: dict[str, Any] = field(default_factory=dict)

    def picture(self) -> Any:
        """One row per alpha of the first 8 images with the template added."""
        from ...render.images import display_scale, tile_images

        shown = self.images[:, :8]
        return tile_images(shown.flatten(0, 1), shown.shape[1], display_scale(shown.shape[-1]), False)

    @property
    def shown_alpha(self) -> int:
        """The index of the smallest alpha that makes half the images read as the target
        (the last alpha when none does): the one ``kangae fool`` draws."""
        return next((i for i, share in enumerate(self.share_target) if share >= 0.5), len(self.alphas) - 1)

    def save(self, folder: str | Path, *, classes: Sequence[str] | None = None) -> Path:  # type: ignore[override]
        """The files ``kangae fool --attack template`` writes: ``originals.png``,
        ``adversarials.png`` and ``differences.png`` at :attr:`shown_alpha`, ``template.png``,
        ``curve.png`` (share read as the target against alpha), ``fool.json`` and
        ``tensors.safetensors``."""
        from ...render.attacks import SHOW, plot_share_lines, save_before_after
        from ...render.images import save_grid

        name = class_namer(classes)
        a = max(0, self.shown_alpha)

        def draw(out: Path) -> list[str]:
            files = save_before_after(out, self.original[:SHOW], self.images[a, :SHOW],
                                      [f"read {name(k)}" for k in self.predictions[0, :SHOW]],
                                      [f"read {name(k)}" for k in self.predictions[a, :SHOW]],
                                      f"alpha = {self.alphas[a]:g}")
            save_grid(self.template[None], out / "template.png", signed=True,
                      suptitle=f"template of {name(self.target)}")
            plot_share_lines(self.alphas, {"model": self.share_target}, out / "curve.png",
                             "alpha (template scaled to max |value| 1)", f"% read as {name(self.target)}",
                             f"template of {name(self.target)} added")
            return [*files, "template.png", "curve.png"]

        numbers = {"attack": "template", "target": self.target, "alphas": self.alphas,
                   "share_target": self.share_target, "mean_prob_target": self.mean_prob_target,
                   "accuracy": self.accuracy, "shown_alpha": self.alphas[a] if self.alphas else None,
                   "metrics": self.metrics}
        return save_fool_files(self, folder, numbers, draw)


def template_attack(model: nn.Module, images: torch.Tensor, target: int | torch.Tensor,
                    alphas: Sequence[float] = (0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0), *,
                    template: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                    keep: int = 25, template_images: torch.Tensor | None = None,
                    template_labels: torch.Tensor | None = None,
                    batch_size: int | None = None) -> TemplateResult:
    """Add ``alpha * template`` to every image for every alpha (one batched forward per chunk).

    ``target`` is the class to push towards. Its template is the model's own (weight rows, or
    for a non-linear model the class-mean input gradient over ``template_images`` and
    ``template_labels``, by default ``images`` and ``labels``), unless ``template`` gives one
    (C, H, W), or all of them (K, C, H, W), e.g. another model's. ``labels`` are the images'
    true classes, for the accuracy and to leave images of the target class out of the share.
    """
    x = as_images(images)
    n = len(x)
    t0 = time.perf_counter()
    with frozen(model):
        k = probabilities(model, x[:1]).shape[1]
        if torch.is_tensor(target) and target.ndim > 0:
            raise ProbeInputError("target is one class index; pass a template as template=")
        target = int(target)
        if not 0 <= target < k:
            raise ProbeInputError(f"target must be a class index in 0-{k - 1}, got {target}")
        own = template is None
        if own:
            ti = x if template_images is None else as_images(template_images)
            tl = labels if template_labels is None else template_labels
            tpl = weight_templates(model, ti, None if tl is None else as_labels(tl, len(ti)),
                                   input_shape=tuple(x.shape[1:])).images[target]
        else:
            tpl = torch.as_tensor(template).float()
            if tpl.ndim == 4:
                tpl = tpl[target]
            if tuple(tpl.shape) != tuple(x.shape[1:]):
                raise ProbeInputError(f"template shape {tuple(tpl.shape)} does not match the images' "
                                      f"{tuple(x.shape[1:])}")
        tpl = tpl.cpu() / tpl.abs().max().clamp(min=1e-12)
        a = torch.as_tensor([float(v) for v in alphas])
        # one batch of all (alpha, image) pairs, built and scored chunk by chunk
        preds, ptarget = [], []
        flat_a = a.repeat_interleave(n)
        flat_i = torch.arange(n).repeat(len(a))
        build = batch_size or 1000
        for ac, ic in zip(flat_a.split(build), flat_i.split(build)):
            xa = (x[ic] + ac.view(-1, 1, 1, 1) * tpl).clamp(0, 1)
            p = probabilities(model, xa, batch_size)
            preds.append(p.argmax(1))
            ptarget.append(p[:, target])
        pred = torch.cat(preds).view(len(a), n) if n else torch.zeros(len(a), 0, dtype=torch.long)
        pt = torch.cat(ptarget).view(len(a), n) if n else torch.zeros(len(a), 0)
    y = as_labels(labels, n, k) if labels is not None else None
    counted = (y != target) if y is not None else torch.ones(n, dtype=torch.bool)
    share = ((pred == target) & counted).sum(1).float() / counted.sum().clamp(min=1)
    accuracy = (pred == y).float().mean(1).tolist() if y is not None else None
    shown = x[:keep]
    adv = (shown[None] + a.view(-1, 1, 1, 1, 1) * tpl).clamp(0, 1)
    return TemplateResult(a.tolist(), target, tpl, share.tolist(), pt.mean(1).tolist(), accuracy,
                          adv, shown, pred,
                          {"n": n, "counted": int(counted.sum()), "seconds": time.perf_counter() - t0,
                           "template": "own" if own else "given", "units": PIXEL_UNITS})
