"""Is an explanation true? Scores that measure it rather than show it.

* Deletion and insertion (Petsiuk, Das & Saenko, "RISE", BMVC 2018): remove (or add) pixels
  in the order the explanation ranks them and follow the target probability; the area under
  that curve is low for deletion and high for insertion when the ranking is faithful. All
  steps of all images are scored as batches of one tensor.
* Pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV
  2016): a hit when the attribution's maximum falls inside the object's box (within a
  tolerance, 15 px at 224 in the paper, 1 px here at 28 px per digit).
* Sanity check (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018): the rank
  correlation between explanations of the trained model and of the same architecture with
  random weights; an explanation that does not change is not explaining the model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.device import chunk_size
from ._model import frozen
from .inputs import model_device
from .masks import gaussian_blur


def _ranks(attribution: torch.Tensor, seed: int) -> torch.Tensor:
    """Rank of every pixel (0 = most important) per image, ties broken at random."""
    a = attribution.flatten(1).double()
    g = torch.Generator().manual_seed(seed)
    scale = a.abs().amax(1, keepdim=True) + 1e-30
    jitter = torch.rand(a.shape, generator=g, dtype=torch.float64) * 1e-9 * scale
    order = (a + jitter).argsort(1, descending=True)
    return order.argsort(1)


def _auc(curve: torch.Tensor) -> torch.Tensor:
    """Trapezoid area of curves sampled at evenly spaced fractions in [0, 1]: (N, S+1) -> (N,)."""
    s = curve.shape[1] - 1
    return (curve.sum(1) - 0.5 * (curve[:, 0] + curve[:, -1])) / s


@torch.no_grad()
def deletion_insertion(model: nn.Module, images: torch.Tensor, attribution: torch.Tensor,
                       target: torch.Tensor, steps: int = 28, baseline: str = "zero",
                       batch_size: int | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Deletion and insertion curves and AUCs for one explanation per image.

    Pixels (all channels at a location together) go in order of decreasing attribution;
    step k removes (deletion) or restores (insertion) the first ``k/steps`` of them. The
    removed value is 0 (``baseline="zero"``, MNIST's background) or a blurred copy.
    Returns ``deletion``/``insertion`` AUCs (N,) and their curves (N, steps + 1).
    """
    device = model_device(model)
    x = images.to(device)
    x = x.float().div(255) if x.dtype == torch.uint8 else x.float()
    n, c, h, w = x.shape
    base = torch.zeros_like(x) if baseline == "zero" else gaussian_blur(x, max(h, w) / 28 * 3)
    rank = _ranks(attribution.reshape(n, h * w), seed).to(device)
    counts = torch.round(torch.linspace(0, h * w, steps + 1, device=device)).long()
    t = target.to(device).long()
    curves = {}
    per = max(1, chunk_size(batch_size, device, (c, h, w)) // (steps + 1))  # images per pass
    with frozen(model):
        for kind in ("deletion", "insertion"):
            out = torch.empty(n, steps + 1)
            for i in range(0, n, per):
                r = rank[i : i + per]
                m = (r[:, None, :] < counts[None, :, None]).to(x.dtype)
                m = m.view(len(r), steps + 1, 1, h, w)
                xi, bi = x[i : i + per, None], base[i : i + per, None]
                mixed = xi * (1 - m) + bi * m if kind == "deletion" else bi * (1 - m) + xi * m
                logits = model(mixed.reshape(-1, c, h, w)).float()
                p = F.softmax(logits, 1).view(len(r), steps + 1, -1)
                ti = t[i : i + per, None, None].expand(-1, steps + 1, 1)
                out[i : i + per] = p.gather(2, ti)[..., 0].cpu()
            curves[kind] = out
    return {"deletion": _auc(curves["deletion"]), "insertion": _auc(curves["insertion"]),
            "deletion_curve": curves["deletion"], "insertion_curve": curves["insertion"]}


def pointing_hits(attribution: torch.Tensor, boxes: torch.Tensor, tolerance: int = 1) -> torch.Tensor:
    """Per image, whether the attribution's maximum lies in its box (left, top, right, bottom;
    right and bottom exclusive) grown by ``tolerance`` pixels. Ties: the first maximum."""
    n = attribution.shape[0]
    a = attribution.reshape(n, -1)
    w = attribution.shape[-1]
    idx = a.argmax(1)
    y, x = idx // w, idx % w
    b = boxes.long()
    return ((x >= b[:, 0] - tolerance) & (x < b[:, 2] + tolerance)
            & (y >= b[:, 1] - tolerance) & (y < b[:, 3] + tolerance))


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """The same architecture with every learnable layer re-initialized (Adebayo's full
    randomization); normalization buffers are kept so inputs mean the same."""
    clone = copy.deepcopy(model)
    gpus = sorted({p.device.index or 0 for p in clone.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=gpus):  # reset_parameters draws from the global RNG
        torch.manual_seed(seed)
        for m in clone.modules():
            owns_weights = any(True for _ in m.parameters(recurse=False))
            if m is not clone and hasattr(m, "reset_parameters") and owns_weights:
                m.reset_parameters()
    return clone


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per row of two (N, ...) tensors; ties get their mean rank
    (so the black background, where x * grad is 0 for any model, does not count as agreement)."""
    from scipy.stats import rankdata

    ra = torch.from_numpy(rankdata(a.flatten(1).double().numpy(), axis=1))
    rb = torch.from_numpy(rankdata(b.flatten(1).double().numpy(), axis=1))
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    return (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-12)


def sanity_check(explainer: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
                 model: nn.Module, images: torch.Tensor, target: torch.Tensor,
                 seed: int = 0) -> torch.Tensor:
    """Spearman correlation of |attribution| for the trained and a randomized model, per
    image (the same targets for both). Near 1 means the explanation ignores the weights."""
    random_model = randomized_copy(model, seed).to(model_device(model))
    a = explainer(model, images, target).abs()
    b = explainer(random_model, images, target).abs()
    return spearman(a, b)
