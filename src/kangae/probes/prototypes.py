"""Discrete black-box search for class prototypes, with forward passes only (seed 000).

Seed 000 asked an MNIST MLP "what is your 5?" by sweeping the pixels of a binary image and
keeping, for each pixel, the value that raised the class output (``greedy``), or by random
single-pixel mutations kept when they helped (``mc``). kangae runs the same algorithms for
every target and restart as one batch, and returns the *same images* as the one-forward-
per-trial sequential reference (:func:`reference_search`), faster in two exact ways:

* **Speculative windows.** A proposal that is rejected leaves the image unchanged, so the
  next ``K`` proposals can all be scored against the current image in one batch; every one
  before the first accepted proposal is exactly what the sequential algorithm would have
  rejected. The window grows while nothing is accepted and shrinks when something is.
* **Incremental first layer.** When the model is a ``Sequential`` whose first weighted
  layer is ``Linear`` or ``Conv2d`` (after ``Normalize``/``Flatten``), that prefix is affine,
  so a one-pixel change adds one precomputed column to its output instead of a full forward.

Scores are computed in float64 on a private copy of the model and a change is kept only if
it raises the score by more than ``1e-9`` (relative), so both implementations make the same
decisions although their floating-point sums differ in the last bits.

``block`` mode is a different algorithm (steepest ascent): each step scores every pixel and
level at once and applies the single best change; it suits models where one batched
forward is much cheaper than many small ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.zoo import Normalize
from ._model import eval_copy, input_shape_of
from .result import PrototypeResult

ScoreKind = Literal["logit", "prob", "logprob"]
SCORES = ("logit", "prob", "logprob")
TOLERANCE = 1e-9
_MAX_COLUMN_BYTES = 512 << 20
_BATCH_BYTES = 64 << 20
_MIN_WINDOW = 8


def _tol(s: torch.Tensor) -> torch.Tensor:
    return TOLERANCE * s.abs().clamp(min=1.0)


def _pick(logits: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "prob":
        logits = F.softmax(logits, dim=1)
    elif kind == "logprob":
        logits = F.log_softmax(logits, dim=1)
    elif kind != "logit":
        raise ValueError(f"unknown score '{kind}'; use one of {', '.join(SCORES)}")
    return logits.gather(1, targets[:, None]).squeeze(1)


def _affine_prefix(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """Split ``model`` into (affine prefix ending in its first Linear/Conv2d, the rest)."""
    if not isinstance(model, nn.Sequential):
        return None
    children = _leaves(model)
    for i, m in enumerate(children):
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            return nn.Sequential(*children[: i + 1]), nn.Sequential(*children[i + 1 :])
        if not isinstance(m, (Normalize, nn.Flatten, nn.Identity)):
            return None
    return None


def _leaves(seq: nn.Sequential) -> list[nn.Module]:
    """A nested Sequential as one flat list of modules (same computation)."""
    out: list[nn.Module] = []
    for m in seq.children():
        out += _leaves(m) if isinstance(m, nn.Sequential) else [m]
    return out


class _Scorer:
    """Scores candidate images: all chains, window positions and levels in one batch."""

    def __init__(self, model: nn.Module, shape: tuple[int, ...], kind: str, incremental: bool):
        self.model, self.shape, self.kind = model, shape, kind
        self.dim = int(torch.tensor(shape).prod())
        self.incremental = False
        split = _affine_prefix(model) if incremental else None
        if split is None:
            return
        self.prefix, self.rest = split
        dtype, device = next(model.parameters()).dtype, next(model.parameters()).device
        with torch.no_grad():
            zero = self.prefix(torch.zeros(1, *shape, dtype=dtype, device=device))
            self.pre_shape = tuple(zero.shape[1:])
            width = zero[0].numel()
            if self.dim * width * 8 > _MAX_COLUMN_BYTES:
                return
            cols = []
            eye = torch.eye(self.dim, dtype=dtype, device=device)
            for chunk in eye.split(max(1, _BATCH_BYTES // (width * 8))):
                cols.append(self.prefix(chunk.view(-1, *shape)).flatten(1) - zero.flatten(1))
        self.columns = torch.cat(cols)  # (D, P): prefix(x + d e_p) = prefix(x) + d * columns[p]
        self.width = width
        self.incremental = True

    @torch.no_grad()
    def state(self, x: torch.Tensor) -> torch.Tensor | None:
        return self.prefix(x.view(-1, *self.shape)).flatten(1) if self.incremental else None

    @torch.no_grad()
    def score(self, x: torch.Tensor, pre: torch.Tensor | None, targets: torch.Tensor) -> torch.Tensor:
        if pre is not None:
            return _pick(self.rest(pre.view(-1, *self.pre_shape)), targets, self.kind)
        return _pick(self.model(x.view(-1, *self.shape)), targets, self.kind)

    @torch.no_grad()
    def candidates(self, x: torch.Tensor, pre: torch.Tensor | None, targets: torch.Tensor,
                   pixels: torch.Tensor, values: torch.Tensor,
                   mask: torch.Tensor | None = None, current: torch.Tensor | None = None
                   ) -> torch.Tensor:
        """Scores ``(n, K, L)`` of setting pixel ``pixels[n, k]`` to ``values[n, k, l]``.

        A candidate that leaves the pixel as it is cannot raise the score, so it is not
        evaluated and gets ``-inf`` (the sequential reference evaluates it and rejects it);
        so do positions outside ``mask`` ``(n, K)``.
        """
        dv = values - (x.gather(1, pixels) if current is None else current)[..., None]
        todo = dv != 0
        if mask is not None:
            todo &= mask[..., None]
        chain, kk, ll = todo.nonzero(as_tuple=True)
        out = torch.full(values.shape, float("-inf"), dtype=x.dtype, device=x.device)
        width = self.width if self.incremental else self.dim
        step = max(1, _BATCH_BYTES // (width * 8))
        for lo in range(0, len(chain), step):
            c, k, lv = chain[lo : lo + step], kk[lo : lo + step], ll[lo : lo + step]
            if self.incremental:
                batch = torch.addcmul(pre.index_select(0, c),
                                      self.columns.index_select(0, pixels[c, k]), dv[c, k, lv, None])
                logits = self.rest(batch.view(-1, *self.pre_shape))
            else:
                batch = x[c].clone()
                batch[torch.arange(len(c), device=x.device), pixels[c, k]] = values[c, k, lv]
                logits = self.model(batch.view(-1, *self.shape))
            out[c, k, lv] = _pick(logits, targets[c], self.kind)
        return out

    def apply(self, x: torch.Tensor, pre: torch.Tensor | None, chains: torch.Tensor,
              pixels: torch.Tensor, values: torch.Tensor) -> None:
        if pre is not None:
            dv = values - x[chains, pixels]
            pre[chains] += self.columns[pixels] * dv[:, None]
        x[chains, pixels] = values


class _Events:
    """Accepted changes ``(step, chain, pixel, value)``; frames are replayed from them."""

    def __init__(self) -> None:
        self.rows: list[tuple[torch.Tensor, ...]] = []

    def add(self, steps: torch.Tensor, chains: torch.Tensor, pixels: torch.Tensor,
            values: torch.Tensor) -> None:
        self.rows.append((steps, chains, pixels, values))

    def table(self) -> np.ndarray:
        """All events as a float64 ``(E, 4)`` array of (step, chain, pixel, value), by step."""
        if not self.rows:
            return np.zeros((0, 4))
        ev = np.stack([torch.cat(col).double().cpu().numpy() for col in zip(*self.rows)], 1)
        return ev[np.argsort(ev[:, 0], kind="stable")]

    def frames(self, x0: torch.Tensor, at: Sequence[int]) -> torch.Tensor:
        """Images of every chain after ``at[i]`` proposals (``(F, N, D)``)."""
        ev = self.table()
        x, out, j = x0.detach().cpu().double().numpy().copy(), [], 0
        for t in at:
            while j < len(ev) and ev[j, 0] <= t:
                x[int(ev[j, 1]), int(ev[j, 2])] = ev[j, 3]
                j += 1
            out.append(torch.from_numpy(x.copy()))
        return torch.stack(out)


def _run_pass(scorer: _Scorer, x: torch.Tensor, pre: torch.Tensor | None, s: torch.Tensor,
              targets: torch.Tensor, pixels: torch.Tensor, values: torch.Tensor,
              active: torch.Tensor, events: _Events, offset: int, max_window: int) -> torch.Tensor:
    """One pass over each active chain's proposal sequence; returns which chains changed.

    Each chain has its own window: about twice as long as its last wait for an acceptance,
    doubled after a window with none. Chains are addressed with masks rather than index
    copies, since this loop runs once per accepted change and its overhead is the cost.
    """
    n_chains, length = pixels.shape
    dev = x.device
    sweep = bool((pixels == torch.arange(length, device=dev)).all()) and \
        bool((values == values[:1, :1]).all())
    ptr = torch.zeros(n_chains, dtype=torch.long, device=dev)
    changed = torch.zeros(n_chains, dtype=torch.bool, device=dev)
    window = torch.full((n_chains,), min(16, max_window), dtype=torch.long, device=dev)
    span_all = torch.arange(max_window, device=dev)
    rows = torch.arange(n_chains, device=dev)
    threshold = s + _tol(s)
    while True:
        live = active & (ptr < length)
        if not bool(live.any()):
            return changed
        span = span_all[: int(window[live].max())]
        pos = ptr[:, None] + span
        valid = (pos < length) & (span < window[:, None]) & live[:, None]
        pos.clamp_(max=length - 1)
        if sweep:  # greedy: proposal g is pixel g with the same levels everywhere
            pix, vals = pos, values[:, : len(span)]
        else:
            pix = pixels.gather(1, pos)
            vals = values.gather(1, pos[..., None].expand(-1, -1, values.shape[2]))
        cand = scorer.candidates(x, pre, targets, pix, vals, valid, x.gather(1, pix))
        best, best_level = cand.max(dim=2)
        improve = valid & (best > threshold[:, None])
        hit = improve.any(1)
        miss = live & ~hit
        ptr += window * miss
        window = torch.where(miss, (window * 2).clamp(max=max_window), window)
        if not bool(hit.any()):
            continue
        c = rows[hit]
        k = improve[hit].to(torch.int8).argmax(1)
        p = pix[c, k]
        v = vals[c, k, best_level[c, k]]
        scorer.apply(x, pre, c, p, v)
        s[c] = best[c, k]
        threshold[c] = s[c] + _tol(s[c])
        events.add(offset + pos[c, k] + 1, c, p, v)
        ptr[c] = pos[c, k] + 1
        changed[c] = True
        window[c] = (2 * (k + 1)).clamp(min=_MIN_WINDOW, max=max_window)


def _initial(init: str | torch.Tensor, n: int, shape: tuple[int, ...], dtype: torch.dtype,
             device: torch.device, generator: torch.Generator) -> torch.Tensor:
    dim = int(torch.tensor(shape).prod())
    if isinstance(init, torch.Tensor):
        img = init.to(device=device, dtype=dtype).reshape(-1, dim)
        if img.shape[0] not in (1, n):
            raise ValueError(f"init holds {img.shape[0]} images; give 1 or {n}")
        return img.expand(n, dim).clone()
    if init == "blank":
        return torch.zeros(n, dim, dtype=dtype, device=device)
    if init == "random":
        return torch.rand(n, dim, generator=generator, dtype=dtype).to(device)
    raise ValueError(f"unknown init '{init}'; use blank, random or an image tensor")


def _proposals(method: str, n: int, dim: int, levels: torch.Tensor, steps: int,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    if method == "greedy":
        pixels = torch.arange(dim).expand(n, dim)
        values = levels.expand(n, dim, len(levels))
    else:  # mc: a random pixel set to a random level, as in the seed
        pixels = torch.randint(0, dim, (n, steps), generator=generator)
        values = levels[torch.randint(0, len(levels), (n, steps), generator=generator)][..., None]
    return pixels, values


def _as_targets(targets: int | Sequence[int] | torch.Tensor, restarts: int,
                num_classes: int) -> torch.Tensor:
    t = torch.as_tensor(targets if not isinstance(targets, int) else [targets], dtype=torch.long)
    if t.ndim != 1 or len(t) == 0:
        raise ValueError("targets must be a non-empty list of class indices")
    if (t < 0).any() or (t >= num_classes).any():
        raise ValueError(f"targets must lie in 0..{num_classes - 1}, got {t.tolist()}")
    return t.repeat_interleave(restarts)


def search_prototypes(model: nn.Module, targets: int | Sequence[int] | torch.Tensor, *,
                      method: str = "greedy", levels: Sequence[float] = (0.0, 1.0),
                      init: str | torch.Tensor = "blank", restarts: int = 1,
                      max_sweeps: int = 10, steps: int = 10_000, score: ScoreKind = "logit",
                      input_shape: tuple[int, ...] | None = None, incremental: bool = True,
                      max_window: int = 64, frames: int = 40, seed: int = 0,
                      dtype: torch.dtype = torch.float64) -> PrototypeResult:
    """Prototypes of ``targets`` by discrete search over pixel values (forward passes only).

    ``method``: ``greedy`` sweeps pixels in order, trying each of ``levels`` and keeping the
    best if it raises the score, until a sweep changes nothing (or ``max_sweeps``);
    ``mc`` makes ``steps`` random single-pixel mutations, keeping those that help; ``block``
    is steepest ascent (see the module notes). ``score`` is the target's logit (default),
    probability or log-probability. Restarts differ only with ``init="random"`` or ``mc``;
    the best restart per target is returned.
    """
    if method not in ("greedy", "mc", "block"):
        raise ValueError(f"unknown search method '{method}'; use greedy, mc or block")
    device = next(model.parameters()).device
    shape = tuple(input_shape or input_shape_of(model))
    net = eval_copy(model, dtype)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        num_classes = net(torch.zeros(1, *shape, dtype=dtype, device=device)).shape[1]
    t = _as_targets(targets, restarts, num_classes).to(device)
    n, dim = len(t), int(torch.tensor(shape).prod())
    lv = torch.as_tensor(list(levels), dtype=dtype)
    x0 = _initial(init, n, shape, dtype, device, gen)
    scorer = _Scorer(net, shape, score, incremental)
    x = x0.clone()
    pre = scorer.state(x)
    s = scorer.score(x, pre, t)
    events = _Events()
    if method == "block":
        total = _steepest_ascent(scorer, x, pre, s, t, lv.to(device), max_steps=steps, events=events)
        sweeps = None
    else:
        pixels, values = _proposals(method, n, dim, lv, steps, gen)
        pixels, values = pixels.to(device), values.to(device)
        active = torch.ones(n, dtype=torch.bool, device=device)
        passes = max_sweeps if method == "greedy" else 1
        sweeps = torch.zeros(n, dtype=torch.long)
        for i in range(passes):
            if i and method == "greedy":
                pre = scorer.state(x)  # refresh the running sums once a sweep
            changed = _run_pass(scorer, x, pre, s, t, pixels, values, active, events,
                                i * pixels.shape[1], max_window)
            sweeps += active.cpu().long()
            active &= changed
            if not active.any():
                break
        total = int(sweeps.max()) * pixels.shape[1]
    return _finish(x, x0, s, t, restarts, shape, events, total, frames, method,
                   {"score": score, "levels": list(levels), "init": init if isinstance(init, str)
                    else "given", "restarts": restarts, "incremental": scorer.incremental,
                    "sweeps": None if sweeps is None else sweeps.view(-1, restarts).max(1).values.tolist(),
                    "changes": [int(c) for c in _count_changes(events, n)]})


def _count_changes(events: _Events, n: int) -> torch.Tensor:
    return torch.from_numpy(np.bincount(events.table()[:, 1].astype(np.int64), minlength=n))


def _steepest_ascent(scorer: _Scorer, x: torch.Tensor, pre: torch.Tensor | None, s: torch.Tensor,
                     t: torch.Tensor, levels: torch.Tensor, max_steps: int, events: _Events) -> int:
    n, dim = x.shape
    pixels = torch.arange(dim, device=x.device).expand(n, dim)
    values = levels.expand(n, dim, len(levels))
    active = torch.ones(n, dtype=torch.bool, device=x.device)
    step = 0
    while active.any() and step < max_steps:
        idx = active.nonzero().squeeze(1)
        cand = scorer.candidates(x[idx], None if pre is None else pre[idx], t[idx], pixels[idx],
                                 values[idx])
        flat = cand.flatten(1)
        best, where = flat.max(1)
        better = best > s[idx] + _tol(s[idx])
        active[idx[~better]] = False
        if better.any():
            c, w = idx[better], where[better]
            p, v = w // len(levels), levels[w % len(levels)]
            scorer.apply(x, pre, c, p, v)
            s[c] = best[better]
            step += 1
            events.add(torch.full_like(c, step), c, p, v)
    return step


def _finish(x: torch.Tensor, x0: torch.Tensor, s: torch.Tensor, t: torch.Tensor, restarts: int,
            shape: tuple[int, ...], events: _Events, total: int, n_frames: int, method: str,
            metrics: dict) -> PrototypeResult:
    per = s.view(-1, restarts)
    best = per.argmax(1) + torch.arange(per.shape[0], device=s.device) * restarts
    at = sorted({round(i * total / max(1, n_frames - 1)) for i in range(n_frames)}) if total else [0]
    frames = events.frames(x0, at)[:, best.cpu()] if n_frames else None
    return PrototypeResult(
        images=x[best].float().view(-1, *shape).clamp(0, 1),
        targets=t[best].cpu(),
        scores=s[best].float().cpu(),
        method=method,
        frames=None if frames is None else frames.float().view(len(at), -1, *shape),
        metrics={**metrics, "restart_scores": per.float().cpu().tolist(), "frame_steps": at},
    )


@torch.no_grad()
def reference_search(model: nn.Module, targets: Sequence[int], *, method: str = "greedy",
                     levels: Sequence[float] = (0.0, 1.0), init: str | torch.Tensor = "blank",
                     restarts: int = 1, max_sweeps: int = 10, steps: int = 10_000,
                     score: ScoreKind = "logit", input_shape: tuple[int, ...] | None = None,
                     seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The seed's algorithm as written: one class at a time, one forward pass per trial.

    Kept to verify :func:`search_prototypes` (same images) and to measure its speed-up.
    Returns every chain's final image, ``(len(targets) * restarts, C, H, W)``.
    """
    if method not in ("greedy", "mc"):
        raise ValueError(f"the sequential reference covers greedy and mc, not '{method}'")
    device = next(model.parameters()).device
    shape = tuple(input_shape or input_shape_of(model))
    net = eval_copy(model, dtype)
    gen = torch.Generator().manual_seed(seed)
    num_classes = net(torch.zeros(1, *shape, dtype=dtype, device=device)).shape[1]
    t = _as_targets(list(targets), restarts, num_classes)
    n, dim = len(t), int(torch.tensor(shape).prod())
    lv = torch.as_tensor(list(levels), dtype=dtype)
    x0 = _initial(init, n, shape, dtype, device, gen)
    pixels, values = _proposals("mc" if method == "mc" else "greedy", n, dim, lv, steps, gen)
    out = []
    for c in range(n):
        x = x0[c].clone()
        target = t[c : c + 1].to(device)
        s = _pick(net(x.view(1, *shape)), target, score)[0]
        for _ in range(max_sweeps if method == "greedy" else 1):
            changed = False
            for g in range(pixels.shape[1]):
                p = int(pixels[c, g])
                trials = []
                for v in values[c, g]:
                    trial = x.clone()
                    trial[p] = v
                    trials.append(_pick(net(trial.view(1, *shape)), target, score)[0])
                scores = torch.stack(trials)
                best = int(scores.argmax())
                if scores[best] > s + _tol(s):
                    x[p], s, changed = values[c, g, best], scores[best], True
            if not changed:
                break
        out.append(x)
    return torch.stack(out).float().view(n, *shape)
