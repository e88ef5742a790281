"""Decode what a client sends into what the model sees: a base64 PNG (or JPEG) drawing, run
through MNIST-style preprocessing, or a 28x28 array taken as already preprocessed; for any
other model (:func:`read_picture`), an uploaded picture resized and cropped as its card says.

Every way an input can be junk raises :class:`BadInput` with a message a person can act on;
the app turns it into HTTP 400 with ``{"error": ...}``.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data.pictures import READ_FORMATS, ImageInputError, decode_picture
from ..data.preprocess import Preprocessed, preprocess
from ..errors import KangaeError

MAX_SIDE = 4096  # a canvas is a few hundred pixels; this bounds decompression bombs
FORMATS = ("PNG", "JPEG")
PICTURE_MAX_SIDE = 8192  # a camera photo, not a bomb (decode_picture also caps the pixel count)
PICTURE_FORMATS = tuple(f for f in READ_FORMATS if f != "TIFF")  # what browsers show
_DATA_URL = re.compile(r"^data:image/[a-z+.-]+;base64,", re.IGNORECASE)


class BadInput(ValueError):
    """A request's image is unusable; the message says why (HTTP 400)."""


@dataclass
class Seen:
    """The (1, H, W) float image in [0, 1] the model gets, and how it was made."""

    image: torch.Tensor
    source: str  # "png" or "array"
    inverted: bool = False
    steps: str = ""
    frame: tuple[float, float, float, float] | None = None  # (x, y, w, h) of the 28x28 in the drawing
    rows: list[list[float]] = field(default_factory=list)  # the (H, W) image rounded, for the answer

    def __post_init__(self) -> None:
        if not self.rows:  # made here, in the decoding thread, not on the event loop
            self.rows = rounded(self.image[0], 3)


def rounded(values: torch.Tensor, digits: int = 4) -> list:
    """``values`` as nested lists of floats rounded to ``digits`` decimals (for JSON)."""
    return np.round(values.detach().cpu().double().numpy(), digits).tolist()


def frame_of(pre: Preprocessed) -> tuple[float, float, float, float] | None:
    """Where the 28x28 field lies in the source picture, in its pixels: the ink box was scaled to
    fit 20x20 and placed where the field's first inked row and column are (for drawing the
    explanation mask over the user's drawing)."""
    left, top, right, bottom = pre.ink_box
    cw, ch = right - left, bottom - top
    longest = max(cw, ch)
    sx, sy = max(1, round(cw * 20 / longest)) / cw, max(1, round(ch * 20 / longest)) / ch
    ink = pre.image[0].numpy() > 0
    cols, rows = np.flatnonzero(ink.any(0)), np.flatnonzero(ink.any(1))
    if len(cols) == 0:
        return None
    ox, oy = int(cols[0]), int(rows[0])
    side = pre.image.shape[-1]
    return (left - ox / sx, top - oy / sy, side / sx, side / sy)


def decode_png(text: str, formats: tuple[str, ...] = FORMATS, max_side: int = MAX_SIDE) -> Image.Image:
    """A base64 string (bare or a ``data:image/...;base64,`` URL) as a loaded PIL image, decoded
    by the same :func:`kangae.data.pictures.decode_picture` as every other picture."""
    body = _DATA_URL.sub("", text.strip(), count=1)
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput("image is not valid base64 (send a PNG as base64 or a data: URL)") from None
    if not raw:
        raise BadInput("image is empty")
    try:
        return decode_picture(raw, "image", formats=formats, max_side=max_side)
    except ImageInputError as e:
        raise BadInput(str(e).removeprefix("image: ")) from None


def _opaque_to_gray(img: Image.Image) -> Image.Image:
    """An opaque RGB(A) canvas as 8-bit gray with the same luminance weights as
    ``preprocess.to_gray`` (exact for gray pixels, within 1/510 for coloured ones), which makes
    preprocessing a canvas 2.5x faster."""
    if img.mode == "RGB" or (img.mode == "RGBA" and img.getchannel("A").getextrema() == (255, 255)):
        return img.convert("L")
    return img


def decode_array(value: Any, shape: tuple[int, int]) -> torch.Tensor:
    """A nested list of numbers of ``shape`` with values in [0, 1] as a (1, H, W) tensor."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError):
        raise BadInput(f"array must be a {shape[0]}x{shape[1]} grid of numbers (rows of equal length)") \
            from None
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.shape != shape:
        raise BadInput(f"array has shape {list(a.shape)}; expected {shape[0]}x{shape[1]}")
    if not np.isfinite(a).all():
        raise BadInput("array holds NaN or infinite values")
    if a.min() < 0.0 or a.max() > 1.0:
        raise BadInput(f"array values must lie in [0, 1] (preprocessed); got {a.min():g}..{a.max():g}")
    return torch.from_numpy(a).float().unsqueeze(0)


def read_image(image: Any, shape: tuple[int, int] = (28, 28)) -> Seen:
    """A request's ``image`` field: base64 PNG string or an HxW array."""
    if isinstance(image, str):
        img = _opaque_to_gray(decode_png(image))
        try:
            pre = preprocess(img)
        except ImageInputError as e:
            msg = str(e)
            raise BadInput("blank drawing: draw a digit first" if "blank" in msg else msg) from None
        x = pre.image
        if tuple(x.shape[1:]) != shape:  # a model trained on another size: resize what MNIST made
            x = torch.nn.functional.interpolate(x[None], size=shape, mode="bilinear",
                                                align_corners=False)[0].clamp(0, 1)
        return Seen(x, "png", pre.inverted, pre.describe(), frame_of(pre))
    if isinstance(image, list):
        return Seen(decode_array(image, shape), "array", False, "taken as already preprocessed")
    if isinstance(image, float) and math.isnan(image):
        raise BadInput("image is NaN")
    raise BadInput("image must be a base64 PNG string or a 28x28 array of numbers in [0, 1]")


@dataclass
class Picture:
    """An upload as the model sees it: ``image`` (C, H, W) floats in [0, 1], the same crop as
    ``crop`` (a PNG data URL, lossless: sent back with ``prepared`` it decodes to the same
    pixels), the upload's ``size`` (width, height) and how it was prepared."""

    image: torch.Tensor
    crop: str
    size: tuple[int, int]
    steps: str


def png_data_url(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _describe(card: Any, size: tuple[int, int], prepared: bool) -> str:
    h, w = card.size
    if prepared:
        return f"taken as already prepared ({w}x{h})"
    if card.preprocess == "stretch":
        return f"{size[0]}x{size[1]} stretched to {w}x{h}"
    return f"{size[0]}x{size[1]}: shorter side resized to {card.resize_to}, centre {w}x{h} cropped"


def read_picture(image: Any, card: Any, prepared: bool = False) -> Picture:
    """A request's ``image`` (a base64 picture or data URL) decoded by the one picture decoder
    and prepared as ``card`` (a :class:`~kangae.models.card.ModelCard`) says, by
    :func:`kangae.data.folder.prepare_picture`. ``prepared``: the picture is already the
    model's crop (the ``crop`` of an earlier answer) and must have the model's size."""
    from dataclasses import replace

    from ..data.folder import prepare_picture

    if not isinstance(image, str):
        raise BadInput("image must be a picture as base64 or a data: URL (PNG, JPEG, GIF, BMP, WebP)")
    img = decode_png(image, PICTURE_FORMATS, PICTURE_MAX_SIDE)
    h, w = card.size
    if prepared and img.size != (w, h):
        raise BadInput(f"a prepared image must be {w}x{h} (the model's size), not {img.width}x{img.height}")
    # the same size stretched is Pillow's identity: a prepared crop keeps its exact pixels
    use = replace(card, preprocess="stretch") if prepared else card
    try:
        x = prepare_picture(img, use, "image")
    except (ImageInputError, KangaeError) as e:
        raise BadInput(str(e).removeprefix("image: ")) from None
    crop = Image.fromarray(x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy())
    return Picture(x.float().div_(255), png_data_url(crop), img.size, _describe(card, img.size, prepared))
