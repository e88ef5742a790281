"""Shapes: a generated RGB dataset where the answer to "where does the model look?" is known.

Each 64 x 64 picture holds one large shape (circle, square, triangle, cross, ring or diamond,
16 to 26 pixels across, slightly rotated, in a saturated colour) that decides the class, on a
textured background (two muted colours mixed by stripes and smooth noise), with small
distractors elsewhere (strokes and spots in the same kind of colours, never overlapping the
shape's box) that do not decide it. The shape's box and pixel mask are returned, so a pointing
game can score an explanation, as :mod:`kangae.data.cluttered` does for MNIST digits.

Generation is vectorized numpy over chunks of pictures (no per-pixel Python), deterministic
from the seed (every parameter is drawn before drawing), and needs no files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .dataset import ImageSet
from .registry import SHAPE_CLASSES

NAME = "shapes"
SIZE = 64
TRAIN_N, TEST_N = 10_000, 1_000
DISTRACTORS = 3
_CHUNK = 256


@dataclass(frozen=True)
class ShapesSet:
    """``data`` holds the pictures (uint8, (N, 3, H, W)); ``boxes`` each deciding shape's box
    (left, top, right, bottom), right and bottom exclusive, in pixels; ``masks`` its pixels
    (bool, (N, H, W))."""

    data: ImageSet
    boxes: torch.Tensor
    masks: torch.Tensor


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorized HSV -> RGB for arrays of the same shape; returns (..., 3) in [0, 1]."""
    i = np.floor(h * 6).astype(np.int64) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack([np.stack(c, -1) for c in
                      ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return np.take_along_axis(table, i[None, ..., None].repeat(3, -1), 0)[0]


def _shape_masks(kind: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Masks of each picture's shape ``kind`` (N,) from its local coordinates ``u``, ``v``
    ((N, H, W), 1 at the shape's radius; every shape lies within it, whatever its rotation).
    All shapes are drawn, then each picture keeps its own."""
    r2 = u * u + v * v
    au, av = np.abs(u), np.abs(v)
    masks = np.stack([
        r2 <= 1.0,                                                   # circle
        np.maximum(au, av) <= 0.7,                                   # square
        (v <= 0.5) & (np.sqrt(3.0) * au - v <= 1.0),                 # triangle, point up
        ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95)), # cross
        (r2 <= 1.0) & (r2 >= 0.5**2),                                # ring
        au + av <= 1.0,                                              # diamond
    ])
    return np.take_along_axis(masks, kind[None, :, None, None], 0)[0]


def _draw_params(n: int, size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Every random choice for ``n`` pictures, drawn in a fixed order."""
    labels = np.arange(n) % len(SHAPE_CLASSES)
    rng.shuffle(labels)
    radius = rng.uniform(8.0, 13.0, n)
    margin = np.ceil(radius) + 1
    p = {
        "labels": labels,
        "radius": radius,
        "cx": rng.uniform(margin, size - margin),
        "cy": rng.uniform(margin, size - margin),
        "angle": rng.uniform(-np.pi / 12, np.pi / 12, n),
        "colour": _hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(0.7, 1.0, n), rng.uniform(0.75, 1.0, n)),
        # background: two muted colours mixed by stripes and by smooth noise
        "bg": _hsv_to_rgb(rng.uniform(0, 1, (n, 2)), rng.uniform(0.0, 0.45, (n, 2)),
                          rng.uniform(0.15, 0.65, (n, 2))),
        "freq": rng.uniform(0.05, 0.25, n),
        "phi": rng.uniform(0, np.pi, n),
        "phase": rng.uniform(0, 2 * np.pi, n),
        "noise": rng.uniform(0, 1, (n, 5, 5)),
        "grain": rng.uniform(0, 1000, n),
        # distractors: K candidate places each; the first away from the shape's box is used
        "d_kind": rng.integers(0, 2, (n, DISTRACTORS)),  # 0 stroke, 1 spot
        "d_x": rng.uniform(3, size - 3, (n, DISTRACTORS, 8)),
        "d_y": rng.uniform(3, size - 3, (n, DISTRACTORS, 8)),
        "d_len": rng.uniform(3.5, 6.5, (n, DISTRACTORS)),
        "d_width": rng.uniform(0.8, 1.6, (n, DISTRACTORS)),
        "d_angle": rng.uniform(0, np.pi, (n, DISTRACTORS)),
        "d_spot": rng.uniform(1.5, 3.0, (n, DISTRACTORS)),
        "d_colour": _hsv_to_rgb(rng.uniform(0, 1, (n, DISTRACTORS)), rng.uniform(0.7, 1.0, (n, DISTRACTORS)),
                                rng.uniform(0.75, 1.0, (n, DISTRACTORS))),
    }
    return p


def _col(a: np.ndarray) -> np.ndarray:
    """Per-picture values (N,) as (N, 1, 1) float32, to broadcast over rows and columns."""
    return a.astype(np.float32)[:, None, None]


@lru_cache(maxsize=4)
def _spread(size: int, knots: int) -> np.ndarray:
    """(size, knots) Gaussian interpolation weights, rows summing to 1: ``A @ noise @ A.T``
    spreads a knots x knots grid into a smooth size x size field."""
    at = np.linspace(0, knots - 1, size)[:, None] - np.arange(knots)[None, :]
    w = np.exp(-0.5 * (at / 0.6) ** 2)
    return (w / w.sum(1, keepdims=True)).astype(np.float32)


def _background(p: dict[str, np.ndarray], sl: slice, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Two muted colours mixed by stripes and smooth noise, plus fine grain: (N, H, W, 3)."""
    size = ys.shape[1]
    freq, phi, phase = _col(p["freq"][sl]), _col(p["phi"][sl]), _col(p["phase"][sl])
    k = np.float32(2 * np.pi) * freq
    stripes = 0.5 + 0.5 * np.sin((k * np.cos(phi)) * xs + ((k * np.sin(phi)) * ys + phase))
    spread = _spread(size, p["noise"].shape[-1])
    smooth = spread @ p["noise"][sl].astype(np.float32) @ spread.T  # (N, H, W), values in [0, 1]
    mix = (0.6 * stripes + 0.4 * smooth)
    # fine grain: a hash of the pixel position and the picture's own offset, in [-0.05, 0.05]
    h = np.sin(xs * np.float32(12.9898) + (ys * np.float32(78.233) + _col(p["grain"][sl])))
    h *= np.float32(43758.5453)
    grain = (h - np.floor(h) - 0.5) * np.float32(0.1)
    bg = p["bg"][sl].astype(np.float32)
    lo, hi = bg[:, None, None, 0], bg[:, None, None, 1]
    return lo + (hi - lo) * mix[..., None] + grain[..., None]


def _place_distractors(p: dict[str, np.ndarray],
                      boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The chosen place of each distractor and whether it is drawn (some place among the
    candidates clears the shape's box by its reach)."""
    reach = np.where(p["d_kind"] == 0, p["d_len"] + p["d_width"], p["d_spot"]) + 1.0
    x, y = p["d_x"], p["d_y"]
    left, top, right, bottom = (boxes[:, i, None, None] for i in range(4))
    r = reach[..., None]
    clear = (x + r < left) | (x - r > right) | (y + r < top) | (y - r > bottom)
    pick = clear.argmax(-1)
    visible = clear.any(-1)
    take = lambda a: np.take_along_axis(a, pick[..., None], -1)[..., 0]  # noqa: E731
    return take(x), take(y), visible


def _render(p: dict[str, np.ndarray], sl: slice, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pictures (N, 3, H, W) uint8 and the deciding shapes' masks (N, H, W) of chunk ``sl``.
    Coordinates broadcast as rows (1, H, 1) and columns (1, 1, W), so each field costs one
    (N, H, W) operation; the layers (background, distractors, shape) are then one gather."""
    ys = np.arange(size, dtype=np.float32)[None, :, None] + 0.5
    xs = np.arange(size, dtype=np.float32)[None, None, :] + 0.5
    n = sl.stop - sl.start
    dx, dy = xs - _col(p["cx"][sl]), ys - _col(p["cy"][sl])
    c, s, r = _col(np.cos(p["angle"][sl])), _col(np.sin(p["angle"][sl])), _col(p["radius"][sl])
    mask = _shape_masks(p["labels"][sl], (c / r) * dx + (s / r) * dy, (c / r) * dy - (s / r) * dx)
    layer = np.zeros((n, size, size), np.int8)  # 0 background, 1..K distractors, K+1 the shape
    for k in range(DISTRACTORS):
        ex, ey = xs - _col(p["d_xc"][sl, k]), ys - _col(p["d_yc"][sl, k])
        ca, sa = _col(np.cos(p["d_angle"][sl, k])), _col(np.sin(p["d_angle"][sl, k]))
        stroke = (np.abs(ca * ex + sa * ey) <= _col(p["d_len"][sl, k])) & \
            (np.abs(ca * ey - sa * ex) <= _col(p["d_width"][sl, k]))
        spot = ex * ex + ey * ey <= _col(p["d_spot"][sl, k] ** 2)
        d = np.where(p["d_kind"][sl, k, None, None] == 0, stroke, spot) & p["d_visible"][sl, k, None, None]
        layer[d] = k + 1
    layer[mask] = DISTRACTORS + 1
    img = _background(p, sl, ys, xs)
    palette = np.concatenate([p["d_colour"][sl], p["colour"][sl, None]], 1).astype(np.float32)
    painted = layer > 0
    idx = np.nonzero(painted)
    img[idx] = palette[idx[0], layer[idx] - 1]
    pixels = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8).transpose(0, 3, 1, 2)
    return pixels, mask


def _mask_boxes(mask: np.ndarray) -> np.ndarray:
    rows, cols = mask.any(2), mask.any(1)
    h, w = mask.shape[1:]
    top, left = rows.argmax(1), cols.argmax(1)
    bottom, right = h - rows[:, ::-1].argmax(1), w - cols[:, ::-1].argmax(1)
    return np.stack([left, top, right, bottom], 1).astype(np.int64)


def make_shapes(n: int, size: int = SIZE, seed: int = 0, split: str = "train") -> ShapesSet:
    """``n`` pictures of ``size`` x ``size``: one deciding shape each (balanced over the classes),
    textured backgrounds and distractors away from the shape's box."""
    rng = np.random.default_rng(seed)
    p = _draw_params(n, size, rng)
    # the shape's box, from its radius (bounds the drawn mask), clears the distractors
    reach = p["radius"] + 1.0
    outer = np.stack([p["cx"] - reach, p["cy"] - reach, p["cx"] + reach, p["cy"] + reach], 1)
    p["d_xc"], p["d_yc"], p["d_visible"] = _place_distractors(p, outer)
    images = np.empty((n, 3, size, size), np.uint8)
    masks = np.empty((n, size, size), bool)
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(start + _CHUNK, n))
        images[sl], masks[sl] = _render(p, sl, size)
    data = ImageSet(torch.from_numpy(images), torch.from_numpy(p["labels"].astype(np.int64)), SHAPE_CLASSES,
                    NAME, split, f"generated shapes {size}x{size}, seed {seed}")
    return ShapesSet(data, torch.from_numpy(_mask_boxes(masks)), torch.from_numpy(masks))


@lru_cache(maxsize=2)
def _cached(split: str) -> ShapesSet:
    n = TRAIN_N if split == "train" else TEST_N
    return make_shapes(n, seed=11 if split == "train" else 12, split=split)


def load_shapes(split: str = "test") -> ShapesSet:
    """The standard shapes split: 10,000 train / 1,000 test pictures of 64 x 64 (about 1 s)."""
    return _cached(split)


def load_split(split: str, data_dir: str | os.PathLike | None = None, strict: bool | None = None) -> ImageSet:
    """The registry's builder for ``load_dataset("shapes", split)`` (needs no files)."""
    return load_shapes(split).data
