"""Is an explanation true? Scores that measure it rather than show it.

* Deletion and insertion (Petsiuk, Das & Saenko, "RISE", BMVC 2018): remove (or add) pixels
  in the order the explanation ranks them and follow the target probability; the area under
  that curve is low for deletion and high for insertion when the ranking is faithful. The
  steps of many images are scored together, through a scoring copy of the model that gives
  its logits with less work (``_inference``).
* Pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV
  2016): a hit when the attribution's maximum falls inside the object's box (within a
  tolerance, 15 px at 224 in the paper, 1 px here at 28 px per digit).
* Sanity check (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018): the rank
  correlation between explanations of the trained model and of the same architecture with
  random weights; an explanation that does not change is not explaining the model. The
  cascading version randomizes the layers from the top down, one more at a time, and reports
  the rank correlation and SSIM at each step; its last step is the full randomization.
* ROAD (Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution
  Methods", ICML 2022): remove a fraction of the pixels, most relevant first (MoRF, low is
  good) or least relevant first (LeRF, high is good), and fill them by noisy linear
  imputation, so the removal itself leaks no shape; see :func:`impute`.
* Infidelity and max-sensitivity (Yeh et al., "On the (In)fidelity and Sensitivity of
  Explanations", NeurIPS 2019), computed by ``captum.metrics``.
* Random-logit test (Sixt, Granz & Landgraf, "When Explanations Lie", ICML 2020): the
  explanation of a random other class should differ from the target's (SSIM, lower is good).
* Sparseness (Chalasani et al., ICML 2020: the Gini index of |a|) and complexity (Bhatt,
  Weller & Moura, IJCAI 2020: the entropy of |a| / sum |a|).

A constant map (all zero, say, when a mask never moved) ranks nothing: :func:`degenerate`
flags it, and every per-image score here is NaN for it, so that it is counted apart and
never averaged in as a pass.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..utils.device import chunk_size, module_device
from ._inference import Scorer
from ._model import frozen
from .display import Shows
from .explanation import degenerate
from .masks import gaussian_blur

Explainer = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]




def _ranks(attribution: torch.Tensor, seed: int) -> torch.Tensor:
    """Rank of every pixel (0 = most important) per image, ties broken at random."""
    a = attribution.flatten(1).double()
    g = torch.Generator().manual_seed(seed)
    scale = a.abs().amax(1, keepdim=True) + 1e-30
    jitter = torch.rand(a.shape, generator=g, dtype=torch.float64) * 1e-9 * scale
    order = (a + jitter).argsort(1, descending=True)
    # the inverse permutation, written in place rather than sorted a second time
    ranks = torch.arange(a.shape[1]).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, ranks)


def _auc(curve: torch.Tensor) -> torch.Tensor:
    """Trapezoid area of curves sampled at evenly spaced fractions in [0, 1]: (N, S+1) -> (N,)."""
    s = curve.shape[1] - 1
    return (curve.sum(1) - 0.5 * (curve[:, 0] + curve[:, -1])) / s


@torch.no_grad()
def deletion_insertion(model: nn.Module, images: torch.Tensor, attribution: torch.Tensor,
                       target: torch.Tensor, steps: int = 28, baseline: str = "zero",
                       batch_size: int | None = None, seed: int = 0,
                       kinds: Sequence[str] = ("deletion", "insertion")) -> dict[str, torch.Tensor]:
    """Deletion and insertion curves and AUCs for one explanation per image.

    Pixels (all channels at a location together) go in order of decreasing attribution;
    step k removes (deletion) or restores (insertion) the first ``k/steps`` of them. The
    removed value is 0 (``baseline="zero"``, MNIST's background) or a blurred copy.
    Returns ``deletion``/``insertion`` AUCs (N,) and their curves (N, steps + 1) for each
    of ``kinds``, and ``steps_scored``: how many (image, step) images went through the model.

    A step whose pixels all equal the baseline already (a black pixel "deleted" to black)
    leaves the image as the step before left it, so it takes that step's score instead of a
    forward pass: the same numbers, and on MNIST most steps past the ink.
    """
    device = module_device(model)
    x = images.to(device)
    x = x.float().div(255) if x.dtype == torch.uint8 else x.float()
    n, c, h, w = x.shape
    base = torch.zeros_like(x) if baseline == "zero" else gaussian_blur(x, max(h, w) / 28 * 3)
    rank = _ranks(attribution.reshape(n, h * w), seed).to(device)
    counts = torch.round(torch.linspace(0, h * w, steps + 1, device=device)).long()
    t = target.to(device).long()
    score = Scorer(model, x, batch_size)
    fresh = _steps_that_change(x, base, rank, counts)  # (n, steps + 1), the same for both kinds
    pairs = fresh.nonzero()  # (image, step) of every image that needs a forward pass, in order
    # an unchanged step takes the score of the last step that changed the image
    last = torch.where(fresh, torch.arange(steps + 1, device=device), 0).cummax(1).values
    curves = {}
    for kind in kinds:
        scored = torch.empty(len(pairs), device=device)
        # the steps to score go in full chunks across images, so every forward pass but the
        # last has the scorer's batch size (one set of kernels, set up once)
        for s in range(0, len(pairs), score.chunk):
            img, step = pairs[s : s + score.chunk].unbind(1)
            m = (rank[img] < counts[step, None]).to(x.dtype).view(-1, 1, h, w)
            xi, bi = x[img], base[img]
            mixed = xi * (1 - m) + bi * m if kind == "deletion" else bi * (1 - m) + xi * m
            scored[s : s + len(img)] = score(mixed, t[img])
        p = torch.empty(n, steps + 1, device=device)
        p[fresh] = scored
        curves[kind] = p.gather(1, last).cpu()
    bad = degenerate(attribution.reshape(n, h * w).cpu())
    result = {kind: _auc(curve).masked_fill(bad, float("nan")) for kind, curve in curves.items()}
    return {**result, **{f"{kind}_curve": curve for kind, curve in curves.items()},
            "steps_scored": int(fresh.sum()) * len(kinds)}


def _steps_that_change(x: torch.Tensor, base: torch.Tensor, rank: torch.Tensor,
                       counts: torch.Tensor) -> torch.Tensor:
    """(N, steps + 1) bool: step k (k >= 1) moves at least one pixel whose value differs from
    the baseline's, so its image differs from step k - 1's; step 0 always counts."""
    n = len(x)
    differs = (x != base).any(1).reshape(n, -1)  # (N, H*W): a pixel the baseline changes
    step_of = torch.bucketize(rank, counts, right=True)  # the step that first moves each pixel
    moved = torch.zeros(n, len(counts), device=x.device).scatter_add_(1, step_of, differs.float())
    fresh = moved > 0
    fresh[:, 0] = True
    return fresh


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
    randomization); normalization buffers are kept so inputs mean the same. The global RNG
    is seeded inside and restored after."""
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
    (so the black background, where x * grad is 0 for any model, does not count as agreement).
    NaN where either row is constant: a map that ranks nothing neither passes nor fails."""
    from scipy.stats import rankdata

    ra = torch.from_numpy(rankdata(a.detach().cpu().flatten(1).double().numpy(), axis=1))
    rb = torch.from_numpy(rankdata(b.detach().cpu().flatten(1).double().numpy(), axis=1))
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    rho = (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-12)
    return rho.masked_fill(degenerate(a.cpu()) | degenerate(b.cpu()), float("nan"))


def sanity_check(explainer: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
                 model: nn.Module, images: torch.Tensor, target: torch.Tensor,
                 seed: int = 0) -> torch.Tensor:
    """Spearman correlation of |attribution| for the trained and a randomized model, per
    image (the same targets for both). Near 1 means the explanation ignores the weights."""
    random_model = randomized_copy(model, seed).to(module_device(model))
    a = explainer(model, images, target).abs()
    b = explainer(random_model, images, target).abs()
    return spearman(a, b)


# ----------------------------------------------------------------------------- ROAD

# ROAD's noisy linear imputer: a removed pixel is the weighted mean of its 8 neighbours
# (1/6 for the 4 direct ones, 1/12 for the diagonals), removed neighbours included, so the
# removed pixels solve one sparse linear system per image and channel (Rong et al. 2022).
NEIGHBOUR_WEIGHTS = ((1 / 12, 1 / 6, 1 / 12), (1 / 6, 0.0, 1 / 6), (1 / 12, 1 / 6, 1 / 12))
_SOLVE_UNKNOWNS = 250_000  # removed pixels per sparse factorization (~300 MB of LU factors)


def _system(removed: np.ndarray, known: np.ndarray) -> tuple[Any, np.ndarray]:
    """ROAD's linear system for the removed pixels of a stack of (H, W) masks, block-diagonal
    (one block per mask): the sparse matrix and, per unknown, the weighted sum of its kept
    neighbours ``(n, C)`` from ``known`` ((B, H, W, C), zero where removed)."""
    from scipy.sparse import coo_matrix

    b, h, w = removed.shape
    bi, ii, jj = removed.nonzero()
    n = len(bi)
    index = np.full((b, h, w), -1, np.int64)
    index[bi, ii, jj] = np.arange(n)
    rows, cols, vals = [np.arange(n)], [np.arange(n)], []
    diag = np.zeros(n)
    rhs = np.zeros((n, known.shape[-1]))
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            wt = NEIGHBOUR_WEIGHTS[di + 1][dj + 1]
            y, z = ii + di, jj + dj
            inside = (y >= 0) & (y < h) & (z >= 0) & (z < w)
            if wt == 0 or not inside.any():
                continue
            yc, zc = y.clip(0, h - 1), z.clip(0, w - 1)
            diag += wt * inside
            other = np.where(inside, index[bi, yc, zc], -1)
            link = other >= 0
            rows.append(link.nonzero()[0])
            cols.append(other[link])
            vals.append(np.full(int(link.sum()), -wt))
            rhs += wt * inside[:, None] * known[bi, yc, zc]
    matrix = coo_matrix((np.concatenate([diag, *vals]), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(n, n)).tocsc()
    return matrix, rhs


CG_SIDE = 32  # px: up to this side conjugate gradients are faster; beyond, the direct solve


@torch.no_grad()
def impute(images: torch.Tensor, removed: torch.Tensor, noise: float = 0.0,
           generator: torch.Generator | None = None, solver: str = "auto") -> torch.Tensor:
    """ROAD's noisy linear imputation of the ``removed`` pixels ((B, 1, H, W) bool) of
    (B, C, H, W) ``images``: every removed pixel is the weighted mean of its 8 neighbours,
    then Gaussian noise of std ``noise`` on the filled pixels (ROAD uses 0.01). ``solver``:
    ``cg``, conjugate gradients on every system at once on the images' device (the system is
    a Dirichlet Laplacian: symmetric, positive definite whenever a pixel is kept), whose
    iterations grow with the image's side; ``direct``, a sparse direct solve (scipy's
    SuperLU, as ROAD's own code solves it), many masks per block-diagonal factorization;
    ``auto``, ``cg`` up to :data:`CG_SIDE` px and ``direct`` beyond. A mask that removes
    every pixel has nothing to interpolate from: it is filled with zeros."""
    b, c, h, w = images.shape
    if solver not in ("auto", "cg", "direct"):
        raise ValueError(f"unknown solver '{solver}'; use auto, cg or direct")
    if solver == "cg" or (solver == "auto" and max(h, w) <= CG_SIDE):
        filled = _solve_cg(images.double(), removed)
    else:
        filled = _solve_direct(images.double(), removed)
    if noise > 0:
        z = torch.randn(filled.shape, generator=generator, dtype=torch.float64).to(filled.device)
        filled = filled + noise * z * removed.reshape(b, 1, h, w).to(filled)
    return filled.to(dtype=images.dtype)


def _neighbour_sum(u: torch.Tensor) -> torch.Tensor:
    """Weighted sum of each pixel's in-image neighbours, for (B, 1, H, W)."""
    k = torch.tensor(NEIGHBOUR_WEIGHTS, dtype=u.dtype, device=u.device).view(1, 1, 3, 3)
    return F.conv2d(u, k, padding=1)


def _solve_cg(images: torch.Tensor, removed: torch.Tensor, tol: float = 1e-7,
              max_iter: int = 2000) -> torch.Tensor:
    """The imputation of every image and channel at once by conjugate gradients."""
    b, c, h, w = images.shape
    x = images.reshape(b * c, 1, h, w)
    unknown = removed.reshape(b, 1, h, w).to(x).repeat_interleave(c, 0)
    diag = _neighbour_sum(torch.ones(1, 1, h, w, dtype=x.dtype, device=x.device))

    def apply(v: torch.Tensor) -> torch.Tensor:  # A restricted to the unknowns
        return (diag * v - _neighbour_sum(v * unknown)) * unknown

    rhs = _neighbour_sum(x * (1 - unknown)) * unknown
    u = torch.zeros_like(x)
    r = rhs.clone()
    d = r.clone()
    rr = (r * r).flatten(1).sum(1)
    limit = tol**2 * (rhs * rhs).flatten(1).sum(1).clamp_min(1e-30)
    for _ in range(max_iter):
        if bool((rr <= limit).all()):
            break
        ad = apply(d)
        alpha = rr / (d * ad).flatten(1).sum(1).clamp_min(1e-300)
        u = u + alpha.view(-1, 1, 1, 1) * d
        r = r - alpha.view(-1, 1, 1, 1) * ad
        rr_new = (r * r).flatten(1).sum(1)
        d = r + (rr_new / rr.clamp_min(1e-300)).view(-1, 1, 1, 1) * d
        rr = rr_new
    return (x * (1 - unknown) + u * unknown).view(b, c, h, w)


def _solve_direct(images: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """The imputation by sparse LU factorizations of block-diagonal systems (on the CPU)."""
    from scipy.sparse.linalg import splu

    b, c, h, w = images.shape
    mask = removed.reshape(b, h, w).cpu().numpy().astype(bool)
    full = mask.reshape(b, -1).all(1)
    pixels = images.detach().cpu().permute(0, 2, 3, 1).numpy()  # (B, H, W, C)
    filled = np.where(mask[..., None], 0.0, pixels)
    todo = [i for i in range(b) if mask[i].any() and not full[i]]
    while todo:
        group, count = [], 0
        while todo and (not group or count + mask[todo[0]].sum() <= _SOLVE_UNKNOWNS):
            count += int(mask[todo[0]].sum())
            group.append(todo.pop(0))
        matrix, rhs = _system(mask[group], filled[group])
        solution = splu(matrix, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0,
                        options={"SymmetricMode": True}).solve(rhs)
        gi, ii, jj = mask[group].nonzero()
        filled[np.asarray(group)[gi], ii, jj] = solution
    return torch.from_numpy(filled).permute(0, 3, 1, 2).to(images.device)


def impute_reference(image: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """The same imputation for one (C, H, W) image by a sparse direct solve (scipy), as
    ROAD's own code does it: the oracle for :func:`impute`."""
    import numpy as np
    from scipy.sparse import lil_matrix
    from scipy.sparse.linalg import spsolve

    c, h, w = image.shape
    idx = {(int(i), int(j)): k for k, (i, j) in enumerate(removed[0].nonzero().tolist())}
    out = image.double().clone()
    if not idx:
        return out.to(image.dtype)
    a = lil_matrix((len(idx), len(idx)))
    rhs = np.zeros((len(idx), c))
    for (i, j), k in idx.items():
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                wt = NEIGHBOUR_WEIGHTS[di + 1][dj + 1]
                y, z = i + di, j + dj
                if wt == 0 or not (0 <= y < h and 0 <= z < w):
                    continue
                a[k, k] += wt
                if (y, z) in idx:
                    a[k, idx[(y, z)]] -= wt
                else:
                    rhs[k] += wt * image[:, y, z].double().numpy()
    sol = spsolve(a.tocsr(), rhs).reshape(len(idx), c)
    for (i, j), k in idx.items():
        out[:, i, j] = torch.from_numpy(np.asarray(sol[k]))
    return out.to(image.dtype)


ROAD_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@torch.no_grad()
def road(model: nn.Module, images: torch.Tensor, attribution: torch.Tensor, target: torch.Tensor,
         fractions: Sequence[float] = ROAD_FRACTIONS, noise: float = 0.01, batch_size: int | None = None,
         seed: int = 0) -> dict[str, torch.Tensor]:
    """ROAD: the target's probability after removing and imputing each fraction of the pixels,
    most relevant first (``morf``, (N, F); lower is better) and least relevant first (``lerf``;
    higher is better), with their means over the fractions (``morf_mean``, ``lerf_mean``, NaN
    for a degenerate map). All images and fractions impute as one system and score in chunks."""
    device = module_device(model)
    x = images.to(device)
    x = x.float().div(255) if x.dtype == torch.uint8 else x.float()
    n, c, h, w = x.shape
    if any(not 0 < f < 1 for f in fractions):
        raise ValueError(f"ROAD fractions must lie strictly between 0 and 1, got {tuple(fractions)}")
    rank = _ranks(attribution.reshape(n, h * w), seed).to(device)
    counts = torch.tensor([round(f * h * w) for f in fractions], device=device)
    g = torch.Generator().manual_seed(seed)
    t = target.to(device).long()
    k = len(fractions)
    per = max(1, chunk_size(batch_size, device, (c, h, w)) // k)
    score = Scorer(model, x, batch_size)
    out: dict[str, torch.Tensor] = {}
    for order in ("morf", "lerf"):
        r = rank if order == "morf" else h * w - 1 - rank
        curve = torch.empty(n, k)
        for i in range(0, n, per):
            ri = r[i : i + per]
            removed = (ri[:, None, :] < counts[None, :, None]).view(-1, 1, h, w)  # (B*F, 1, H, W)
            xi = x[i : i + per].repeat_interleave(k, 0)
            filled = impute(xi, removed, noise, g).clamp(0, 1)
            p = score(filled, t[i : i + per].repeat_interleave(k))
            curve[i : i + per] = p.view(len(ri), k).cpu()
        out[order] = curve
    bad = degenerate(attribution.reshape(n, -1).cpu())
    out["morf_mean"] = out["morf"].mean(1).masked_fill(bad, float("nan"))
    out["lerf_mean"] = out["lerf"].mean(1).masked_fill(bad, float("nan"))
    return out


# ----------------------------------------------------------------------------- Yeh et al.


def infidelity(model: nn.Module, images: torch.Tensor, attribution: torch.Tensor, target: torch.Tensor,
               n_samples: int = 16, noise: float = 0.02, seed: int = 0,
               batch_size: int | None = None) -> torch.Tensor:
    """Infidelity (Yeh et al. 2019) by ``captum.metrics.infidelity``: the mean squared error
    between ``I . a`` and ``f(x) - f(x - I)`` for Gaussian perturbations ``I`` (std ``noise``)
    of the target's logit, ``a`` scaled by its optimal factor (``normalize=True``). Lower is
    better; NaN for a degenerate map. Perturbations come from a seeded generator. The noise
    is small so that the model is near linear over it: on 20 MNIST digits (fast-cnn, 1 epoch)
    the signed gradient scored 0.031 against random's 0.043 at std 0.02, and every map
    scored 3.6 +- 0.04 at std 0.1."""
    from captum.metrics import infidelity as captum_infidelity

    device = module_device(model)
    x = images.to(device).float()
    g = torch.Generator().manual_seed(seed)
    a = attribution.to(device).float().expand_as(x) / x.shape[1]

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i = noise * torch.randn(inputs.shape, generator=g).to(inputs.device)
        return i, inputs - i

    # perturbed copies per forward pass: a cache-sized chunk, and at least one per image (Captum)
    per = max(len(x), min(len(x) * n_samples, chunk_size(batch_size, device, tuple(x.shape[1:]))))
    with frozen(model), torch.no_grad():
        value = captum_infidelity(model, perturb, x, a, target=target.to(device).long(),
                                  n_perturb_samples=n_samples, max_examples_per_batch=per,
                                  normalize=True)
    return value.detach().double().cpu().masked_fill(degenerate(attribution.cpu()), float("nan"))


def max_sensitivity(explainer: Explainer, model: nn.Module, images: torch.Tensor, target: torch.Tensor,
                    n_samples: int = 8, radius: float = 0.02, seed: int = 0) -> torch.Tensor:
    """Max-sensitivity (Yeh et al. 2019) by ``captum.metrics.sensitivity_max``: the largest
    relative change ``||a(x + d) - a(x)|| / ||a(x)||`` over ``n_samples`` uniform
    perturbations ``|d| <= radius``. All perturbed copies are explained in one call. Lower is
    better; NaN where the map of ``x`` is degenerate."""
    from captum.metrics import sensitivity_max

    device = module_device(model)
    x = images.to(device).float()
    g = torch.Generator().manual_seed(seed)

    def perturb(inputs: torch.Tensor, perturb_radius: float) -> torch.Tensor:
        d = (torch.rand(inputs.shape, generator=g) * 2 - 1) * perturb_radius
        return (inputs + d.to(inputs.device)).clamp(0, 1)

    def explain_fn(inputs: torch.Tensor | tuple[torch.Tensor, ...], target: torch.Tensor) -> torch.Tensor:
        inputs = inputs[0] if isinstance(inputs, tuple) else inputs
        with torch.enable_grad():  # sensitivity_max runs under no_grad; explanations need it
            return explainer(model, inputs, target).to(device).float()

    value = sensitivity_max(explain_fn, x, perturb_func=perturb, perturb_radius=radius,
                            n_perturb_samples=n_samples, max_examples_per_batch=len(x),
                            target=target.to(device).long())
    base = explainer(model, x, target.to(device).long())
    return value.detach().double().cpu().masked_fill(degenerate(base.cpu()), float("nan"))


# ----------------------------------------------------------------------------- map statistics


def sparseness(attribution: torch.Tensor) -> torch.Tensor:
    """Gini index of |a| per map (Chalasani et al. 2020): 0 when every pixel shares equally,
    near 1 when one pixel holds it all. NaN for a degenerate map."""
    a = attribution.detach().flatten(1).abs().double().sort(1).values
    n = a.shape[1]
    i = torch.arange(1, n + 1, dtype=torch.float64)
    gini = ((2 * i - n - 1) * a).sum(1) / (n * a.sum(1)).clamp_min(1e-300)
    return gini.masked_fill(degenerate(attribution.cpu()), float("nan"))


def complexity(attribution: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of the fractional contributions |a_i| / sum |a| (Bhatt et al. 2020):
    low for a concentrated map. NaN for a degenerate map."""
    a = attribution.detach().flatten(1).abs().double()
    p = a / a.sum(1, keepdim=True).clamp_min(1e-300)
    h = -(p * p.clamp_min(1e-300).log()).sum(1)
    return h.masked_fill(degenerate(attribution.cpu()), float("nan"))


def _normalized(a: torch.Tensor) -> torch.Tensor:
    """|a| scaled to [0, 1] per map, (N, 1, H, W) float64."""
    a = a.detach().double().abs().sum(1, keepdim=True) if a.ndim == 4 else a.detach().double().abs()[:, None]
    return a / a.flatten(1).amax(1).clamp_min(1e-300).view(-1, 1, 1, 1)


def ssim(a: torch.Tensor, b: torch.Tensor, win_size: int = 7, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per pair of (N, 1, H, W) maps, as scikit-image's
    ``structural_similarity`` computes it by default (7 x 7 uniform window, sample covariance,
    K1 = 0.01, K2 = 0.03, mean over the window centres that fit), batched."""
    x, y = a.double(), b.double()
    win = min(win_size, x.shape[-1], x.shape[-2])
    win -= 1 - win % 2  # odd
    mean = lambda t: F.avg_pool2d(t, win, stride=1)  # the uniform window, valid positions only
    cov = win**2 / (win**2 - 1)
    ux, uy = mean(x), mean(y)
    vx = cov * (mean(x * x) - ux * ux)
    vy = cov * (mean(y * y) - uy * uy)
    vxy = cov * (mean(x * y) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


def map_similarity(a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
    """Spearman correlation of |a| and |b| and SSIM of the maps scaled to [0, 1], per image;
    NaN where either map is degenerate (the comparisons Adebayo et al. report)."""
    bad = degenerate(a.cpu()) | degenerate(b.cpu())
    na, nb = _normalized(a.cpu()), _normalized(b.cpu())
    return {"spearman": spearman(a.abs().cpu(), b.abs().cpu()),
            "ssim": ssim(na, nb).masked_fill(bad, float("nan"))}


# ----------------------------------------------------------------------------- randomization


def _learnable_layers(model: nn.Module, images: torch.Tensor) -> list[str]:
    """Names of the modules that own parameters and can be re-initialized, in the order
    the forward pass calls them (the order Adebayo's cascade reverses)."""
    order: list[str] = []
    handles = []
    for name, m in model.named_modules():
        if m is model or not hasattr(m, "reset_parameters"):
            continue
        if any(True for _ in m.parameters(recurse=False)):
            handles.append(m.register_forward_hook(
                lambda mod, i, o, name=name: order.append(name) if name not in order else None))
    try:
        with torch.no_grad(), frozen(model):
            model(images[:1].to(module_device(model)).float())
    finally:
        for h in handles:
            h.remove()
    return order


def mean_and_se(values: torch.Tensor) -> tuple[list[float], int]:
    """``[mean, standard error]`` over the finite values, and how many there were (NaN, NaN
    for none)."""
    v = values.double().flatten()
    v = v[torch.isfinite(v)]
    if len(v) == 0:
        return [float("nan"), float("nan")], 0
    se = float(v.std() / len(v) ** 0.5) if len(v) > 1 else 0.0
    return [float(v.mean()), se], int(len(v))


@dataclass
class CascadeResult(Shows):
    """Cascading randomization: ``layers[k]`` is randomized at step ``k + 1`` (top first);
    ``spearman``/``ssim`` are (steps, N), the last step being the full randomization."""

    layers: list[str]
    spearman: torch.Tensor
    ssim: torch.Tensor
    degenerate: torch.Tensor  # (steps, N): the randomized model's map is degenerate
    extra: dict[str, Any] = field(default_factory=dict)

    picture_name = "cascade.png"

    def summary(self) -> dict[str, Any]:
        """Per step, ``[mean, standard error]`` of the rank correlation and SSIM over the
        images (degenerate maps are NaN there and left out) and the degenerate count: the
        ``cascade`` entry of ``kangae explain-bench``'s ``bench.json``."""
        return {"layers": list(self.layers), "spearman": [mean_and_se(v)[0] for v in self.spearman],
                "ssim": [mean_and_se(v)[0] for v in self.ssim], "degenerate": self.degenerate.sum(1).tolist()}

    def picture(self) -> Any:
        """Rank correlation and SSIM with the trained model's map, step by step (as
        ``kangae explain-bench`` draws ``cascade.png``)."""
        from ..render.plots import as_picture, plot_cascade

        method = str(self.extra.get("method", "explanation"))
        return as_picture(lambda path: plot_cascade({method: {"cascade": self.summary()}}, path))

    def record(self) -> dict[str, Any]:
        return {**self.extra, **self.summary()}


def cascading_randomization(explainer: Explainer, model: nn.Module, images: torch.Tensor,
                            target: torch.Tensor, seed: int = 0) -> CascadeResult:
    """Adebayo et al. (2018)'s cascading model-parameter randomization: from the logits down,
    one more learnable layer takes the weights it has in :func:`randomized_copy` (the same
    random weights at every step), and each step's explanation is compared with the trained
    model's (the same targets). The last step is the fully randomized model."""
    device = module_device(model)
    layers = _learnable_layers(model, images)[::-1]
    random_model = randomized_copy(model, seed)
    original = explainer(model, images, target)
    work = copy.deepcopy(model)
    rho, sim, bad = [], [], []
    for name in layers:
        src = random_model.get_submodule(name)
        dst = work.get_submodule(name)
        with torch.no_grad():
            for key, value in src.state_dict().items():
                dst.state_dict()[key].copy_(value)
        a = explainer(work.to(device), images, target)
        scores = map_similarity(original, a)
        rho.append(scores["spearman"])
        sim.append(scores["ssim"])
        bad.append(degenerate(a.cpu()))
    n = len(images)
    empty = torch.empty(0, n, dtype=torch.float64)
    return CascadeResult(layers, torch.stack(rho) if rho else empty, torch.stack(sim) if sim else empty,
                         torch.stack(bad) if bad else torch.empty(0, n, dtype=torch.bool))


def random_logit(explainer: Explainer, model: nn.Module, images: torch.Tensor, target: torch.Tensor,
                 num_classes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Sixt et al. (2020)'s random-logit test: explain a random class other than the target
    (drawn with a seeded generator) and compare with the target's explanation. High SSIM or
    rank correlation means the explanation does not depend on the class."""
    g = torch.Generator().manual_seed(seed)
    t = target.cpu().long()
    other = (t + torch.randint(1, num_classes, t.shape, generator=g)) % num_classes
    a = explainer(model, images, t)
    b = explainer(model, images, other)
    return {**map_similarity(a, b), "other": other}


# ----------------------------------------------------------------------------- pointing game


def centre_map(n: int, size: tuple[int, int]) -> torch.Tensor:
    """The pointing game's centre baseline (TorchRay's "center"): a map peaking at the middle."""
    h, w = size
    yy = torch.arange(h, dtype=torch.float64)[:, None] - (h - 1) / 2
    xx = torch.arange(w, dtype=torch.float64)[None, :] - (w - 1) / 2
    return (-(yy**2 + xx**2)).float().expand(n, 1, h, w).clone()


def difficult(images: torch.Tensor, boxes: torch.Tensor, tolerance: int = 1,
              area: float = 0.25) -> torch.Tensor:
    """TorchRay's "difficult" subset of the pointing game, for canvases with one object:
    the object's box covers under ``area`` of the canvas and clutter (ink outside the box)
    lies within ``tolerance`` px of it, where a hit and a distractor cannot be told apart."""
    n, _, h, w = images.shape
    b = boxes.long()
    box_area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    ys = torch.arange(h)[None, :, None]
    xs = torch.arange(w)[None, None, :]

    def inside(grow: int) -> torch.Tensor:
        return ((xs >= b[:, 0, None, None] - grow) & (xs < b[:, 2, None, None] + grow)
                & (ys >= b[:, 1, None, None] - grow) & (ys < b[:, 3, None, None] + grow))

    ring = inside(tolerance) & ~inside(0)
    ink = images.detach().float().amax(1) > 0
    return (box_area < area * h * w) & (ink & ring).flatten(1).any(1)
