"""``kangae confusion`` and ``kangae calibrate``: how a run learned, what it mixes up, and
whether its confidence is honest. Each writes PNGs and a JSON of every number."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..probes._model import logits_of
from ..probes.calibration import calibration, temperature_scaling
from ..probes.confusion import confusion
from ..render.plots import plot_curves
from ..training.run import Run


def write_confusion(run: Run, out: str | Path, split: str = "test", data_dir: str | None = None,
                    top_pairs: int = 6) -> dict[str, Any]:
    """What :meth:`ConfusionResult.save` writes, with ``curves.png`` when the run has a history."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = run.dataset(split, data_dir=data_dir)
    res = confusion(logits_of(run.model, data.images), data.labels, top_pairs=top_pairs)
    if run.history:
        plot_curves(run.history, out / "curves.png", title=run.meta.model)
    # data.split: "images" for the user's pictures (--images), which have no test or train split
    res.save(out, classes=run.classes, images=data.images,
             title=f"{run.meta.model} on {data.name} {data.split}",
             extra={"run": str(run.path), "dataset": data.name, "split": data.split, "history": run.history})
    return json.loads((out / "confusion.json").read_text())


def write_calibration(run: Run, out: str | Path, split: str = "test", data_dir: str | None = None,
                      bins: int = 15, seed: int = 0) -> dict[str, Any]:
    """Reliability before and after temperature scaling fitted on half of ``split``: what
    :meth:`TemperatureScaling.save` writes, with the whole split's numbers beside."""
    out = Path(out)
    data = run.dataset(split, data_dir=data_dir)
    logits = logits_of(run.model, data.images)
    full = calibration(logits, data.labels, bins)
    ts = temperature_scaling(logits, data.labels, bins, seed=seed)
    ts.save(out, title=f"{run.meta.model} on {data.name} {data.split}",
            extra={"run": str(run.path), "dataset": data.name, "split": data.split, "bins": bins,
                   "whole_split": full.numbers()})
    return json.loads((out / "calibration.json").read_text())
