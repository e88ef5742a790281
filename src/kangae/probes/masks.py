"""Perturbation masks: the pixels a decision rests on, found by optimizing what to delete.

Two methods, both batched (N images, and A areas, optimize as one tensor):

* ``meaningful_perturbation`` -- Fong & Vedaldi, "Interpretable Explanations of Black Boxes
  by Meaningful Perturbation" (ICCV 2017), the method of post 001. A mask ``m`` in [0, 1]
  (1 keeps a pixel) blends the image with a perturbed copy, ``m*x + (1-m)*x0``. The
  *deletion game* finds the smallest region whose removal kills the class:
  ``min l1*mean(1-m) + tv*TV_beta(m) + p_c(blend)``; the *preservation game* the smallest
  region that keeps it: ``min l1*mean(m) + tv*TV_beta(m) + (1 - p_c(blend))``. The mask
  lives at low resolution and is upsampled; the blend is jittered by up to ``jitter`` px.
  Paper defaults at 224 px: mask 28x28 (8x upsampling), l1 = 1e-4 on the sum (about 0.08 as
  a mean over the 28x28 mask), tv = 1e-2 with beta = 3, Adam with lr 0.1 for 300 steps,
  blur sigma 10 px, jitter up to 4 px; kangae uses them from 112 px on (``mask_defaults``).
  Below, kangae's 28x28 settings: a 14x14 mask (2x upsampling), jitter 1 px, blur sigma
  2 px; and perturb with a constant 0 (the MNIST background) since a blurred 2-px stroke
  stays readable.
* ``extremal_perturbation`` -- Fong, Patrick & Vedaldi, "Understanding Deep Networks via
  Extremal Perturbations and Smooth Masks" (ICCV 2019). The area is fixed (a ranking loss
  pulls the sorted mask to a step with ``a*HW`` ones, its weight growing geometrically as in
  TorchRay) and the mask is smooth (low-resolution parameters, bilinear upsampling, then a
  Gaussian; the paper uses a smooth-max convolution instead). The reward is the target
  logit margin (TorchRay's ``contrastive_reward``); several areas are solved in one call.
  TorchRay's defaults at 224 px (parameters every 7 px, sigma 21, area weight 300 growing
  to ~16x, a blur perturbation, 800 steps) are used from 112 px on (``extremal_defaults``);
  they give masks far coarser than a 2-px pen stroke, so below 112 px kangae uses one
  parameter per pixel, sigma 0.5 and weight 100. The ranking loss takes a top-K rather than
  a sort, and tied mask values share its gradient evenly (a sort hands the ties of the 0.5
  start to whichever pixels it orders last). Upsampling and blur are two fixed matrix
  products, jitter a gather. The measurements behind these choices are in docs/explain.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.device import chunk_size
from ..utils.stop import check_stop
from ..utils.threads import map_pieces, pieces
from ._model import frozen, resolve_targets
from .explanation import Explanation, degenerate, flag_degenerate
from .inputs import model_device

GAMES = ("deletion", "preservation")
PERTURBATIONS = ("constant", "blur", "noise")


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W), reflect-padded; sigma in pixels."""
    if sigma <= 0:
        return x
    radius = max(1, int(math.ceil(3 * sigma)))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def perturbed_copy(images: torch.Tensor, kind: str, value: float = 0.0, sigma: float = 2.0,
                   noise_std: float = 0.3, generator: torch.Generator | None = None) -> torch.Tensor:
    """The fully perturbed image ``x0`` that a mask blends in where it deletes."""
    if kind == "constant":
        return torch.full_like(images, value)
    if kind == "blur":
        return gaussian_blur(images, sigma)
    if kind == "noise":
        noise = torch.randn(images.shape, generator=generator, dtype=images.dtype)
        return (images + noise_std * noise.to(images.device)).clamp(0, 1)
    raise ValueError(f"unknown perturbation '{kind}'; use one of {', '.join(PERTURBATIONS)}")


def total_variation(m: torch.Tensor, beta: float = 3.0) -> torch.Tensor:
    """Mean of |dm|^beta over horizontal and vertical neighbours, per mask: (B,)."""
    dy = (m[..., 1:, :] - m[..., :-1, :]).abs().pow(beta).flatten(1).mean(1)
    dx = (m[..., :, 1:] - m[..., :, :-1]).abs().pow(beta).flatten(1).mean(1)
    return dy + dx


def _prepare(model: nn.Module, images: torch.Tensor, target: int | Sequence[int] | torch.Tensor | None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images as float on the model's device, targets (predicted where None), and p(target)."""
    device = model_device(model)
    x = images.to(device)
    x = x.float().div(255) if x.dtype == torch.uint8 else x.float()
    if x.ndim == 3:
        x = x.unsqueeze(0)
    with torch.no_grad():
        probs = F.softmax(model(x).float(), dim=1)
    t = resolve_targets(probs, target)
    return x, t, probs.gather(1, t[:, None])[:, 0]


def _adam(param: torch.Tensor, lr: float) -> torch.optim.Adam:
    """Adam, fused into one kernel where this torch has it for the device (4x faster a step on
    a 192-mask batch; CPU since torch 2.4), plain otherwise."""
    try:
        return torch.optim.Adam([param], lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam([param], lr=lr)


def _target_prob(model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return F.softmax(model(x).float(), dim=1).gather(1, t[:, None])[:, 0]


def log_odds(logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``log p_t / (1 - p_t)``: the target logit against all others (log-sum-exp), which keeps
    a useful gradient where a confident softmax has none."""
    own = logits.gather(1, t[:, None])[:, 0]
    others = logits.scatter(1, t[:, None], float("-inf")).logsumexp(1)
    return own - others


LARGE = 112  # px: from this side on, the masks take the papers' settings, scaled to the image


def mask_defaults(size: tuple[int, int]) -> dict[str, Any]:
    """The settings of :func:`meaningful_perturbation` that depend on the image size.

    Below :data:`LARGE` px, kangae's 28-px settings (MNIST digits, cluttered canvases,
    64-px shapes): a mask at half the resolution, a constant 0 perturbation, jitter 1 px,
    l1 = 2 and tv = 1 on means, Adam lr 0.05. From :data:`LARGE` px on, Fong & Vedaldi
    (2017)'s: a 28x28 mask (8x upsampling at 224 px), a blur of sigma 10 px at 224 (scaled
    with the side), jitter up to 4 px at 224, Adam lr 0.1, and their l1 = 1e-4 and tv = 1e-2
    (beta 3), which weigh sums over the mask, expressed as the means kangae uses (times the
    number of terms: l1 = 0.078, tv = 7.6 for a 28x28 mask)."""
    side = min(int(size[0]), int(size[1]))
    if side < LARGE:
        return {"perturbation": "constant", "blur_sigma": 2.0, "upsample": 2, "l1": 2.0, "tv": 1.0,
                "lr": 0.05, "jitter": 1, "defaults": "kangae (below 112 px)"}
    scale = side / 224
    upsample = max(1, round(side / 28))
    lh, lw = math.ceil(size[0] / upsample), math.ceil(size[1] / upsample)
    return {"perturbation": "blur", "blur_sigma": 10.0 * scale, "upsample": upsample,
            "l1": 1e-4 * lh * lw, "tv": 1e-2 * (lh - 1) * lw, "lr": 0.1,
            "jitter": max(1, round(4 * scale)), "defaults": "Fong & Vedaldi 2017 (112 px and up)"}


def extremal_defaults(size: tuple[int, int]) -> dict[str, Any]:
    """The settings of :func:`extremal_perturbation` that depend on the image size.

    Below :data:`LARGE` px, kangae's: one mask parameter per pixel, a Gaussian of 0.5 px, a
    constant 0 perturbation, area weight 100, 300 steps. From :data:`LARGE` px on,
    TorchRay's defaults (Fong, Patrick & Vedaldi 2019) scaled with the side: a parameter
    every 7 px at 224, the smooth mask of TorchRay's sigma 21 (its kernel is flat out to
    sigma / 2 and falls as a Gaussian of std sigma / 2: here a Gaussian of 10.5 px after the
    bilinear upsampling), a blur perturbation up to sigma 20 px (the top of TorchRay's blur
    pyramid), area weight 300 growing 16-fold (TorchRay's 1.0035 per step), 800 steps."""
    side = min(int(size[0]), int(size[1]))
    if side < LARGE:
        return {"perturbation": "constant", "blur_sigma": 2.0, "stride": 1, "sigma": 0.5, "steps": 300,
                "area_weight": 100.0, "defaults": "kangae (below 112 px)"}
    scale = side / 224
    return {"perturbation": "blur", "blur_sigma": 20.0 * scale, "stride": max(1, round(7 * scale)),
            "sigma": 10.5 * scale, "steps": 800, "area_weight": 300.0,
            "defaults": "TorchRay / Fong et al. 2019 (112 px and up)"}


def _meaningful_group(model: nn.Module, x: torch.Tensor, t: torch.Tensor, x0: torch.Tensor,
                      offsets: torch.Tensor, *, game: str, upsample: int, l1: float, tv: float,
                      tv_beta: float, steps: int, lr: float, jitter: int, objective: str,
                      line: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Optimize the masks of one group of images together, against the perturbed copies
    ``x0`` with jitter ``offsets`` (steps, 2, N): masks (N, 1, H, W), the blends, the
    target's probability on them, and the loss per step."""
    n, _, h, w = x.shape
    lh, lw = max(1, math.ceil(h / upsample)), max(1, math.ceil(w / upsample))
    start = 1.0 if game == "deletion" else 0.5
    low = torch.full((n, 1, lh, lw), start, device=x.device, requires_grad=True)
    opt = _adam(low, lr)
    curve = []
    for step in range(steps):
        check_stop()
        m = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
        blend = m * x + (1 - m) * x0
        if jitter > 0:  # the gather equals random_shift with the same draws
            blend = _shift(blend, _index_of(offsets[step], jitter, h, w, x.device), jitter)
        logits = model(blend).float()
        if objective == "prob":
            p = F.softmax(logits, dim=1).gather(1, t[:, None])[:, 0]
            term = p if game == "deletion" else 1 - p
        elif game == "deletion":
            term = log_odds(logits, t).clamp(min=line)
        else:
            term = -log_odds(logits, t).clamp(max=-line)
        kept = low.flatten(1).mean(1)
        loss = l1 * (1 - kept if game == "deletion" else kept) + tv * total_variation(low, tv_beta) + term
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        with torch.no_grad():
            low.clamp_(0, 1)
        curve.append(loss.detach().cpu())
    with torch.no_grad():
        m = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
        blend = m * x + (1 - m) * x0
        p1 = _target_prob(model, blend, t)
    return m, blend, p1, curve


def meaningful_perturbation(model: nn.Module, images: torch.Tensor,
                            target: int | Sequence[int] | torch.Tensor | None = None, *,
                            game: str = "deletion", perturbation: str | None = None,
                            value: float = 0.0, blur_sigma: float | None = None, noise_std: float = 0.3,
                            upsample: int | None = None, l1: float | None = None, tv: float | None = None,
                            tv_beta: float = 3.0, steps: int = 300, lr: float | None = None,
                            jitter: int | None = None, objective: str = "log-odds", stop: float = 0.01,
                            seed: int = 0) -> Explanation:
    """Fong & Vedaldi (2017) masks for a batch of images, optimized together in groups of
    :func:`~kangae.utils.device.chunk_size` images (128 MNIST digits on a CPU); random
    draws are made for the whole batch, so the groups never change a mask.

    ``target`` defaults to each image's predicted class. Returns an :class:`Explanation`
    whose ``attribution`` is the deleted (deletion game) or kept (preservation game) part.

    ``objective="prob"`` is the paper's class probability. The default ``"log-odds"`` uses
    the target's log-odds, hinged where p reaches ``stop`` (deletion) or ``1 - stop``
    (preservation): a confident MNIST model's softmax is flat at 1.0, so the probability
    gives no gradient at the unmasked image and the mask never moves; the hinge then lets
    the area penalty shrink the region to the least that still crosses the line.

    Settings left at None come from :func:`mask_defaults` for the images' size: kangae's
    28-px settings below 112 px, the paper's from 112 px on.
    """
    sizes = tuple(torch.as_tensor(images).shape[-2:])
    chosen = mask_defaults(sizes)
    given = dict(perturbation=perturbation, blur_sigma=blur_sigma, upsample=upsample, l1=l1, tv=tv,
                 lr=lr, jitter=jitter)
    chosen.update({k: v for k, v in given.items() if v is not None})
    perturbation, blur_sigma, upsample = chosen["perturbation"], chosen["blur_sigma"], chosen["upsample"]
    l1, tv, lr, jitter = chosen["l1"], chosen["tv"], chosen["lr"], chosen["jitter"]
    if objective not in ("log-odds", "prob"):
        raise ValueError(f"unknown objective '{objective}'; use log-odds or prob")
    line = math.log(stop / (1 - stop))
    if game not in GAMES:
        raise ValueError(f"unknown game '{game}'; use one of {', '.join(GAMES)}")
    g = torch.Generator().manual_seed(seed)
    settings = dict(game=game, upsample=upsample, l1=l1, tv=tv, tv_beta=tv_beta, steps=steps,
                    lr=lr, jitter=jitter, objective=objective, line=line)
    with frozen(model):
        x, t, p0 = _prepare(model, images, target)
        n, c, h, w = x.shape
        per = chunk_size(None, x.device, (c, h, w))  # independent masks: cache-sized groups
        # Random draws are made for the whole batch in one batch's order; groups take slices.
        x0 = perturbed_copy(x, perturbation, value, blur_sigma, noise_std, g)
        offsets = _draw_offsets(steps, n, jitter, g)
        # on a busy machine, groups run side by side on one thread each (kangae.utils.threads)
        parts = map_pieces(lambda s: _meaningful_group(model, x[s], t[s], x0[s], offsets[:, :, s],
                                                       **settings), pieces(n, per, x.device))
    m = torch.cat([q[0] for q in parts]) if parts else x.new_zeros(0, 1, h, w)
    blend = torch.cat([q[1] for q in parts]) if parts else x.new_zeros(0, c, h, w)
    p1 = torch.cat([q[2] for q in parts]) if parts else x.new_zeros(0)
    curve = [torch.cat(step) for step in zip(*[q[3] for q in parts])]
    attribution = (1 - m) if game == "deletion" else m
    area = attribution.flatten(1).mean(1)
    e = Explanation(
        method="mask", attribution=attribution.detach().cpu(), target=t.cpu(), prob=p0.cpu(),
        mask=m.detach().cpu(), perturbed=blend.cpu(), prob_after=p1.cpu(), area=area.cpu(),
        game=game, loss_curve=torch.stack(curve) if curve else None,
        metrics={"game": game, "perturbation": perturbation, "steps": steps, "l1": l1, "tv": tv,
                 "tv_beta": tv_beta, "upsample": upsample, "jitter": jitter, "lr": lr,
                 "blur_sigma": blur_sigma, "objective": objective, "defaults": chosen["defaults"]})
    return flag_degenerate(e, _still_masks(e, stop, objective, steps))


def _still_masks(e: Explanation, stop: float, objective: str, steps: int) -> dict[int, str]:
    """Why each mask that never moved stayed put: the target already past the game's line
    (the hinged objective is flat there, so only the area penalty acts, and it keeps the
    start), or a gradient that never reached the mask."""
    reasons = {}
    game = e.game or "deletion"
    for i in degenerate(e.attribution).nonzero().flatten().tolist():
        p = float(e.prob[i])
        if objective == "log-odds" and game == "deletion" and p <= stop:
            reasons[i] = (f"the mask did not move: p(target) = {p:.2%} is already under the deletion "
                          f"game's line (stop = {stop:.0%}), so there is nothing to delete")
        elif objective == "log-odds" and game == "preservation" and p >= 1 - stop:
            reasons[i] = (f"the mask did not move: p(target) = {p:.2%} is already over the preservation "
                          f"game's line (1 - stop = {1 - stop:.0%}) with the mask's start")
        else:
            reasons[i] = (f"the mask did not move in {steps} steps: the target's score gave it no "
                          "gradient (try objective='prob', more steps or another perturbation)")
    return reasons


def _axis_matrix(n_out: int, n_in: int, sigma: float, radius: int) -> torch.Tensor:
    """(n_out, n_in): linear upsampling (``align_corners=False``) then a reflect-padded
    Gaussian of ``radius`` along one axis, as a matrix (columns are the basis responses)."""
    eye = torch.eye(n_in, dtype=torch.float64)[:, None, :]
    up = F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[:, 0, :].T
    if sigma <= 0:
        return up
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    blur = F.conv1d(F.pad(torch.eye(n_out, dtype=torch.float64)[:, None, :], (radius, radius),
                          mode="reflect"), (k / k.sum()).view(1, 1, -1))[:, 0, :].T
    return blur @ up


def smoothing_matrices(low: tuple[int, int], size: tuple[int, int], sigma: float,
                       device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Ay, Ax)`` with ``Ay @ P @ Ax.T`` equal to bilinear upsampling of ``P`` (low res) to
    ``size`` followed by :func:`gaussian_blur`: two small matrix products instead of an
    interpolation and two depthwise convolutions, forward and backward."""
    (lh, lw), (h, w) = low, size
    radius = min(max(1, int(math.ceil(3 * sigma))), h - 1, w - 1)
    return (_axis_matrix(h, lh, sigma, radius).to(device, dtype),
            _axis_matrix(w, lw, sigma, radius).to(device, dtype))


def smooth_mask(params: torch.Tensor, size: tuple[int, int], sigma: float) -> torch.Tensor:
    """Low-resolution parameters to a smooth mask in [0, 1] of ``size``: bilinear
    upsampling, then a Gaussian of ``sigma`` px (both as matrix products)."""
    low = (params.shape[-2], params.shape[-1])
    ay, ax = smoothing_matrices(low, size, sigma, params.device, params.dtype)
    return (ay @ params @ ax.T).clamp(0, 1)


def _draw_offsets(steps: int, b: int, s: int, g: torch.Generator) -> torch.Tensor:
    """(steps, 2, B) shifts in [0, 2s], drawn step by step as :func:`random_shift` draws them,
    so a group of images can take its columns and get what the whole batch would have."""
    out = torch.zeros(steps, 2, b, dtype=torch.int16)  # small: one pair per image and step
    if s > 0:
        for i in range(steps):
            if i % 1024 == 0:
                check_stop()  # a very long mask can be stopped before its first step
            out[i, 0] = torch.randint(0, 2 * s + 1, (b,), generator=g)
            out[i, 1] = torch.randint(0, 2 * s + 1, (b,), generator=g)
    return out


def _index_of(offsets: torch.Tensor, s: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    """(B, H*W) indices into each image padded by ``s`` (flattened) that move it by the (2, B)
    offsets ``(dy, dx)``; with offsets from :func:`_draw_offsets` a gather with them equals
    ``random_shift``, and its backward is a scatter-add rather than an accumulating index-put."""
    dy, dx = offsets.to(device)
    rows = dy[:, None] + torch.arange(h, device=device)
    cols = dx[:, None] + torch.arange(w, device=device)
    return (rows[:, :, None] * (w + 2 * s) + cols[:, None, :]).flatten(1)


def _shift(x: torch.Tensor, index: torch.Tensor, s: int) -> torch.Tensor:
    b, c, h, w = x.shape
    padded = F.pad(x, (s, s, s, s)).flatten(2)
    return padded.gather(2, index[:, None].expand(b, c, -1)).view(b, c, h, w)


def _top_weights(flat: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
    """Weights ``W`` (rows of ``flat`` grouped as ``(N, A)``, area ``i`` keeping ``counts[i]``)
    with ``(W * m).sum(1)`` the sum of each row's K largest values: 1 above the K-th largest,
    0 below, and at the K-th largest value the share of the remaining K among the ties.

    This is the ranking loss's gradient without a full sort; ties (the 0.5 start, or masks
    clamped at 0 or 1) share it evenly, where a sort favours whichever pixels it happens to
    order last."""
    hw = flat.shape[1]
    groups = flat.view(-1, len(counts), hw)
    out = torch.zeros_like(groups)
    for i, kc in enumerate(counts):
        if kc <= 0:
            continue
        row = groups[:, i]
        tau = row.topk(kc, 1, sorted=False).values.amin(1, keepdim=True)  # the K-th largest
        above, tie = row > tau, row == tau
        share = (kc - above.sum(1, keepdim=True)) / tie.sum(1, keepdim=True)
        out[:, i] = above + tie * share
    return out.view_as(flat)


def _extremal_group(model: nn.Module, x: torch.Tensor, t: torch.Tensor, x0: torch.Tensor,
                    offsets: torch.Tensor, *, areas: tuple[float, ...], game: str, stride: int,
                    sigma: float, steps: int, lr: float, area_weight: float, area_growth: float,
                    jitter: int, reward: str
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Optimize the N x A masks of one group of images together, against the perturbed
    copies ``x0`` (N*A, C, H, W) with jitter ``offsets`` (steps, 2, N*A): masks
    (N*A, 1, H, W), the blends they make, the target's probability on them, and the loss
    curve (steps, N)."""
    n, c, h, w = x.shape
    k = len(areas)
    xs = x.repeat_interleave(k, 0)
    ts = t.repeat_interleave(k, 0)
    # blend = keep*x + (1-keep)*x0 = base + sign*m*diff: preservation keeps m, deletion 1 - m
    base, sign = (x0, 1.0) if game == "preservation" else (xs, -1.0)
    pair = torch.cat([base, xs - x0], 1)  # (N*A, 2C, H, W): shifted together, without grad
    lh, lw = max(1, math.ceil(h / stride)), max(1, math.ceil(w / stride))
    ay, ax = smoothing_matrices((lh, lw), (h, w), sigma, x.device)
    params = torch.full((n * k, 1, lh, lw), 0.5, device=x.device, requires_grad=True)
    # ranking loss mean((sort(m) - ref)^2), ref a step of K ones at the top, without a sort:
    # (sum m^2 - 2 * (sum of the K largest m) + K) / HW, see _top_weights
    counts = [int(round(a * h * w)) for a in areas]
    kk = torch.tensor(counts, dtype=torch.float32, device=x.device).repeat(n)
    opt = _adam(params, lr)
    growth = area_growth ** (1 / max(steps - 1, 1))
    curve = torch.empty(steps, n)
    for step in range(steps):
        check_stop()
        m = (ay @ params @ ax.T).clamp(0, 1)
        if jitter > 0:  # the model sees the blend moved by up to ``jitter`` px, zeros coming in
            index = _index_of(offsets[step], jitter, h, w, x.device)
            seen = _shift(m, index, jitter)
            b0, d0 = _shift(pair, index, jitter).split(c, 1)
        else:
            seen, (b0, d0) = m, pair.split(c, 1)
        logits = model(torch.addcmul(b0, seen, d0, value=sign)).float()
        score = logits.gather(1, ts[:, None])[:, 0]
        if reward == "contrastive":
            score = score - logits.scatter(1, ts[:, None], float("-inf")).max(1).values
        gain = score if game == "preservation" else -score
        flat = m.view(n * k, h * w)
        regul = (flat.square().sum(1) - 2 * (_top_weights(flat.detach(), counts) * flat).sum(1)
                 + kk) / (h * w)
        loss = -gain + area_weight * growth**step * regul
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        with torch.no_grad():
            params.clamp_(0, 1)
            curve[step] = loss.view(n, k).mean(1).cpu()
    with torch.no_grad():
        m = (ay @ params @ ax.T).clamp(0, 1)
        blend = torch.addcmul(base, m, xs - x0, value=sign)
        p1 = _target_prob(model, blend, ts)
    return m, blend, p1, curve


def extremal_perturbation(model: nn.Module, images: torch.Tensor,
                          target: int | Sequence[int] | torch.Tensor | None = None, *,
                          areas: Sequence[float] = (0.05, 0.1, 0.2), game: str = "preservation",
                          perturbation: str | None = None, value: float = 0.0,
                          blur_sigma: float | None = None, noise_std: float = 0.3, stride: int | None = None,
                          sigma: float | None = None, steps: int | None = None, lr: float = 0.05,
                          area_weight: float | None = None, area_growth: float = 16.0,
                          jitter: int = 1, reward: str = "contrastive", seed: int = 0) -> Explanation:
    """Fong, Patrick & Vedaldi (2019): for each image and each area ``a``, the smooth mask
    of area ``a`` that keeps (preservation) or removes (deletion) the most evidence.

    The N x A masks optimize together, in groups of images whose blends fill one
    :func:`~kangae.utils.device.chunk_size` (42 MNIST digits x 3 areas on a CPU); random
    draws are made for the whole batch, so the groups never change a mask. ``attribution``
    is the mean of the A masks (for deletion, of the deleted parts), so pixels chosen at
    small areas rank highest.
    ``reward`` is TorchRay's ``contrastive_reward`` (the target logit minus the best other
    logit; the default) or its ``simple_reward`` (``"logit"``).
    Settings left at None come from :func:`extremal_defaults` for the images' size: kangae's
    28-px settings below 112 px, TorchRay's from 112 px on.
    """
    chosen = extremal_defaults(tuple(torch.as_tensor(images).shape[-2:]))
    given = dict(perturbation=perturbation, blur_sigma=blur_sigma, stride=stride, sigma=sigma,
                 steps=steps, area_weight=area_weight)
    chosen.update({k: v for k, v in given.items() if v is not None})
    perturbation, blur_sigma, stride = chosen["perturbation"], chosen["blur_sigma"], chosen["stride"]
    sigma, steps, area_weight = chosen["sigma"], chosen["steps"], chosen["area_weight"]
    if reward not in ("contrastive", "logit"):
        raise ValueError(f"unknown reward '{reward}'; use contrastive or logit")
    if game not in GAMES:
        raise ValueError(f"unknown game '{game}'; use one of {', '.join(GAMES)}")
    areas = tuple(float(a) for a in areas)
    if not areas or any(not 0 < a < 1 for a in areas):
        raise ValueError(f"areas must lie strictly between 0 and 1, got {areas}")
    g = torch.Generator().manual_seed(seed)
    settings = dict(areas=areas, game=game, stride=stride, sigma=sigma, steps=steps, lr=lr,
                    area_weight=area_weight, area_growth=area_growth, jitter=jitter, reward=reward)
    with frozen(model):
        x, t, p0 = _prepare(model, images, target)
        n, c, h, w = x.shape
        k = len(areas)
        # Masks are independent, so images go in groups whose N x A blends fit the CPU's
        # cache-friendly chunk (see chunk_size): 1.5-2x faster on a conv net than all at once.
        per = max(1, chunk_size(None, x.device, (c, h, w)) // k)
        # Every random draw is made for the whole batch, in the order one batch would make
        # them, and each group takes its slice: the groups do not change the masks.
        x0 = perturbed_copy(x.repeat_interleave(k, 0), perturbation, value, blur_sigma, noise_std, g)
        offsets = _draw_offsets(steps, n * k, jitter, g)
        # on a busy machine, groups run side by side on one thread each (kangae.utils.threads)
        parts = map_pieces(lambda s: _extremal_group(
            model, x[s], t[s], x0[s.start * k:s.stop * k], offsets[:, :, s.start * k:s.stop * k], **settings),
            pieces(n, per, x.device))
    m = torch.cat([q[0] for q in parts]) if parts else x.new_zeros(0, 1, h, w)
    blend = torch.cat([q[1] for q in parts]) if parts else x.new_zeros(0, c, h, w)
    p1 = torch.cat([q[2] for q in parts]) if parts else x.new_zeros(0)
    curve = torch.cat([q[3] for q in parts], 1) if parts else torch.empty(steps, 0)
    masks = m.view(n, k, 1, h, w)
    return Explanation(
        method="extremal", attribution=masks.mean(1).detach().cpu(), target=t.cpu(), prob=p0.cpu(),
        mask=masks.detach().cpu(), perturbed=blend.view(n, k, c, h, w).cpu(),
        prob_after=p1.view(n, k).cpu(), area=masks.flatten(2).mean(2).cpu(), areas=areas,
        game=game, loss_curve=curve if steps else None,
        metrics={"game": game, "perturbation": perturbation, "steps": steps, "stride": stride,
                 "sigma": sigma, "areas": list(areas), "lr": lr, "blur_sigma": blur_sigma,
                 "area_weight": area_weight, "jitter": jitter, "reward": reward,
                 "defaults": chosen["defaults"]})
