"""The user's own pictures, prepared as a model card says (``--images FOLDER``).

A folder is either one subfolder per class (labels from the folder names, matched to the card's
class names) or flat (no labels: explanations, prototypes and predictions only). Each picture is
decoded by :func:`kangae.data.pictures.decode_picture`, then resized and cropped as the card says:

- ``center-crop`` (torchvision's rule): shorter side to ``resize``, then the centre ``size``;
- ``stretch``: straight to ``size``;
- ``mnist``: kangae's MNIST preprocessing (ink cropped, 20x20, centred by mass in 28x28).

A file that fails is one :class:`~kangae.data.pictures.PictureError` and the others go on.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from ..errors import KangaeError, UnknownNameError
from .imageset import ImageSet
from .pictures import PictureError, read_pictures

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
UNLABELLED = -1


class Card(Protocol):
    """What preparing a picture needs from a model card (:class:`kangae.models.card.ModelCard`)."""

    channels: int | None
    size: tuple[int, int] | None
    preprocess: str
    classes: tuple[str, ...] | None

    @property
    def resize_to(self) -> int: ...


def _on_white(img: Image.Image) -> Image.Image:
    """RGB, with any transparency laid on white (how a viewer shows it)."""
    if img.mode in ("RGBA", "LA"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if img.mode in ("I", "F"):
        from .preprocess import to_gray

        return Image.fromarray((to_gray(img) * 255).round().astype(np.uint8)).convert("RGB")
    return img.convert("RGB")


def _resized(img: Image.Image, card: Card) -> Image.Image:
    h, w = card.size  # type: ignore[misc]
    if card.preprocess == "stretch":
        return img.resize((w, h), Image.Resampling.BILINEAR)
    side = card.resize_to
    scale = side / min(img.width, img.height)
    nw, nh = max(w, round(img.width * scale)), max(h, round(img.height * scale))
    img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - w) // 2, (nh - h) // 2
    return img.crop((left, top, left + w, top + h))


def prepare_picture(img: Image.Image, card: Card, source: str = "") -> torch.Tensor:
    """One decoded picture as the model sees it: uint8 ``(C, H, W)``."""
    if card.preprocess == "mnist":
        from .preprocess import preprocess

        return preprocess(img, source=source).image.mul(255).round_().to(torch.uint8)
    if card.channels not in (1, 3):
        raise KangaeError(f"{source or 'picture'}: kangae reads pictures as grey or RGB, but the model takes "
                        f"{card.channels} channels")
    rgb = _resized(_on_white(img), card)
    if card.channels == 1:
        rgb = rgb.convert("L")
    a = np.array(rgb, dtype=np.uint8)  # a writable copy
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(a))


@dataclass
class PictureSet:
    """The pictures of a folder that could be read, as an :class:`ImageSet` (labels are
    :data:`UNLABELLED` in a flat folder), with one error per file that could not."""

    images: ImageSet
    files: list[str] = field(default_factory=list)
    errors: list[PictureError] = field(default_factory=list)

    @property
    def labelled(self) -> bool:
        return bool(len(self.images)) and bool((self.images.labels >= 0).all())


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name).strip().lower()


def match_class(folder_name: str, classes: Sequence[str]) -> int:
    """The index of the class a folder is named after: exactly, then ignoring case, spaces,
    underscores and hyphens, then as a number."""
    if folder_name in classes:
        return list(classes).index(folder_name)
    loose = {_norm(c): i for i, c in enumerate(classes)}
    if _norm(folder_name) in loose:
        return loose[_norm(folder_name)]
    if folder_name.isdigit() and int(folder_name) < len(classes):
        return int(folder_name)
    raise UnknownNameError("class folder", folder_name, classes)


def _pictures_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PICTURE_SUFFIXES)


def prepare_pictures(paths: Sequence[str | os.PathLike], card: Card) -> tuple[torch.Tensor, list[str],
                                                                               list[PictureError]]:
    """Decode and prepare ``paths``: a uint8 ``(N, C, H, W)`` batch of the good ones, their
    sources, and one error per bad file."""
    batch = read_pictures(paths, lambda img, source: prepare_picture(img, card, source))
    c, (h, w) = (1, (28, 28)) if card.preprocess == "mnist" else (card.channels, card.size)  # type: ignore[misc]
    images = torch.stack(batch.items) if batch.items else torch.zeros(0, c, h, w, dtype=torch.uint8)
    return images, batch.sources, batch.errors


def read_image_folder(folder: str | os.PathLike, card: Card) -> PictureSet:
    """Every picture under ``folder``, prepared as ``card`` says (see the module docstring)."""
    root = Path(folder)
    if not root.is_dir():
        raise KangaeError(f"{root}: no such folder of pictures")
    classes = tuple(card.classes or ())
    subfolders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    labelled = [d for d in subfolders if _pictures_in(d)]
    paths: list[Path] = []
    labels: list[int] = []
    if labelled:
        for d in labelled:
            index = match_class(d.name, classes)
            found = _pictures_in(d)
            paths += found
            labels += [index] * len(found)
        loose = _pictures_in(root)
        errors = [PictureError(str(p), "not in a class folder (the folder has one subfolder per class); "
                                       "left out") for p in loose]
    else:
        paths = _pictures_in(root)
        labels = [UNLABELLED] * len(paths)
        errors = []
    if not paths:
        raise KangaeError(f"{root}: no pictures here (kangae reads {', '.join(PICTURE_SUFFIXES)}, in the "
                        "folder itself or one subfolder per class)")
    images, sources, bad = prepare_pictures(paths, card)
    by_source = dict(zip(map(str, paths), labels))
    y = torch.tensor([by_source[s] for s in sources], dtype=torch.int64)
    if not len(sources):
        raise KangaeError(f"{root}: none of its {len(paths)} pictures could be read (first: {bad[0]})")
    data = ImageSet(images, y, classes, root.name, "images", str(root))
    return PictureSet(data, list(sources), errors + bad)
