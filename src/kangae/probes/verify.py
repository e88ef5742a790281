"""Check a prototype: does the model (and an independent one) really read it as its target?

kangae's own: for each prototype, the target's rank, probability and margin over the
runner-up; robustness (share still read as the target under every shift of up to
``max_shift`` pixels, and under small Gaussian noise); and transfer to other models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._model import frozen
from .inputs import Target, as_images, as_target, model_device, renamed


def _shifted(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Every translation of every image by (dy, dx) in [-s, s]^2, zero-filled: (N, S, C, H, W)."""
    s = max_shift
    padded = F.pad(x, (s, s, s, s))
    h, w = x.shape[-2:]
    views = [padded[..., s + dy : s + dy + h, s + dx : s + dx + w]
             for dy in range(-s, s + 1) for dx in range(-s, s + 1)]
    return torch.stack(views, 1)


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    device = model_device(model)
    with frozen(model):
        return F.softmax(model(x.to(device)).float(), dim=1).cpu()


def as_model_input(images: torch.Tensor, signed: bool) -> torch.Tensor:
    """Prototype images as inputs in [0, 1]; signed templates keep their positive part."""
    if not signed:
        return images.clamp(0, 1)
    peak = images.flatten(1).abs().amax(1).clamp(min=1e-12).view(-1, *[1] * (images.ndim - 1))
    return (images / peak).clamp(0, 1)


@renamed(targets="target")
def verify_prototypes(model: nn.Module, images: torch.Tensor, target: Target, *,
                      class_names: Sequence[str] | None = None, max_shift: int = 2,
                      noise_std: float = 0.1, noise_samples: int = 16,
                      check_with: Sequence[nn.Module] = (), seed: int = 0) -> dict[str, Any]:
    """Numbers for each prototype (``target``: the class it stands for) and a summary;
    every check is one batched forward."""
    x = as_images(images)
    t = as_target(target, len(x))
    n = len(t)
    probs = _predict(model, x)
    rank = (probs > probs.gather(1, t[:, None])).sum(1) + 1
    p_t = probs.gather(1, t[:, None]).squeeze(1)
    others = probs.clone()
    others[torch.arange(n), t] = -1
    p_2, runner = others.max(1)
    shifts = _shifted(x, max_shift)
    s = shifts.shape[1]
    shift_ok = (_predict(model, shifts.flatten(0, 1)).argmax(1).view(n, s) == t[:, None]).float().mean(1)
    g = torch.Generator().manual_seed(seed)
    noisy = (x[:, None] + noise_std * torch.randn(n, noise_samples, *x.shape[1:], generator=g)).clamp(0, 1)
    noise_ok = (_predict(model, noisy.flatten(0, 1)).argmax(1).view(n, -1) == t[:, None]).float().mean(1)
    transfer = [(_predict(other, x).argmax(1) == t) for other in check_with]
    name = (lambda k: class_names[k]) if class_names else str
    rows = []
    for i in range(n):
        row = {"target": int(t[i]), "name": name(int(t[i])), "rank": int(rank[i]),
               "probability": float(p_t[i]), "runner_up": name(int(runner[i])),
               "margin": float(p_t[i] - p_2[i]), "shift_robustness": float(shift_ok[i]),
               "noise_robustness": float(noise_ok[i])}
        if transfer:
            row["transfer"] = [bool(tr[i]) for tr in transfer]
        rows.append(row)
    summary = {
        "all_rank_1": bool((rank == 1).all()),
        "min_probability": float(p_t.min()),
        "mean_shift_robustness": float(shift_ok.mean()),
        "mean_noise_robustness": float(noise_ok.mean()),
        "max_shift": max_shift, "noise_std": noise_std,
    }
    if transfer:
        summary["transfer_rate"] = [float(tr.float().mean()) for tr in transfer]
    return {"prototypes": rows, "summary": summary}
