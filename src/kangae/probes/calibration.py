"""Does confidence mean accuracy? (post 002, section 6)

Reliability statistics with equal-width confidence bins: expected and maximum calibration
error (ECE, MCE; Naeini et al. 2015, Guo et al. 2017, 15 bins), negative log-likelihood
and the multi-class Brier score; and temperature scaling (Guo et al. 2017): one scalar
``T`` dividing the logits, fitted by LBFGS on the NLL of a held-out split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._model import logits_of
from .display import Shows
from .inputs import ProbeInputError, as_images, as_target, renamed

MIN_FIT = 5  # examples to fit a temperature on: on one, T ran off to 3.5e7


class TooFewToFit(ProbeInputError):
    """Fewer than :data:`MIN_FIT` examples to fit a temperature on."""


@dataclass
class CalibrationResult(Shows):
    """Per-bin statistics and per-example confidence; ``metrics`` has ECE, MCE, NLL, Brier."""

    bin_edges: torch.Tensor
    bin_confidence: torch.Tensor
    bin_accuracy: torch.Tensor
    bin_count: torch.Tensor
    confidence: torch.Tensor
    correct: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)

    def picture(self) -> Any:
        """The reliability diagram and the confidence histograms (as ``kangae calibrate``)."""
        from ..render.plots import as_picture, plot_reliability

        return as_picture(lambda path: plot_reliability([("", self)], path))

    def numbers(self) -> dict[str, Any]:
        """The metrics and the per-bin statistics, as JSON values (empty bins are None)."""
        return {**self.metrics, "bin_count": self.bin_count.tolist(),
                "bin_confidence": [None if c != c else c for c in self.bin_confidence.tolist()],
                "bin_accuracy": [None if a != a else a for a in self.bin_accuracy.tolist()]}

    def save(self, folder: str | Path, *, title: str = "",  # type: ignore[override]
             extra: dict[str, Any] | None = None) -> Path:
        """``reliability.png`` and ``calibration.json`` (``extra``, then :meth:`numbers`), as
        ``kangae calibrate`` names them, plus the tensors in ``tensors.safetensors``."""
        return _save_reliability(folder, [("", self)], {**(extra or {}), **self.numbers()}, title, self)


@dataclass
class TemperatureScaling(Shows):
    """Temperature scaling (Guo et al. 2017): ``temperature`` fitted on ``fit_examples``, and
    the calibration of the other ``eval_examples`` ``before`` and ``after`` dividing by it."""

    temperature: float
    fit_examples: int
    eval_examples: int
    before: CalibrationResult
    after: CalibrationResult

    def __getitem__(self, key: str) -> Any:
        """Dict-style access (``scaled["after"]``), as the former dict result allowed."""
        return getattr(self, key)

    def _columns(self) -> list[tuple[str, CalibrationResult]]:
        return [("before (held-out half)", self.before),
                (f"after temperature scaling, T = {self.temperature:.3f}", self.after)]

    def picture(self) -> Any:
        """Reliability before and after, side by side (as ``kangae calibrate`` draws it)."""
        from ..render.plots import as_picture, plot_reliability

        return as_picture(lambda path: plot_reliability(self._columns(), path))

    def numbers(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "fit_examples": self.fit_examples,
                "eval_examples": self.eval_examples, "before": self.before.numbers(),
                "after": self.after.numbers()}

    def save(self, folder: str | Path, *, title: str = "",  # type: ignore[override]
             extra: dict[str, Any] | None = None) -> Path:
        """The files ``kangae calibrate`` writes: ``reliability.png`` (before and after) and
        ``calibration.json`` (``extra``, then :meth:`numbers`)."""
        return _save_reliability(folder, self._columns(), {**(extra or {}), **self.numbers()}, title)


def _save_reliability(folder: str | Path, columns: list[tuple[str, CalibrationResult]],
                      numbers: dict[str, Any], title: str, tensors: Shows | None = None) -> Path:
    from ..render.plots import plot_reliability
    from ..utils.atomic import write_json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plot_reliability(columns, folder / "reliability.png", title=title)
    write_json(folder / "calibration.json", numbers)
    if tensors is not None:
        tensors._save_tensors(folder)
    return folder


@renamed(labels="target")
def calibration(logits: torch.Tensor, target: torch.Tensor, bins: int = 15,
                temperature: float = 1.0) -> CalibrationResult:
    """Reliability statistics of ``softmax(logits / temperature)`` against the true classes
    ``target``."""
    logits = logits.detach().double().cpu() / temperature
    labels = as_target(target, len(logits), logits.shape[1])
    probs = F.softmax(logits, dim=1)
    conf, pred = probs.max(1)
    correct = pred == labels
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    # bin b holds confidences in (edges[b], edges[b+1]]; confidence 0 cannot occur
    which = (torch.bucketize(conf, edges, right=False) - 1).clamp(0, bins - 1)
    count = torch.bincount(which, minlength=bins).double()
    conf_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, which, conf)
    acc_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, which, correct.double())
    safe = count.clamp(min=1)
    bin_conf = torch.where(count > 0, conf_sum / safe, torch.nan)
    bin_acc = torch.where(count > 0, acc_sum / safe, torch.nan)
    gap = (acc_sum - conf_sum).abs() / safe
    n = len(labels)
    onehot = F.one_hot(labels, probs.shape[1]).double()
    metrics = {
        "ece": float((count / n * gap).sum()),
        "mce": float(gap[count > 0].max()) if n else 0.0,
        "nll": float(F.cross_entropy(logits, labels)),
        "brier": float(((probs - onehot) ** 2).sum(1).mean()),
        "accuracy": float(correct.double().mean()),
        "mean_confidence": float(conf.mean()),
        "temperature": float(temperature),
        "bins": bins,
        "n": n,
    }
    return CalibrationResult(edges.float(), bin_conf.float(), bin_acc.float(), count.long(),
                             conf.float(), correct, metrics)


@renamed(labels="target")
def fit_temperature(logits: torch.Tensor, target: torch.Tensor, max_iter: int = 200) -> float:
    """The temperature minimizing the NLL of ``softmax(logits / T)`` (LBFGS on log T)."""
    logits = logits.detach().double().cpu()
    labels = as_target(target, len(logits), logits.shape[1])
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


@renamed(labels="target")
def temperature_scaling(logits: torch.Tensor, target: torch.Tensor, bins: int = 15,
                        fit_fraction: float = 0.5, seed: int = 0) -> TemperatureScaling:
    """Fit ``T`` on a random ``fit_fraction`` of the examples; report the rest before and after."""
    logits = logits.detach().cpu()
    labels = as_target(target, len(logits), logits.shape[1])
    n = len(labels)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = int(n * fit_fraction)
    if cut < MIN_FIT or n - cut < 1:
        raise TooFewToFit(f"temperature scaling needs at least {MIN_FIT} examples to fit T on and more "
                              f"to check it; {n} examples give {cut} (use more pictures)")
    fit, held = perm[:cut], perm[cut:]
    t = fit_temperature(logits[fit], labels[fit])
    before = calibration(logits[held], labels[held], bins)
    after = calibration(logits[held], labels[held], bins, temperature=t)
    return TemperatureScaling(t, cut, n - cut, before, after)


def calibration_of(model: nn.Module, images: torch.Tensor, *, target: torch.Tensor, bins: int = 15,
                   temperature: float = 1.0, batch_size: int | None = None) -> CalibrationResult:
    """:func:`calibration` of ``model``'s logits on ``images`` against the true classes ``target``."""
    return calibration(logits_of(model, as_images(images), batch_size), target, bins, temperature)
