"""The fewest pixel edits that make a model read an image as an intended class (post 000).

Post 000 draws digits in the browser until its MLP recognizes them and turns a 0 into a 9
with a few strokes. Here a greedy search does it: each step scores every candidate change
(every not-yet-changed pixel set to every other level in ``levels``) of every image still
below ``threshold`` in one chunked batch, and keeps each image's best change. For a model
whose target log-odds are a sum over pixels (a two-class linear model) each change's gain
is independent of the others, so the greedy set is the smallest one; for other models it
is an upper bound on the minimum.
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

from ...utils.stop import check_stop
from .._affine import affine_split
from .._model import frozen
from ..display import Shows, class_namer
from ..inputs import renamed
from ._common import (
    PIXEL_UNITS,
    as_images,
    as_labels,
    model_device,
    probabilities,
    save_fool_files,
)
from .gradient import saliency


@dataclass
class EditResult(Shows):
    """Edited ``images`` beside the ``original`` ones (CPU, (N, C, H, W) in [0, 1]).

    ``changed`` marks the edited pixels, ``edit_order`` lists them (flat index, -1 padded)
    and ``prob_trace`` the target probability after each edit (NaN padded).
    """

    images: torch.Tensor
    original: torch.Tensor
    target: torch.Tensor
    changed: torch.Tensor
    n_changed: torch.Tensor
    prob_before: torch.Tensor
    prob_after: torch.Tensor
    pred_before: torch.Tensor
    pred_after: torch.Tensor
    success: torch.Tensor
    edit_order: torch.Tensor
    prob_trace: torch.Tensor
    saliency_before: torch.Tensor | None = None
    saliency_after: torch.Tensor | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def picture(self) -> Any:
        """The first 8 originals above their changed versions (and the change, signed)."""
        from ..display import before_after

        return before_after(self.original[:8], self.images[:8])

    def save(self, folder: str | Path, *, classes: Sequence[str] | None = None) -> Path:  # type: ignore[override]
        """The files ``kangae fool --attack edit`` writes: ``originals.png``,
        ``adversarials.png``, ``differences.png``, ``saliency-before.png`` and
        ``saliency-after.png`` (the first 16), ``fool.json`` and ``tensors.safetensors``."""
        from ...render.attacks import SHOW, save_before_after
        from ...render.images import save_grid

        name = class_namer(classes)
        threshold = self.metrics.get("threshold")
        tgt = self.target.tolist()
        before = [f"read {name(k)}, p({name(t)}) {p:.0%}"
                  for k, t, p in zip(self.pred_before.tolist(), tgt, self.prob_before.tolist())]
        after = [f"{name(t)} {p:.0%}, {n} px"
                 for t, p, n in zip(tgt, self.prob_after.tolist(), self.n_changed.tolist())]

        def draw(out: Path) -> list[str]:
            goal = f" to reach p >= {threshold:.0%}" if threshold else ""
            files = save_before_after(out, self.original[:SHOW], self.images[:SHOW], before[:SHOW],
                                      after[:SHOW], f"fewest pixel edits{goal}")
            for when, maps in (("before", self.saliency_before), ("after", self.saliency_after)):
                if maps is not None:
                    save_grid(maps[:SHOW], out / f"saliency-{when}.png", signed=True,
                              titles=[f"d logit {name(t)}" for t in tgt[:SHOW]],
                              suptitle=f"input gradient, {when}")
                    files.append(f"saliency-{when}.png")
            return files

        numbers = {"attack": "edit", "n": len(tgt), "metrics": self.metrics,
                   "per_image": [{"target": t, "read_before": name(pb), "read_after": name(pa),
                                  "prob_target_before": p0, "prob_target_after": p1, "pixels_changed": n,
                                  "success": ok, "edits": [i for i in o if i >= 0]}
                                 for t, pb, pa, p0, p1, n, ok, o in zip(
                                     tgt, self.pred_before.tolist(), self.pred_after.tolist(),
                                     self.prob_before.tolist(), self.prob_after.tolist(),
                                     self.n_changed.tolist(), self.success.tolist(),
                                     self.edit_order.tolist())]}
        return save_fool_files(self, folder, numbers, draw)

    @property
    def targets(self) -> torch.Tensor:
        """The former name of ``target``."""
        return self.target

    @property
    def difference(self) -> torch.Tensor:
        return self.images - self.original


@renamed(targets="target")
def fewest_pixel_edits(model: nn.Module, images: torch.Tensor, target: torch.Tensor | int,
                       levels: Sequence[float] = (0.0, 1.0), threshold: float = 0.9,
                       max_edits: int = 150, chunk: int = 2048,
                       with_saliency: bool = True, fast: bool = True) -> EditResult:
    """Greedily change pixels until the model reads ``target`` with probability >= ``threshold``.

    Images already at the threshold are left as they are (zero edits). ``chunk`` bounds the
    number of candidate images per forward pass. ``fast``: for models that start with
    (normalize,) flatten and a linear layer, score candidates from the first layer's
    pre-activations (the same numbers up to rounding, far fewer operations).
    """
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    lv = torch.as_tensor([float(v) for v in levels])
    if not len(lv) or lv.min() < 0 or lv.max() > 1:
        raise ValueError(f"levels must be values in [0, 1], got {list(levels)}")
    if max_edits < 0:
        raise ValueError(f"max_edits must be at least 0, got {max_edits}")
    x0 = as_images(images)
    n, shape = len(x0), tuple(x0.shape[1:])
    d = x0[0].numel() if n else 0
    nl = len(lv)
    device = model_device(model)
    t0 = time.perf_counter()
    with frozen(model):
        p0 = probabilities(model, x0)
        t = as_labels(target, n, p0.shape[1])
        cur = x0.flatten(1).to(device).clone()
        tt, lvd = t.to(device), lv.to(device)
        changed = torch.zeros(n, d, dtype=torch.bool, device=device)
        order = torch.full((n, max_edits), -1, dtype=torch.long)
        trace = torch.full((n, max_edits + 1), float("nan"))
        prob = p0[torch.arange(n), t].clone()
        trace[:, 0] = prob
        evaluated = 0
        split = affine_split(model, tuple(x0.shape[1:])) if fast else None
        for step in range(max_edits):
            check_stop()
            active = (prob < threshold).nonzero().flatten()
            if not len(active):
                break
            act_d = active.to(device)
            # (A, D, L): a change is valid if the pixel is unchanged and the level differs
            valid = ~changed[act_d, :, None] & ((cur[act_d, :, None] - lvd).abs() > 1e-6)
            cand = valid.flatten().nonzero().flatten()
            scores = torch.full((len(active) * d * nl,), -float("inf"), device=device)
            if split is not None:
                head, w_cols, tail = split
                with torch.no_grad():
                    h_cur = head(cur[act_d].view(-1, *shape)).float()
            for c in cand.split(chunk):
                a, rest = c // (d * nl), c % (d * nl)
                pix, lev = rest // nl, rest % nl
                with torch.no_grad():
                    if split is not None:
                        delta = lvd[lev] - cur[act_d[a], pix]
                        logits = tail(h_cur[a] + delta[:, None] * w_cols[pix])
                    else:
                        batch = cur[act_d[a]].clone()
                        batch[torch.arange(len(c), device=device), pix] = lvd[lev]
                        logits = model(batch.view(-1, *shape))
                    logp = F.log_softmax(logits.float(), 1)
                scores[c] = logp.gather(1, tt[act_d[a]][:, None]).squeeze(1)
            evaluated += len(cand)
            best, arg = scores.view(len(active), d * nl).max(1)
            ok = torch.isfinite(best)
            if not ok.any():
                break
            rows, arg, best = act_d[ok], arg[ok], best[ok]
            pix, lev = arg // nl, arg % nl
            cur[rows, pix] = lvd[lev]
            changed[rows, pix] = True
            rows_c = rows.cpu()
            order[rows_c, step] = pix.cpu()
            prob[rows_c] = best.exp().cpu()
            trace[rows_c, step + 1] = prob[rows_c]
        adv = cur.view(n, *shape).cpu()
        p1 = probabilities(model, adv)
    seconds = time.perf_counter() - t0
    idx = torch.arange(n)
    success = p1[idx, t] >= threshold
    changed_img = changed.cpu().view(n, *shape)
    n_changed = changed_img.flatten(1).sum(1)
    result = EditResult(
        adv, x0, t, changed_img, n_changed, p0[idx, t], p1[idx, t], p0.argmax(1), p1.argmax(1),
        success, order, trace,
        metrics={"threshold": threshold, "levels": lv.tolist(), "units": PIXEL_UNITS,
                 "max_edits": max_edits, "n": n,
                 "success_rate": float(success.float().mean()) if n else float("nan"),
                 "mean_edits_successful": float(n_changed[success].float().mean()) if success.any()
                 else None,
                 "candidates_scored": evaluated, "first_layer_shortcut": split is not None,
                 "seconds": seconds,
                 "images_per_second": n / max(seconds, 1e-9)})
    if with_saliency and n:
        result.saliency_before = saliency(model, x0, t)
        result.saliency_after = saliency(model, adv, t)
    return result
