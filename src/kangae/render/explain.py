"""Pictures of explanations: heat maps, overlays and the post's four-panel figure."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..utils.atomic import atomic_path
from .images import panel_scale, to_pil


def heat_rgb(attribution: torch.Tensor) -> np.ndarray:
    """(1, H, W) -> uint8 (H, W, 3): unsigned maps on 'inferno' scaled to their maximum;
    signed maps on a diverging map centred at 0."""
    from matplotlib import colormaps

    a = attribution.detach().float().cpu().sum(0)
    if float(a.min()) < 0:
        lim = float(a.abs().max()) or 1.0
        v = (a / lim * 0.5 + 0.5).clamp(0, 1).numpy()
        return (colormaps["RdBu_r"](v)[..., :3] * 255).round().astype(np.uint8)
    v = (a / (float(a.max()) or 1.0)).clamp(0, 1).numpy()
    return (colormaps["inferno"](v)[..., :3] * 255).round().astype(np.uint8)


def heat_pil(attribution: torch.Tensor, scale: int = 8) -> Image.Image:
    pil = Image.fromarray(heat_rgb(attribution))
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)


def _weight(attribution: torch.Tensor) -> np.ndarray:
    """(H, W) in [0, 1]: |a| scaled to its maximum, how strongly the heat covers each pixel."""
    a = attribution.detach().float().cpu().sum(0).abs()
    return (a / (float(a.max()) or 1.0)).clamp(0, 1).numpy()


def overlay_pil(image: torch.Tensor, attribution: torch.Tensor, scale: int = 8,
                alpha: float = 0.55) -> Image.Image:
    """The heat map laid over the picture. A grey picture (a digit) is blended with the whole
    map at ``alpha``; a colour picture keeps its own colours where the map is low, the heat
    covering each pixel in proportion to its value (up to ``alpha``)."""
    base = to_pil(image, scale).convert("RGB")
    heat = heat_pil(attribution, scale)
    if image.shape[0] != 3:
        return Image.blend(base, heat, alpha)
    w = np.repeat(np.repeat(_weight(attribution), scale, 0), scale, 1)[..., None] * alpha
    mixed = np.asarray(base, np.float32) * (1 - w) + np.asarray(heat, np.float32) * w
    return Image.fromarray(mixed.round().clip(0, 255).astype(np.uint8))


def draw_box(tile: Image.Image, box: Sequence[int], scale: int, point: tuple[int, int] | None = None,
             colour: tuple[int, int, int] = (0, 255, 120)) -> Image.Image:
    """Outline ``box`` (left, top, right, bottom in image pixels, right and bottom exclusive,
    as the datasets give it) on a tile enlarged ``scale`` times, and mark ``point`` (x, y),
    e.g. the map's maximum in the pointing game, with a cross. Returns a copy."""
    out = tile.copy()
    draw = ImageDraw.Draw(out)
    left, top, right, bottom = (int(v) for v in box)
    width = max(1, scale // 3)
    draw.rectangle([left * scale, top * scale, right * scale - 1, bottom * scale - 1], outline=colour,
                   width=width)
    if point is not None:
        cx, cy = (point[0] + 0.5) * scale, (point[1] + 0.5) * scale
        r = max(3, 2 * scale)
        draw.line([cx - r, cy, cx + r, cy], fill=(255, 255, 255), width=width)
        draw.line([cx, cy - r, cx, cy + r], fill=(255, 255, 255), width=width)
    return out


def peak(attribution: torch.Tensor) -> tuple[int, int]:
    """(x, y) of the map's maximum (the first one), as the pointing game reads it."""
    a = attribution.detach().float().cpu().sum(0)
    i = int(a.flatten().argmax())
    return i % a.shape[-1], i // a.shape[-1]


def panel(image: torch.Tensor, attribution: torch.Tensor, perturbed: torch.Tensor | None = None,
          title: str = "", scale: int | None = None, box: Sequence[int] | None = None) -> Image.Image:
    """Input, heat map, overlay and (for masks) the perturbed image, side by side, each in
    colour when the picture is. With ``box`` (the object's), it is outlined on the overlay
    with the map's maximum marked."""
    scale = scale or panel_scale(max(image.shape[-2:]))
    over = overlay_pil(image, attribution, scale)
    if box is not None:
        over = draw_box(over, box, scale, peak(attribution))
    tiles = [("seen by the model", to_pil(image, scale).convert("RGB")),
             ("explanation", heat_pil(attribution, scale)),
             ("overlay", over)]
    if perturbed is not None:
        tiles.append(("perturbed", to_pil(perturbed, scale).convert("RGB")))
    w, h = tiles[0][1].size
    pad, top = 6, 34
    sheet = Image.new("RGB", (len(tiles) * (w + pad) + pad, h + top + pad), (250, 250, 250))
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 2), title, fill=(20, 20, 20))
    for i, (label, tile) in enumerate(tiles):
        x = pad + i * (w + pad)
        draw.text((x, 18), label, fill=(90, 90, 90))
        sheet.paste(tile, (x, top))
    return sheet


def save_panel(path: str | os.PathLike, image: torch.Tensor, attribution: torch.Tensor,
               perturbed: torch.Tensor | None = None, title: str = "", scale: int | None = None,
               box: Sequence[int] | None = None) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        panel(image, attribution, perturbed, title, scale, box).save(tmp, format="PNG")
    return path
