"""Discrete black-box search for class prototypes, with forward passes only (post 000).

Post 000 asked an MNIST MLP "what is your 5?" by sweeping the pixels of a binary image and
keeping, for each pixel, the value that raised the class output (``greedy``), or by random
single-pixel mutations kept when they helped (``mc``). kangae runs the same algorithms for
every target and restart as one batch, and returns the *same images* as the one-forward-
per-trial sequential reference (:func:`reference_search`), faster in two exact ways:

* **Speculative windows.** The next ``K`` proposals of every chain are scored in one
  batch, each on top of the image that the *predicted* decisions before it would make
  (the decision it got in the previous round, or "reject" when it is new). Up to the first
  proposal whose decision differs from its prediction every prediction was right, so
  those decisions are exactly the sequential ones and are all applied at once (the
  differing one with its true decision); the later decisions become the next round's
  predictions. A round thus accepts many changes, not one, like speculative decoding.
  The window grows while predictions hold and shrinks when they fail early.
* **Incremental first layer.** When the model is a ``Sequential`` whose first weighted
  layer is ``Linear`` or ``Conv2d`` (after ``Normalize``/``Flatten``), that prefix is affine,
  so a one-pixel change adds one precomputed column to its output instead of a full forward;
  the image before a window position is the running sum over the predicted changes only.
  For the ``logit`` score, only the target's row of a last ``Linear`` layer is computed.

Scores are computed in float64 on a private copy of the model and a change is kept only if
it raises the score by more than ``1e-9`` (relative), so both implementations make the same
decisions although their floating-point sums differ in the last bits.

``block`` mode is a different algorithm (steepest ascent): each step scores every pixel and
level at once and applies the single best change; it suits models where one batched
forward is much cheaper than many small ones.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._affine import affine_prefix as _affine_prefix
from ._affine import leaves as _leaves
from ._affine import linear_columns as _linear_columns
from ._model import eval_copy, input_shape_of
from .inputs import ProbeInputError, Target, as_classes, model_device, renamed
from .result import PrototypeResult
from .superpixels import grid_segments

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


class _Scorer:
    """Scores candidate images: all chains, window positions and levels in one batch.

    One API for every search: :meth:`state` (the first layer's output of images, or None),
    :meth:`score` (the current images), :meth:`window` (the best level of each proposal in a
    window, each on top of the predicted changes before it) and :meth:`commit` (apply
    accepted changes). Images are rows of ``dim`` search units; ``units`` ``(C*H*W,)`` maps
    each pixel to its unit (a patch of one channel), ``None`` when units are pixels.
    """

    def __init__(self, model: nn.Module, shape: tuple[int, ...], kind: str, incremental: bool,
                 units: torch.Tensor | None = None):
        self.model, self.shape, self.kind = model, shape, kind
        self.pixels = int(torch.tensor(shape).prod())  # values per image the model sees
        self.units = units
        self.dim = self.pixels if units is None else int(units.max()) + 1  # values the search sets
        self.incremental = False
        self.head: tuple[list[nn.Module], torch.Tensor, torch.Tensor | None] | None = None
        self.cheap = False  # a candidate costs about one first-layer column
        split = _affine_prefix(model) if incremental else None
        if split is None:
            return
        self.prefix, self.rest = split
        first = next(iter([*model.parameters(), *model.buffers()]), None)
        dtype = first.dtype if first is not None else torch.float32
        device = model_device(model)
        with torch.no_grad():
            zero = self.prefix(torch.zeros(1, *shape, dtype=dtype, device=device))
            self.pre_shape = tuple(zero.shape[1:])
            width = zero[0].numel()
            if self.dim * width * 8 > _MAX_COLUMN_BYTES:
                return
            columns = _linear_columns(self.prefix, shape) if self.pixels * width * 8 <= _MAX_COLUMN_BYTES \
                else None
            if columns is not None and units is not None:  # a unit's column: the sum of its pixels'
                columns = columns.new_zeros(self.dim, width).index_add_(0, units.to(device), columns)
            if columns is None:
                cols, step = [], max(1, _BATCH_BYTES // (width * 8))
                for lo in range(0, self.dim, step):
                    n = min(step, self.dim - lo)
                    eye = torch.zeros(n, self.dim, dtype=dtype, device=device)
                    eye[torch.arange(n), torch.arange(lo, lo + n)] = 1
                    cols.append(self.prefix(self.image(eye)).flatten(1) - zero.flatten(1))
                columns = torch.cat(cols)
            self.columns = columns
        # self.columns (U, P): prefix(x + d e_u) = prefix(x) + d * columns[u]
        self.width = width
        self.incremental = True
        rest = _leaves(self.rest) if isinstance(self.rest, nn.Sequential) else [self.rest]
        last = rest[-1] if rest and isinstance(rest[-1], nn.Linear) else None
        body = rest[:-1] if last is not None else rest
        self.cheap = all(isinstance(m, (nn.ReLU, nn.Identity, nn.Flatten)) for m in body)
        if kind == "logit" and last is not None:
            # only the target's row of the last layer is needed: one dot product per candidate
            self.head = (body, last.weight, last.bias)

    def image(self, x: torch.Tensor) -> torch.Tensor:
        """Rows of unit values ``(n, U)`` as the model's images ``(n, C, H, W)``."""
        if self.units is not None:
            x = x.index_select(1, self.units.to(x.device))
        return x.reshape(-1, *self.shape)

    @property
    def row_bytes(self) -> int:
        """Memory of one candidate in a batch: a first-layer output, or a whole image."""
        return (self.width if self.incremental else self.pixels) * 8

    @torch.no_grad()
    def state(self, x: torch.Tensor) -> torch.Tensor | None:
        return self.prefix(self.image(x)).flatten(1) if self.incremental else None

    @torch.no_grad()
    def score(self, x: torch.Tensor, pre: torch.Tensor | None, targets: torch.Tensor) -> torch.Tensor:
        if pre is not None:
            return _pick(self.rest(pre.view(-1, *self.pre_shape)), targets, self.kind)
        return _pick(self.model(self.image(x)), targets, self.kind)

    @torch.no_grad()
    def window(self, x: torch.Tensor, pre: torch.Tensor | None, targets: torch.Tensor,
               pixels: torch.Tensor, values: torch.Tensor, ahead: torch.Tensor,
               predicted: torch.Tensor, delta: torch.Tensor, todo: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Best score and level ``(n, K)`` of setting pixel ``pixels[n, k]`` to one of
        ``values[n, k, :]``, on top of the image that the predicted changes before ``k`` make.

        A predicted change at ``k`` sets the pixel from ``ahead[n, k]`` (its value after the
        earlier changes) to ``predicted[n, k]``, a difference of ``delta[n, k]`` (``0``: no
        change predicted). Candidates outside ``todo`` (no change, or outside the window)
        are not evaluated: a position without any scores ``-inf``.
        """
        n, k, n_levels = values.shape
        slots = int(todo.sum(2).max())
        if slots == 0:
            return (torch.full((n, k), float("-inf"), dtype=x.dtype, device=x.device),
                    torch.zeros(n, k, dtype=torch.long, device=x.device))
        if slots < n_levels:  # pack the levels to evaluate first: usually all but the current one
            order = torch.argsort((~todo).to(torch.int8), dim=2, stable=True)[..., :slots]
            level_values = values.gather(2, order)
            ok = todo.gather(2, order)
        else:
            order, level_values, ok = None, values, todo
        if self.incremental:
            cols = self.columns.index_select(0, pixels.flatten()).view(n, k, self.width)
            state = self._prefix_states(pre, cols, delta)
            coef = level_values - ahead[..., None]
            scores = [self._head_scores(torch.addcmul(state, cols, coef[..., i, None]), targets)
                      for i in range(slots)]
        else:
            base = self._prefix_images(x, pixels, predicted, delta != 0)
            scores = [self._image_scores(base, pixels, level_values[..., i], targets)
                      for i in range(slots)]
        if slots == 1:
            best = scores[0].masked_fill_(~ok[..., 0], float("-inf"))
            slot = torch.zeros(n, k, dtype=torch.long, device=x.device)
        else:  # the first best level, as argmax over all levels in the reference
            best, slot = torch.stack(scores, 2).masked_fill_(~ok, float("-inf")).max(2)
        level = slot if order is None else order.gather(2, slot[..., None]).squeeze(2)
        return best, level

    @staticmethod
    def _prefix_states(pre: torch.Tensor, cols: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """``(n, K, P)``: the first layer's output before each window position, from running
        sums over the predicted changes only (usually few), not over every position."""
        n, k, width = cols.shape
        change = delta != 0
        most = int(change.sum(1).max())
        if most == 0:
            return pre[:, None, :].expand(n, k, width)
        where = torch.argsort((~change).to(torch.int8), dim=1, stable=True)[:, :most]
        rows = (torch.arange(n, device=pre.device)[:, None] * k + where).flatten()
        sums = torch.empty(n, most + 1, width, dtype=pre.dtype, device=pre.device)
        sums[:, 0] = pre
        torch.mul(cols.view(n * k, width).index_select(0, rows).view(n, most, width),
                  delta.gather(1, where)[..., None], out=sums[:, 1:])
        sums = sums.cumsum_(1)
        before = change.cumsum(1) - change.long()  # predicted changes before each position
        rows = (torch.arange(n, device=pre.device)[:, None] * (most + 1) + before).flatten()
        return sums.view(-1, width).index_select(0, rows).view(n, k, width)

    def _head_scores(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        n, k = h.shape[:2]
        if self.head is None:
            flat = h.view(-1, *self.pre_shape)
            return _pick(self.rest(flat), targets.repeat_interleave(k), self.kind).view(n, k)
        body, weight, bias = self.head
        h = h.view(-1, *self.pre_shape)
        for m in body:  # h is a private temporary: ReLU may work in place
            h = h.relu_() if type(m) is nn.ReLU else m(h)
        w = weight.index_select(0, targets)[:, None, :]  # (n, 1, F)
        out = torch.bmm(w, h.reshape(n, k, -1).transpose(1, 2)).squeeze(1)  # gemv per chain
        return out if bias is None else out.add_(bias.index_select(0, targets)[:, None])

    def _prefix_images(self, x: torch.Tensor, pixels: torch.Tensor, predicted: torch.Tensor,
                       changes: torch.Tensor) -> torch.Tensor:
        """``(n, K, D)``: ``x`` with the predicted changes before each position assigned
        (not summed, so the pixel values are exact)."""
        n, k = pixels.shape
        pos = torch.arange(k, device=x.device)
        last = torch.full((n, k + 1, self.dim), -1, dtype=torch.long, device=x.device)
        last[:, 1:].scatter_(2, pixels[..., None], torch.where(changes, pos, -1)[..., None])
        last = last.cummax(1).values[:, :-1]  # latest i < j changing each pixel (-1: none)
        new = predicted.gather(1, last.clamp(min=0).flatten(1)).view(n, k, self.dim)
        return torch.where(last >= 0, new, x[:, None, :])

    def _image_scores(self, base: torch.Tensor, pixels: torch.Tensor, values: torch.Tensor,
                      targets: torch.Tensor) -> torch.Tensor:
        n, k = pixels.shape
        flat = base.scatter(2, pixels[..., None], values[..., None]).view(-1, self.dim)
        t = targets.repeat_interleave(k)
        step = max(1, _BATCH_BYTES // (self.pixels * 8))
        return torch.cat([_pick(self.model(self.image(flat[i : i + step])), t[i : i + step],
                                self.kind) for i in range(0, len(flat), step)]).view(n, k)

    @torch.no_grad()
    def commit(self, x: torch.Tensor, pre: torch.Tensor | None, chains: torch.Tensor,
               pixels: torch.Tensor, values: torch.Tensor, delta: torch.Tensor,
               last: torch.Tensor | None) -> None:
        """Applies accepted changes in order; ``last`` marks each pixel's final write
        (``None``: every change is one)."""
        if pre is not None:
            # (index_put_ accumulates serially; index_add_ stalls when a core is busy)
            pre.index_put_((chains,), self.columns.index_select(0, pixels) * delta[:, None], accumulate=True)
        if last is None:
            x[chains, pixels] = values
        else:
            x[chains[last], pixels[last]] = values[last]


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


@dataclass
class _Chains:
    """The chains still in a pass, copied out of the batch once (and again only when some
    finish): ``ids`` (m,) into the batch; ``images`` (m, D); ``scores`` (m,); ``targets``
    (m,); ``first_layer`` (m, P) or None; ``ptr`` (m,) the next proposal of each chain;
    ``window`` (m,) how many proposals it scores a round; ``predicted`` (m, L + 1) the
    predicted level of each proposal (-1: reject; column L absorbs masked writes);
    ``changed`` (m,); and for mc the chains' own proposals ``pixels`` (m, L) and ``values``
    (m, L, V)."""

    ids: torch.Tensor
    images: torch.Tensor
    scores: torch.Tensor
    targets: torch.Tensor
    first_layer: torch.Tensor | None
    ptr: torch.Tensor
    window: torch.Tensor
    predicted: torch.Tensor
    changed: torch.Tensor
    pixels: torch.Tensor | None
    values: torch.Tensor | None

    def keep(self, rows: torch.Tensor) -> _Chains:
        return _Chains(*(None if t is None else t[rows] for t in (
            self.ids, self.images, self.scores, self.targets, self.first_layer, self.ptr, self.window,
            self.predicted, self.changed, self.pixels, self.values)))


def _run_pass(scorer: _Scorer, x: torch.Tensor, pre: torch.Tensor | None, s: torch.Tensor,
              targets: torch.Tensor, pixels: torch.Tensor, values: torch.Tensor,
              active: torch.Tensor, events: _Events, offset: int, max_window: int) -> torch.Tensor:
    """One pass over each active chain's proposal sequence; returns which chains changed.

    ``x`` (N, D) images, ``pre`` (N, P) their first-layer outputs or None, ``s`` (N,) their
    scores, ``pixels`` (N, L) and ``values`` (N, L, V) each chain's proposals in order.

    Each round scores a window of proposals per chain, each on top of the image that the
    *predicted* decisions before it make (a decision predicted in an earlier round, or
    "reject" for a proposal not scored yet). Up to the first proposal whose decision
    differs from its prediction, every prediction was right, so those decisions are
    exactly the sequential ones and are all applied at once, the first wrong one with its
    true decision; the decisions after it become the next round's predictions.
    """
    n_all, length = pixels.shape
    dev = x.device
    sweep = bool((pixels == torch.arange(length, device=dev)).all()) and \
        bool((values == values[:1, :1]).all())
    changed_all = torch.zeros(n_all, dtype=torch.bool, device=dev)
    ids = active.nonzero().squeeze(1)
    if len(ids) == 0:
        return changed_all
    m = len(ids)
    ch = _Chains(ids, x[ids], s[ids], targets[ids], None if pre is None else pre[ids],
                 ptr=torch.zeros(m, dtype=torch.long, device=dev),
                 window=torch.full((m,), min(_MIN_WINDOW, max_window), dtype=torch.long, device=dev),
                 predicted=torch.full((m, length + 1), -1, dtype=torch.long, device=dev),
                 changed=torch.zeros(m, dtype=torch.bool, device=dev),
                 pixels=None if sweep else pixels[ids], values=None if sweep else values[ids])
    levels = values[0, 0]
    per_row = scorer.row_bytes
    span_all = torch.arange(max(max_window, 1), device=dev)
    neg = torch.full((1, 1), -1, dtype=torch.long, device=dev)

    def store() -> None:
        x[ch.ids], s[ch.ids] = ch.images, ch.scores
        if pre is not None:
            pre[ch.ids] = ch.first_layer
        changed_all[ch.ids] |= ch.changed

    while True:
        live = ch.ptr < length
        if not bool(live.all()):  # some chains finished the pass: store them, drop them
            store()
            rows = live.nonzero().squeeze(1)
            if len(rows) == 0:
                return changed_all
            ch = ch.keep(rows)
        m = len(ch.ids)
        cap = max(1, min(max_window, _BATCH_BYTES // (per_row * m)))
        k = min(cap, int((ch.window.sum() + m - 1) // m))  # the mean window: few wasted rows
        span = span_all[:k]  # (k,) positions in the window
        at = ch.ptr[:, None] + span  # (m, k) proposal index of each window position
        valid = (at < length) & (span < ch.window[:, None])
        slot = torch.where(valid, at, length)
        guess = ch.predicted.gather(1, slot)  # (m, k) predicted level, -1 outside the window too
        if sweep:  # greedy: proposal g is pixel g with the same levels everywhere
            pix = at.clamp(max=length - 1)  # (m, k)
            vals = levels.expand(m, k, len(levels))  # (m, k, V)
            guessed_value = levels[guess.clamp(min=0)]  # (m, k)
            ahead = ch.images.gather(1, pix)  # distinct pixels: nothing before k touches pixel k
        else:
            at_c = at.clamp(max=length - 1)
            pix = ch.pixels.gather(1, at_c)
            vals = ch.values.gather(1, at_c[..., None].expand(-1, -1, ch.values.shape[2]))
            guessed_value = vals.gather(2, guess.clamp(min=0)[..., None]).squeeze(2)
            same = (pix[:, :, None] == pix[:, None, :]) & (guess >= 0)[:, None, :] & \
                (span[None, :, None] > span[None, None, :])
            prev = torch.where(same, span, -1).amax(2)
            ahead = torch.where(prev >= 0, guessed_value.gather(1, prev.clamp(min=0)),
                                ch.images.gather(1, pix))
        # ahead (m, k): the pixel's value once the predicted changes before it are made
        delta = torch.where(guess >= 0, guessed_value - ahead, 0)
        guess = guess.masked_fill_(delta == 0, -1)  # a "change" to the current value is none
        todo = (vals != ahead[..., None]) & valid[..., None]
        best, level = scorer.window(ch.images, ch.first_layer, ch.targets, pix, vals, ahead,
                                    guessed_value, delta, todo)
        # the threshold at k: the score after the last predicted change before k (which,
        # up to the first wrong prediction, is the decision taken there: its best score)
        upto = torch.where(guess >= 0, span, -1).cummax(1).values
        before = torch.cat([neg.expand(m, 1), upto[:, :-1]], 1)
        base = torch.where(before >= 0, best.gather(1, before.clamp(min=0)), ch.scores[:, None])
        decision = level.masked_fill_(best <= base + _tol(base), -1)
        wrong = valid & (decision != guess)
        any_wrong = wrong.any(1)
        done = torch.where(any_wrong, wrong.to(torch.int8).argmax(1) + 1, valid.sum(1))
        settled = span < done[:, None]
        accept = settled & (decision >= 0)
        # later decisions were made on a wrong prefix: they are the next round's predictions
        ch.predicted.scatter_(1, slot.masked_fill_(settled, length), decision)
        ch.ptr += done
        ch.window = torch.where(any_wrong, torch.maximum(3 * done, ch.window // 2).clamp_(min=_MIN_WINDOW),
                                2 * ch.window).clamp_(max=max_window)
        if not bool(accept.any()):
            continue
        c, j = accept.nonzero(as_tuple=True)
        p, v = pix[c, j], vals[c, j, decision[c, j]]
        final = None
        if not sweep:  # a pixel changed twice in one window: its last value stands
            later = (pix[:, :, None] == pix[:, None, :]) & accept[:, None, :] & \
                (span[None, None, :] > span[None, :, None])
            final = ~later.any(2)[c, j]
        scorer.commit(ch.images, ch.first_layer, c, p, v, v - ahead[c, j], final)
        last = torch.where(accept, span, -1).amax(1, keepdim=True)
        hit = last[:, 0] >= 0
        ch.scores = torch.where(hit, best.gather(1, last.clamp(min=0))[:, 0], ch.scores)
        ch.changed |= hit
        events.add(offset + at[c, j] + 1, ch.ids[c], p, v)


def _initial(init: str | torch.Tensor, n: int, shape: tuple[int, ...], dtype: torch.dtype,
             device: torch.device, generator: torch.Generator,
             units: torch.Tensor | None = None) -> torch.Tensor:
    """Starting rows of unit values ``(n, U)``; a given image is averaged over each unit."""
    pixels = int(torch.tensor(shape).prod())
    dim = pixels if units is None else int(units.max()) + 1
    if isinstance(init, torch.Tensor):
        img = init.to(device=device, dtype=dtype).reshape(-1, pixels)
        if img.shape[0] not in (1, n):
            raise ValueError(f"init holds {img.shape[0]} images; give 1 or {n}")
        if units is not None:
            u = units.to(device)
            counts = torch.bincount(u, minlength=dim).to(dtype)
            img = img.new_zeros(img.shape[0], dim).index_add_(1, u, img) / counts
        return img.expand(n, dim).clone()
    if init == "blank":
        return torch.zeros(n, dim, dtype=dtype, device=device)
    if init == "random":
        return torch.rand(n, dim, generator=generator, dtype=dtype).to(device)
    raise ValueError(f"unknown init '{init}'; use blank, random or an image tensor")


def auto_patch(shape: Sequence[int]) -> int:
    """The patch side a search uses by default: single pixels up to 64 px, above that about
    1 px per 28 px of side (8x8 px patches at 224, a 28x28 grid as for digits)."""
    side = min(shape[-2:])
    return 1 if max(shape[-2:]) <= 64 else max(1, round(side / 28))


def search_units(shape: Sequence[int], patch: int | torch.Tensor | None = None) -> torch.Tensor | None:
    """``(C*H*W,)``: the search unit of each pixel, one per channel and patch; ``patch`` is a
    side in px (square patches, the last row and column of patches may be smaller), an
    ``(H, W)`` map of segment labels (e.g. superpixels), or ``None`` for :func:`auto_patch`.
    ``None`` is returned where units are single pixels."""
    c, h, w = (int(v) for v in shape)
    if patch is None:
        patch = auto_patch(shape)
    if isinstance(patch, torch.Tensor):
        if tuple(patch.shape) != (h, w):
            raise ProbeInputError(f"patch labels are {tuple(patch.shape)}; the images are {h}x{w}")
        labels = torch.unique(patch.long(), return_inverse=True)[1]
    else:
        if int(patch) < 1:
            raise ProbeInputError(f"patch must be a side of at least 1 px, got {patch}")
        if int(patch) == 1:
            return None
        labels = grid_segments((h, w), int(patch))
    k = int(labels.max()) + 1
    return (torch.arange(c)[:, None] * k + labels.flatten()[None, :]).flatten()


@dataclass(frozen=True)
class SearchCost:
    """What a search will cost, said before it starts: ``units`` it sets, the fewest and
    most trials (forward passes of one image) and the seconds they take at ``per_forward``
    each (one image of a timed batch of 2, in the search's float64). Where the first-layer
    shortcut applies, most trials cost less: the time is an upper bound there."""

    units: int
    patch: int | None
    trials: tuple[int, int]
    per_forward: float
    incremental: bool
    shape: tuple[int, ...]

    def line(self) -> str:
        lo, hi = self.trials
        c = self.shape[0]
        channels = f"{c} channel{'s' * (c != 1)}"
        if self.patch == 1:
            what = f"{self.units:,} pixel values"
        elif self.patch is None:
            what = f"{self.units:,} units ({channels} x {self.units // c:,} segments)"
        else:
            side = f"{self.patch}x{self.patch} px"
            what = f"{self.units:,} units ({channels} x {self.units // c:,} patches of {side})"
        span = f"{lo:,}" if lo == hi else f"{lo:,}-{hi:,}"
        secs = _seconds(lo * self.per_forward)
        if lo != hi:
            secs += f"-{_seconds(hi * self.per_forward)}"
        shortcut = " (less: the first-layer shortcut makes most trials cheaper)" if self.incremental else ""
        return (f"search cost: {what}, {span} forward passes at {self.per_forward * 1e3:.3g} ms each, "
                f"about {secs}{shortcut}")


def _seconds(t: float) -> str:
    if t < 120:
        return f"{t:.2g} s" if t < 10 else f"{t:.0f} s"
    return f"{t / 60:.0f} min" if t < 7200 else f"{t / 3600:.1f} h"


def estimate_search(model: nn.Module, target: Target = "all", *, method: str = "greedy",
                    levels: Sequence[float] = (0.0, 1.0), restarts: int = 1, max_sweeps: int = 10,
                    steps: int = 10_000, patch: int | torch.Tensor | None = None,
                    input_shape: tuple[int, ...] | None = None, incremental: bool = True,
                    dtype: torch.dtype = torch.float64) -> SearchCost:
    """The cost of :func:`search_prototypes` with these arguments, from one timed forward
    pass of a batch of 2: greedy makes ``units x (levels - 1)`` trials per target, restart
    and sweep (2 sweeps at least, ``max_sweeps`` at most), mc ``steps``, block (steepest
    ascent) ``units x (levels - 1)`` per change (1 to ``steps`` changes)."""
    shape = tuple(input_shape or input_shape_of(model))
    units = search_units(shape, patch)
    dim = int(torch.tensor(shape).prod()) if units is None else int(units.max()) + 1
    net = eval_copy(model, dtype)
    device = model_device(net)
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0), dtype=dtype).to(device)
    times: list[float] = []
    with torch.inference_mode():
        num_classes = net(x[:1]).shape[1]
        while len(times) < 3 and sum(times) < 0.05 or not times:  # small models: best of 3
            t0 = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t0)
        split = _affine_prefix(net) if incremental else None
        if split is not None:  # the shortcut is taken where its columns fit in memory
            width = split[0](x[:1]).numel()
            split = split if dim * width * 8 <= _MAX_COLUMN_BYTES else None
    per_forward = min(times) / 2
    chains = len(as_classes(target, num_classes)) * restarts
    per_pass = dim * max(1, len(levels) - 1) * chains
    trials = {"greedy": (min(2, max_sweeps) * per_pass, max_sweeps * per_pass),
              "mc": (steps * chains, steps * chains),
              "block": (per_pass, steps * per_pass)}[method]
    side = None if isinstance(patch, torch.Tensor) else (patch or auto_patch(shape))
    return SearchCost(dim, side, trials, per_forward, split is not None, shape)


def _proposals(method: str, n: int, dim: int, levels: torch.Tensor, steps: int,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    if method == "greedy":
        pixels = torch.arange(dim).expand(n, dim)
        values = levels.expand(n, dim, len(levels))
    else:  # mc: a random pixel set to a random level, as in the post
        pixels = torch.randint(0, dim, (n, steps), generator=generator)
        values = levels[torch.randint(0, len(levels), (n, steps), generator=generator)][..., None]
    return pixels, values


@renamed(targets="target")
def search_prototypes(model: nn.Module, target: Target = "all", *,
                      method: str = "greedy", levels: Sequence[float] = (0.0, 1.0),
                      init: str | torch.Tensor = "blank", restarts: int = 1,
                      max_sweeps: int = 10, steps: int = 10_000, score: ScoreKind = "logit",
                      patch: int | torch.Tensor | None = None,
                      input_shape: tuple[int, ...] | None = None, incremental: bool = True,
                      max_window: int | None = None, frames: int = 40, seed: int = 0,
                      dtype: torch.dtype = torch.float64) -> PrototypeResult:
    """Prototypes of each class in ``target`` (a class, a list, or ``"all"``) by discrete
    search over pixel values (forward passes only).

    ``method``: ``greedy`` sweeps the units in order, trying each of ``levels`` and keeping
    the best if it raises the score, until a sweep changes nothing (or ``max_sweeps``);
    ``mc`` makes ``steps`` random single-unit mutations, keeping those that help; ``block``
    is steepest ascent (see the module notes). A unit is one channel of one pixel (RGB
    pixels are searched channel by channel) or, with ``patch``, of a square patch of
    ``patch`` px or a segment of an ``(H, W)`` label map; the default is pixels up to
    64 px and about 1 px per 28 px of side above that (:func:`auto_patch`: 8x8 patches at
    224). :func:`estimate_search` says what a search will cost.
    ``score`` is the target's logit (default), probability or log-probability. Restarts
    differ only with ``init="random"`` or ``mc``; the best restart per target is returned.
    ``max_window`` bounds how many proposals per chain one batch scores (default: 64 when
    a candidate costs about one first-layer column, else 16); it changes the speed, never
    the result.
    """
    if method not in ("greedy", "mc", "block"):
        raise ValueError(f"unknown search method '{method}'; use greedy, mc or block")
    device = model_device(model)
    shape = tuple(input_shape or input_shape_of(model))
    units = search_units(shape, patch)
    net = eval_copy(model, dtype)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        num_classes = net(torch.zeros(1, *shape, dtype=dtype, device=device)).shape[1]
    t = as_classes(target, num_classes).repeat_interleave(restarts).to(device)
    lv = torch.as_tensor(list(levels), dtype=dtype)
    x0 = _initial(init, len(t), shape, dtype, device, gen, units)
    n, dim = x0.shape
    scorer = _Scorer(net, shape, score, incremental, None if units is None else units.to(device))
    if max_window is None:  # speculate further where a candidate costs little
        max_window = 64 if scorer.cheap else 16
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
    side = None if isinstance(patch, torch.Tensor) else (patch or auto_patch(shape))
    return _finish(scorer, x, x0, s, t, restarts, events, total, frames, method,
                   {"score": score, "levels": list(levels), "init": init if isinstance(init, str)
                    else "given", "restarts": restarts, "incremental": scorer.incremental,
                    "patch": side, "units": dim,
                    "sweeps": None if sweeps is None else sweeps.view(-1, restarts).max(1).values.tolist(),
                    "changes": [int(c) for c in _count_changes(events, n)]})


def _count_changes(events: _Events, n: int) -> torch.Tensor:
    return torch.from_numpy(np.bincount(events.table()[:, 1].astype(np.int64), minlength=n))


def _steepest_ascent(scorer: _Scorer, x: torch.Tensor, pre: torch.Tensor | None, s: torch.Tensor,
                     t: torch.Tensor, levels: torch.Tensor, max_steps: int, events: _Events) -> int:
    """Each step scores every unit at every level (by :meth:`_Scorer.window`, with no
    predicted changes, in chunks of units) and applies each chain's single best change."""
    n, dim = x.shape
    active = torch.ones(n, dtype=torch.bool, device=x.device)
    step = 0
    while active.any() and step < max_steps:
        idx = active.nonzero().squeeze(1)
        m = len(idx)
        xs, ps, ts = x[idx], None if pre is None else pre[idx], t[idx]
        chunk = max(1, _BATCH_BYTES // (scorer.row_bytes * m))
        bests, levels_at = [], []
        for lo in range(0, dim, chunk):
            units = torch.arange(lo, min(dim, lo + chunk), device=x.device).expand(m, -1)  # (m, k)
            vals = levels.expand(m, units.shape[1], len(levels))  # (m, k, V)
            ahead = xs.gather(1, units)  # (m, k) the units' current values
            none = torch.zeros_like(ahead)
            best, level = scorer.window(xs, ps, ts, units, vals, ahead, ahead, none,
                                        vals != ahead[..., None])
            bests.append(best)
            levels_at.append(level)
        best, where = torch.cat(bests, 1).max(1)  # the first best unit, its first best level
        better = best > s[idx] + _tol(s[idx])
        active[idx[~better]] = False
        if better.any():
            c, u = idx[better], where[better]
            v = levels[torch.cat(levels_at, 1)[better.nonzero().squeeze(1), u]]
            scorer.commit(x, pre, c, u, v, v - x[c, u], None)
            s[c] = best[better]
            step += 1
            events.add(torch.full_like(c, step), c, u, v)
    return step


def _finish(scorer: _Scorer, x: torch.Tensor, x0: torch.Tensor, s: torch.Tensor, t: torch.Tensor,
            restarts: int, events: _Events, total: int, n_frames: int, method: str,
            metrics: dict) -> PrototypeResult:
    per = s.view(-1, restarts)
    best = per.argmax(1) + torch.arange(per.shape[0], device=s.device) * restarts
    at = sorted({round(i * total / max(1, n_frames - 1)) for i in range(n_frames)}) if total else [0]
    frames = events.frames(x0, at)[:, best.cpu()] if n_frames else None  # (F, T, U)
    shape = scorer.shape
    return PrototypeResult(
        images=scorer.image(x[best]).float().clamp(0, 1).cpu(),
        target=t[best].cpu(),
        scores=s[best].float().cpu(),
        method=method,
        frames=None if frames is None else
        scorer.image(frames.flatten(0, 1).to(x)).float().view(len(at), -1, *shape).cpu(),
        metrics={**metrics, "restart_scores": per.float().cpu().tolist(), "frame_steps": at},
    )


@torch.no_grad()
def reference_search(model: nn.Module, targets: Sequence[int], *, method: str = "greedy",
                     levels: Sequence[float] = (0.0, 1.0), init: str | torch.Tensor = "blank",
                     restarts: int = 1, max_sweeps: int = 10, steps: int = 10_000,
                     score: ScoreKind = "logit", patch: int | torch.Tensor | None = None,
                     input_shape: tuple[int, ...] | None = None,
                     seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The post's algorithm as written: one class at a time, one forward pass per trial.

    Kept to verify :func:`search_prototypes` (same images) and to measure its speed-up.
    Returns every chain's final image, ``(len(targets) * restarts, C, H, W)``.
    """
    if method not in ("greedy", "mc"):
        raise ValueError(f"the sequential reference covers greedy and mc, not '{method}'")
    device = model_device(model)
    shape = tuple(input_shape or input_shape_of(model))
    units = search_units(shape, patch)
    net = eval_copy(model, dtype)
    gen = torch.Generator().manual_seed(seed)
    num_classes = net(torch.zeros(1, *shape, dtype=dtype, device=device)).shape[1]
    t = as_classes(list(targets), num_classes).repeat_interleave(restarts)
    lv = torch.as_tensor(list(levels), dtype=dtype)
    x0 = _initial(init, len(t), shape, dtype, device, gen, units)
    n, dim = x0.shape
    pixels, values = _proposals("mc" if method == "mc" else "greedy", n, dim, lv, steps, gen)

    def image(x: torch.Tensor) -> torch.Tensor:  # one image's unit values as the model's input
        return (x if units is None else x[units.to(device)]).view(1, *shape)

    out = []
    for c in range(n):
        x = x0[c].clone()
        target = t[c : c + 1].to(device)
        s = _pick(net(image(x)), target, score)[0]
        for _ in range(max_sweeps if method == "greedy" else 1):
            changed = False
            for g in range(pixels.shape[1]):
                p = int(pixels[c, g])
                trials = []
                for v in values[c, g]:
                    trial = x.clone()
                    trial[p] = v
                    trials.append(_pick(net(image(trial)), target, score)[0])
                scores = torch.stack(trials)
                best = int(scores.argmax())
                if scores[best] > s + _tol(s):
                    x[p], s, changed = values[c, g, best], scores[best], True
            if not changed:
                break
        out.append(image(x)[0])
    return torch.stack(out).float()
