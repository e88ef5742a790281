"""Pictures of explanations: heat maps, overlays and the post's four-panel figure."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..utils.atomic import atomic_path
from .images import to_pil


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


def overlay_pil(image: torch.Tensor, attribution: torch.Tensor, scale: int = 8,
                alpha: float = 0.55) -> Image.Image:
    """The heat map laid over the grayscale image."""
    base = to_pil(image, scale).convert("RGB")
    heat = heat_pil(attribution, scale)
    return Image.blend(base, heat, alpha)


def panel(image: torch.Tensor, attribution: torch.Tensor, perturbed: torch.Tensor | None = None,
          title: str = "", scale: int = 8) -> Image.Image:
    """Input, heat map, overlay and (for masks) the perturbed image, side by side."""
    tiles = [("seen by the model", to_pil(image, scale).convert("RGB")),
             ("explanation", heat_pil(attribution, scale)),
             ("overlay", overlay_pil(image, attribution, scale))]
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
               perturbed: torch.Tensor | None = None, title: str = "", scale: int = 8) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        panel(image, attribution, perturbed, title, scale).save(tmp, format="PNG")
    return path
