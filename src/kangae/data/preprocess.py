"""Turn a user's picture of a digit into what an MNIST model expects, the way MNIST was made.

LeCun et al. size-normalized each digit to fit a 20x20 box (keeping its aspect ratio, with
anti-aliasing) and centred it by its centre of mass in a 28x28 field, white ink on black.
``preprocess`` does the same to any PNG or JPEG (palette, alpha, 16-bit, CMYK) or array:
grayscale, invert when the ink is dark on a light background, crop to the ink, scale the
longest side to 20, centre by mass. It reports what it did so a tool can say so.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .pictures import MAX_PIXELS, ImageInputError, decode_picture, read_pictures

__all__ = ["MAX_PIXELS", "ImageInputError", "Preprocessed", "load_picture", "load_pictures",
           "open_picture", "preprocess", "to_gray"]
INK_THRESHOLD = 0.1


@dataclass
class Preprocessed:
    """``image`` is (1, 28, 28) float in [0, 1], white ink on black, as the model sees it."""

    image: torch.Tensor
    inverted: bool
    source_size: tuple[int, int]  # (width, height) of the input
    ink_box: tuple[int, int, int, int]  # (left, top, right, bottom) in the input, exclusive
    source: str = ""

    def describe(self) -> str:
        w, h = self.source_size
        steps = ["grayscale"]
        if self.inverted:
            steps.append("inverted (dark ink on a light background)")
        left, top, right, bottom = self.ink_box
        steps.append(f"cropped to ink {right - left}x{bottom - top} of {w}x{h}")
        steps.append("scaled to 20x20, centred by mass in 28x28")
        return ", ".join(steps)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def to_gray(img: Image.Image) -> np.ndarray:
    """Any PIL mode as an (H, W) float array in [0, 1]; transparency is laid on a background
    that contrasts with the visible pixels, so strokes on a transparent canvas stay ink."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img).astype(np.float32)
        peak = a.max(initial=0)
        top = 1.0 if mode == "F" and peak <= 1.0 else (255.0 if peak <= 255 else 65535.0)
        return np.clip(a / top, 0.0, 1.0)
    if mode == "1":
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        alpha = rgba[..., 3]
        lum = _luminance(rgba[..., :3])
        visible = alpha > 0.5
        bg = 1.0 if (visible.any() and lum[visible].mean() < 0.5) else 0.0
        return lum * alpha + bg * (1.0 - alpha)
    if mode == "L":
        return np.asarray(img, dtype=np.float32) / 255.0
    return _luminance(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0)


def _resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Anti-aliased resize of a float array to (width, height)."""
    out = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32)).resize(size, Image.Resampling.LANCZOS)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def preprocess(picture: Image.Image | np.ndarray, source: str = "") -> Preprocessed:
    """MNIST-style preprocessing of one picture (PIL image, or an (H, W) array in [0, 1])."""
    where = f"{source}: " if source else ""
    if isinstance(picture, Image.Image) and picture.mode == "L":
        pixels = np.asarray(picture)
        crop, inverted, box = _ink_of_bytes(pixels, where)
    else:
        if isinstance(picture, Image.Image):
            gray = to_gray(picture)
        else:
            gray = np.asarray(picture, dtype=np.float32)
            if gray.ndim != 2 or gray.size == 0:
                raise ImageInputError(f"{where}expected a 2-D grayscale array, got shape {gray.shape}")
        if not np.isfinite(gray).all():
            what = "image" if isinstance(picture, Image.Image) else "array"
            raise ImageInputError(f"{where}the {what} holds NaN or infinite values")
        pixels = np.clip(gray, 0.0, 1.0)
        crop, inverted, box = _ink_of_gray(pixels, where)
    h, w = pixels.shape
    return Preprocessed(_centred(crop), inverted, (w, h), box, source)


def _ink_of_gray(gray: np.ndarray, where: str) -> tuple[np.ndarray, bool, tuple[int, int, int, int]]:
    """The ink of an (H, W) float image in [0, 1], white on black and stretched to [0, 1],
    cropped to where it passes :data:`INK_THRESHOLD`; whether it was inverted; the crop box."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    inverted = background > 0.5
    ink = 1.0 - gray if inverted else gray
    bg = 1.0 - background if inverted else background
    peak = float(ink.max())
    if peak - bg < INK_THRESHOLD:
        raise ImageInputError(f"{where}no digit found: the picture is blank (one flat color)")
    ink = np.clip((ink - bg) / (peak - bg), 0.0, 1.0)
    mask = ink > INK_THRESHOLD
    top, bottom, left, right = _span(mask.any(1)) + _span(mask.any(0))
    return ink[top:bottom, left:right], inverted, (left, top, right, bottom)


_LEVELS = np.arange(256, dtype=np.float32) / 255.0  # to_gray of each 8-bit grey level


def _ink_of_bytes(u: np.ndarray, where: str) -> tuple[np.ndarray, bool, tuple[int, int, int, int]]:
    """:func:`_ink_of_gray` of an 8-bit grey picture, with the same numbers: every float step
    is a function of the grey level alone, so it runs on the 256 levels (a lookup table), the
    ink box is found on the bytes, and only the crop becomes float."""
    border = np.concatenate([u[0], u[-1], u[:, 0], u[:, -1]])
    background = float(np.median(_LEVELS[border]))
    inverted = background > 0.5
    levels = 1.0 - _LEVELS if inverted else _LEVELS
    bg = 1.0 - background if inverted else background
    low, high = int(u.min()), int(u.max())
    peak = float(levels[low] if inverted else levels[high])  # levels is monotone in the byte
    if peak - bg < INK_THRESHOLD:
        raise ImageInputError(f"{where}no digit found: the picture is blank (one flat color)")
    ink = np.clip((levels - bg) / (peak - bg), 0.0, 1.0)
    on = ink > INK_THRESHOLD
    # ``on`` is monotone in the byte, so a pixel is inked when its byte passes one level, and a
    # row (column) has ink when its brightest (darkest) byte does
    first, last = int(np.argmax(on)), 255 - int(np.argmax(on[::-1]))
    if not inverted and on[first:].all():
        rows, cols = u.max(1) >= first, u.max(0) >= first
    elif inverted and on[: last + 1].all():
        rows, cols = u.min(1) <= last, u.min(0) <= last
    else:  # not reached: kept so a rounding surprise costs time, not correctness
        mask = on[u]
        rows, cols = mask.any(1), mask.any(0)
    top, bottom, left, right = _span(rows) + _span(cols)
    return ink[u[top:bottom, left:right]], inverted, (left, top, right, bottom)


def _span(flags: np.ndarray) -> tuple[int, int]:
    """(first, last + 1) of the True entries of a non-empty 1-D mask."""
    at = np.flatnonzero(flags)
    return int(at[0]), int(at[-1]) + 1


def _centred(crop: np.ndarray) -> torch.Tensor:
    """The ink crop scaled so its longest side is 20 and placed in a 28x28 field with its
    centre of mass at (14, 14), as LeCun et al. made MNIST: (1, 28, 28) float."""
    ch, cw = crop.shape
    scale = 20.0 / max(ch, cw)
    nw, nh = max(1, round(cw * scale)), max(1, round(ch * scale))
    box = _resize(crop, (nw, nh))
    mass = box.sum()
    ys, xs = np.indices(box.shape)
    cy, cx = (ys * box).sum() / mass, (xs * box).sum() / mass
    oy, ox = int(round(14 - cy)), int(round(14 - cx))  # MNIST: mass at index 14
    canvas = np.zeros((28, 28), dtype=np.float32)
    y0, x0 = max(oy, 0), max(ox, 0)
    y1, x1 = min(oy + nh, 28), min(ox + nw, 28)
    canvas[y0:y1, x0:x1] = box[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
    return torch.from_numpy(canvas).unsqueeze(0)


def open_picture(path: str | os.PathLike) -> Image.Image:
    """Open a user's image file, with one clear line naming the file when that fails."""
    return decode_picture(path, str(path))


def load_picture(path: str | os.PathLike) -> Preprocessed:
    """Open and preprocess one image file."""
    return preprocess(open_picture(path), source=str(path))


def load_pictures(paths: Sequence[str | os.PathLike]) -> tuple[list[Preprocessed], list[str]]:
    """Preprocess many files; a bad file is reported in the second list (one line naming it)
    and the rest go on."""
    batch = read_pictures(paths, lambda img, source: preprocess(img, source=source))
    return batch.items, [str(e) for e in batch.errors]
