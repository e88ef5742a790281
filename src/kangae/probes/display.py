"""Results that show themselves in a notebook and save themselves to a folder.

A result class mixes in :class:`Shows` and says how to draw itself (:meth:`Shows.picture`,
a PIL image built with :mod:`kangae.render`). It then has ``_repr_png_`` (Jupyter shows it
when it is the last value of a cell), ``show()``, and ``save(folder)``, which writes the
picture, ``metrics.json`` and every tensor field in ``tensors.safetensors`` (safetensors,
never a pickle). Results that a command writes differently override ``save`` with the
command's own layout.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch


class Shows:
    """Mixin for result dataclasses: ``_repr_png_``, ``show()`` and ``save(folder)``."""

    picture_name = "result.png"

    def picture(self) -> Any:  # a PIL.Image.Image
        raise NotImplementedError(f"{type(self).__name__} does not draw itself")

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.picture().save(buf, format="PNG")
        return buf.getvalue()

    def show(self) -> None:
        """Display the picture: inline in a notebook, else in the system's image viewer."""
        try:
            from IPython import get_ipython
            from IPython.display import Image, display
        except ImportError:
            get_ipython = None  # type: ignore[assignment]
        if get_ipython is not None and get_ipython() is not None:
            display(Image(data=self._repr_png_()))
        else:
            self.picture().show()

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor field, on the CPU and contiguous (what ``save`` writes). Fields that
        share memory (a preservation mask is its own attribution) get their own copies, as
        safetensors stores each tensor apart."""
        out: dict[str, torch.Tensor] = {}
        storages: set[int] = set()
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                value = value.detach().cpu().contiguous()
                storage = value.untyped_storage().data_ptr()
                if value.numel() and storage in storages:
                    value = value.clone()
                storages.add(value.untyped_storage().data_ptr())
                out[f.name] = value
        return out

    def record(self) -> dict[str, Any]:
        """The JSON side of the result: its plain fields and ``metrics``."""
        plain = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, (str, int, float, bool, list, tuple, dict)) or value is None:
                plain[f.name] = value
        return json.loads(json.dumps(plain, default=str))

    def save(self, folder: str | Path) -> Path:
        """Write ``picture_name``, ``metrics.json`` and ``tensors.safetensors`` to ``folder``."""
        from ..utils.atomic import write_bytes, write_json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_bytes(folder / self.picture_name, self._repr_png_())
        write_json(folder / "metrics.json", self.record())
        self._save_tensors(folder)
        return folder

    def _save_tensors(self, folder: Path) -> None:
        """Every tensor field in ``folder/tensors.safetensors`` (nothing when there are none)."""
        from safetensors.torch import save_file

        from ..utils.atomic import atomic_path

        tensors = self.tensors()
        if tensors:
            with atomic_path(folder / "tensors.safetensors") as tmp:
                save_file(tensors, str(tmp))


def class_namer(classes: Sequence[str] | None) -> Callable[[int], str]:
    """Class index to its name (the index itself without names)."""
    return (lambda k: classes[int(k)]) if classes else (lambda k: str(int(k)))


def before_after(original: torch.Tensor, changed: torch.Tensor) -> Any:
    """Originals on the first row, the changed images on the second, the change (signed,
    blue-white-red) on the third: a PIL sheet."""
    from PIL import Image

    from ..render.images import display_scale, tile_images

    n = max(1, len(original))
    scale = display_scale(original.shape[-1])
    rows = [tile_images(original, n, scale, False), tile_images(changed, n, scale, False),
            tile_images(changed - original, n, scale, True)]
    sheet = Image.new("RGB", (rows[0].width, sum(r.height for r in rows)), (40, 40, 40))
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height
    return sheet


def explanation_sheet(maps: torch.Tensor, perturbed: torch.Tensor | None = None) -> Any:
    """Maps (N, 1, H, W) in a row, and under them the images a mask left (N, C, H, W), or
    (N, A, C, H, W) for A areas, one row per area: a PIL sheet."""
    from PIL import Image

    from ..render.explain import heat_pil
    from ..render.images import display_scale, tile_images

    n = len(maps)
    scale = display_scale(maps.shape[-1])
    tiles = [heat_pil(a, scale) for a in maps]
    w, h = tiles[0].size
    rows = [] if perturbed is None else [perturbed] if perturbed.ndim == 4 else list(perturbed.unbind(1))
    sheet = Image.new("RGB", (n * (w + 2) + 2, (1 + len(rows)) * (h + 2) + 2), (40, 40, 40))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, (2 + i * (w + 2), 2))
    for r, row in enumerate(rows):
        sheet.paste(tile_images(row, n, scale, False), (0, (r + 1) * (h + 2)))
    return sheet
