"""The result type every prototype method returns; rendering lives in ``kangae.render``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .display import Shows


@dataclass
class PrototypeResult(Shows):
    """What a model "thinks" each target looks like.

    ``images`` are ``(T, C, H, W)`` in [0, 1] (signed for weight templates), one per ``target``
    (or ``per_target`` of them, target-major); ``frames`` are ``(F, T, C, H, W)`` snapshots of
    the search or optimization, for a GIF; ``metrics`` holds numbers about the run, and
    :func:`kangae.probes.verify.verify_prototypes` adds the verification numbers.
    """

    images: torch.Tensor
    target: torch.Tensor
    scores: torch.Tensor
    method: str
    frames: torch.Tensor | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    signed: bool = False

    picture_name = "grid.png"

    @property
    def targets(self) -> torch.Tensor:
        """The former name of ``target``."""
        return self.target

    def picture(self) -> Any:
        from ..render.images import default_columns, display_scale, tile_images

        n = len(self.images)
        return tile_images(self.images, default_columns(n), display_scale(self.images.shape[-1]), self.signed)

    def save(self, folder: str | Path, *, names: Sequence[str] | None = None,  # type: ignore[override]
             titles: Sequence[str] | None = None, title: str = "") -> Path:
        """The files ``kangae ideas`` writes: ``grid.png`` (titled), one ``target-NN-NAME.png``
        per image, ``search.gif`` when there are frames, ``prototypes.safetensors`` (images
        and targets) and ``metrics.json`` (the command adds its verification to it)."""
        from safetensors.torch import save_file

        from ..render.images import display_scale, save_gif, save_grid, save_image
        from ..utils.atomic import atomic_path, write_json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        names = list(names) if names is not None else [str(int(t)) for t in self.target]
        save_grid(self.images, folder / "grid.png", titles=list(titles) if titles else names,
                  signed=self.signed, suptitle=title or None)
        # digits are enlarged to be seen; a photo-sized prototype is saved at its own size
        scale = display_scale(max(self.images.shape[-2:]))
        for i, name in enumerate(names):
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
            save_image(self.images[i], folder / f"target-{i:02d}-{safe}.png", scale=scale, signed=self.signed)
        if self.frames is not None and len(self.frames) > 1:
            save_gif(self.frames, folder / "search.gif", scale=min(3, scale), signed=self.signed)
        with atomic_path(folder / "prototypes.safetensors") as tmp:
            save_file({"images": self.images.detach().float().contiguous().cpu(),
                       "targets": self.target.detach().long().contiguous().cpu()}, str(tmp))
        write_json(folder / "metrics.json", {"method": self.method, "targets": names,
                                             "scores": self.scores.tolist(), **self.record()})
        return folder

    def record(self) -> dict[str, Any]:
        from json import dumps, loads

        run = {k: v for k, v in self.metrics.items() if k != "objective_curve"}
        return loads(dumps({"method": self.method, "signed": self.signed, "run": run}, default=str))
