"""The result type of every explanation method (masks and attributions alike)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .display import Shows, class_namer


@dataclass
class Explanation(Shows):
    """Where a decision rests, for a batch of images.

    ``attribution`` is ``(N, 1, H, W)``: higher means more important for ``target``. Masks
    also fill ``mask`` (what the optimizer found: ``(N, 1, H, W)``, or ``(N, A, 1, H, W)``
    for A areas), ``perturbed`` (the image the model saw at the end), ``prob_after`` and
    ``area`` (the share of pixels deleted or kept), and ``loss_curve`` (steps, N).
    ``inputs`` are the images explained, as floats in [0, 1] (``explain`` fills it).
    """

    method: str
    attribution: torch.Tensor
    target: torch.Tensor
    prob: torch.Tensor
    mask: torch.Tensor | None = None
    perturbed: torch.Tensor | None = None
    prob_after: torch.Tensor | None = None
    area: torch.Tensor | None = None
    areas: tuple[float, ...] | None = None
    game: str | None = None
    loss_curve: torch.Tensor | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    inputs: torch.Tensor | None = None

    def warning(self, i: int) -> str | None:
        """Why image ``i``'s map says nothing (a constant map, a mask that never moved), if so."""
        for w in self.metrics.get("warnings", ()):
            if w["image"] == i:
                return w["reason"]
        return None

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def picture(self) -> Any:
        """The first 8 maps in a row (inferno; signed maps blue-white-red), with the images
        the model saw at the end under them for masks (one row per area for extremal), in
        colour for colour pictures."""
        from .display import explanation_sheet

        return explanation_sheet(self.attribution[:8], None if self.perturbed is None else self.perturbed[:8])

    def save(self, folder: str | Path, *, classes: Sequence[str] | None = None,  # type: ignore[override]
             sources: Sequence[str] = (), pictures: Sequence[Any] = (),
             extra: dict[str, Any] | None = None) -> Path:
        """The files ``kangae explain`` writes: per image ``NN-NAME-panel.png`` (picture, map,
        and what a mask left) and ``NN-NAME-seen.png`` (the input as the model saw it), and
        ``explanations.json`` (one entry per image, and the run's metrics), plus every tensor
        in ``tensors.safetensors``. ``sources`` name the images; ``pictures`` are their
        :class:`~kangae.data.preprocess.Preprocessed` records, for how each was prepared."""
        from ..render.explain import save_panel
        from ..render.images import save_image
        from ..utils.atomic import write_json

        if self.inputs is None:
            raise ValueError("this Explanation has no inputs to draw the panels on; set e.inputs = images")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        name_of = class_namer(classes)
        entries = []
        for i in range(len(self)):
            source = sources[i] if i < len(sources) else ""
            stem = _stem(source, i)
            perturbed = None
            if self.perturbed is not None:
                perturbed = self.perturbed[i] if self.perturbed.ndim == 4 else self.perturbed[i, 0]
            line = self.summary(i, classes)
            save_panel(folder / f"{stem}-panel.png", self.inputs[i], self.attribution[i], perturbed,
                       title=line)
            save_image(self.inputs[i], folder / f"{stem}-seen.png", scale=1)
            entry: dict[str, Any] = {
                "source": source, "target": int(self.target[i]), "class": name_of(int(self.target[i])),
                "prob": float(self.prob[i]), "summary": line,
                "files": [f"{stem}-panel.png", f"{stem}-seen.png"],
            }
            if i < len(pictures):
                entry["inverted"] = pictures[i].inverted
                entry["preprocessing"] = pictures[i].describe()
            if self.warning(i):
                entry["warning"] = self.warning(i)
            if self.prob_after is not None and self.area is not None:
                entry["prob_after"] = self.prob_after[i].tolist()
                entry["area"] = self.area[i].tolist()
            entries.append(entry)
        result = {"method": self.method, **(extra or {}), "metrics": self.metrics, "images": entries}
        write_json(folder / "explanations.json", result)
        self._save_tensors(folder)
        return folder

    def summary(self, i: int, classes: Sequence[str] | None = None) -> str:
        """One line per image, as in the post: ``7: p=96.1% -> 1.3% after deleting 6.2% of pixels``."""
        t = int(self.target[i])
        name = classes[t] if classes else str(t)
        line = f"{name}: p={float(self.prob[i]):.1%}"
        if self.prob_after is None or self.area is None:
            return f"{line} ({self.method})"
        after, area = self.prob_after[i], self.area[i]
        if after.ndim == 0:
            verb = "deleting" if self.game == "deletion" else "keeping only"
            return f"{line} -> {float(after):.1%} after {verb} {float(area):.1%} of pixels"
        verb = "deleting" if self.game == "deletion" else "keeping"
        parts = [f"{float(a):.0%}: {float(p):.1%}" for a, p in zip(self.areas or (), after)]
        return f"{line} -> after {verb} " + ", ".join(parts)


def _stem(text: str, i: int) -> str:
    """``NN-NAME``: the image's index and a file-safe form of its source's name."""
    name = Path(text).stem if text else f"image{i}"
    return f"{i:02d}-" + (re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:40] or "image")


def degenerate(attribution: torch.Tensor, rtol: float = 1e-6) -> torch.Tensor:
    """(N,) True where a map is constant (all zero included) or not finite: it ranks nothing."""
    a = attribution.detach().flatten(1).double()
    spread = a.amax(1) - a.amin(1)
    scale = a.abs().amax(1)
    return ~torch.isfinite(a).all(1) | (spread <= rtol * scale) | (scale == 0)


def flag_degenerate(e: Explanation, reasons: dict[int, str] | None = None) -> Explanation:
    """Record in ``e.metrics["warnings"]`` (one ``{"image", "reason"}`` per image) every map
    that is constant, with the method's own reason where it has one, so that an empty map is
    never returned silently."""
    reasons = {**{w["image"]: w["reason"] for w in e.metrics.get("warnings", ())}, **(reasons or {})}
    if len(e):
        flat = e.attribution.flatten(1)
        for i in degenerate(e.attribution).nonzero().flatten().tolist():
            value = float(flat[i, 0])
            reasons.setdefault(i, f"the {e.method} map is constant ({value:.3g} everywhere): "
                                  "it ranks no pixel above another")
    if reasons:
        e.metrics["warnings"] = [{"image": i, "reason": reasons[i]} for i in sorted(reasons)]
    return e
