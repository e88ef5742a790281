"""``kangae confusion`` and ``kangae calibrate``: how a run learned, what it mixes up, and
whether its confidence is honest. Each writes PNGs and a JSON of every number."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..probes._model import logits_of
from ..probes.calibration import CalibrationResult, calibration, temperature_scaling
from ..probes.confusion import confusion
from ..render.plots import plot_confused_pairs, plot_confusion, plot_curves, plot_reliability
from ..training.run import Run
from ..utils.atomic import write_json


def write_confusion(run: Run, out: str | Path, split: str = "test", data_dir: str | None = None,
                    top_pairs: int = 6) -> dict[str, Any]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = run.dataset(split, data_dir=data_dir)
    logits = logits_of(run.model, data.images)
    res = confusion(logits, data.labels, top_pairs=top_pairs)
    name = f"{run.meta.model} on {data.name} {split}"
    if run.history:
        plot_curves(run.history, out / "curves.png", title=run.meta.model)
    plot_confusion(res.matrix, run.classes, out / "confusion.png", title=name)
    plot_confused_pairs(data.images, res.pairs, run.classes, out / "confused-pairs.png")
    summary = {
        "run": str(run.path), "split": split, "classes": run.classes,
        "accuracy": float(res.matrix.diagonal().sum() / res.matrix.sum()),
        "matrix": res.matrix.tolist(),
        "per_class_accuracy": res.per_class_accuracy.tolist(),
        "pairs": [{**p, "true": run.classes[p["true"]], "pred": run.classes[p["pred"]]} for p in res.pairs],
        "history": run.history,
    }
    write_json(out / "confusion.json", summary)
    return summary


def _numbers(res: CalibrationResult) -> dict[str, Any]:
    return {**res.metrics, "bin_count": res.bin_count.tolist(),
            "bin_confidence": [None if c != c else c for c in res.bin_confidence.tolist()],
            "bin_accuracy": [None if a != a else a for a in res.bin_accuracy.tolist()]}


def write_calibration(run: Run, out: str | Path, split: str = "test", data_dir: str | None = None,
                      bins: int = 15, seed: int = 0) -> dict[str, Any]:
    """Reliability before and after temperature scaling fitted on half of ``split``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = run.dataset(split, data_dir=data_dir)
    logits = logits_of(run.model, data.images)
    full = calibration(logits, data.labels, bins)
    ts = temperature_scaling(logits, data.labels, bins, seed=seed)
    plot_reliability([("before (held-out half)", ts["before"]),
                      (f"after temperature scaling, T = {ts['temperature']:.3f}", ts["after"])],
                     out / "reliability.png", title=f"{run.meta.model} on {data.name} {split}")
    summary = {
        "run": str(run.path), "split": split, "bins": bins,
        "temperature": ts["temperature"], "fit_examples": ts["fit_examples"],
        "eval_examples": ts["eval_examples"],
        "whole_split": _numbers(full),
        "before": _numbers(ts["before"]), "after": _numbers(ts["after"]),
    }
    write_json(out / "calibration.json", summary)
    return summary
