"""Which classes does the model mix up, and on which images? (post 003)"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._model import logits_of
from .display import Shows
from .inputs import as_images, as_target, renamed


@dataclass
class ConfusionResult(Shows):
    """``matrix[i, j]`` counts examples of true class i predicted as j."""

    matrix: torch.Tensor
    pairs: list[dict[str, Any]] = field(default_factory=list)

    def picture(self) -> Any:
        """The row-normalized matrix, classes by index (as ``kangae confusion`` draws it)."""
        from ..render.plots import as_picture, plot_confusion

        classes = [str(i) for i in range(len(self.matrix))]
        return as_picture(lambda path: plot_confusion(self.matrix, classes, path))

    def save(self, folder: str | Path, *, classes: Sequence[str] | None = None,  # type: ignore[override]
             images: torch.Tensor | None = None, title: str = "",
             extra: dict[str, Any] | None = None) -> Path:
        """The files ``kangae confusion`` writes: ``confusion.png``, ``confused-pairs.png``
        (the most confident mistakes, when ``images`` are the examples the matrix counts)
        and ``confusion.json`` (``extra``, then the accuracy, matrix, per-class accuracy and
        pairs by class name)."""
        from ..render.plots import plot_confused_pairs, plot_confusion
        from ..utils.atomic import write_json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        names = list(classes) if classes else [str(i) for i in range(len(self.matrix))]
        plot_confusion(self.matrix, names, folder / "confusion.png", title=title)
        if images is not None:
            plot_confused_pairs(images, self.pairs, names, folder / "confused-pairs.png")
        write_json(folder / "confusion.json", {
            **(extra or {}), "classes": names,
            "accuracy": float(self.matrix.diagonal().sum() / self.matrix.sum().clamp(min=1)),
            "matrix": self.matrix.tolist(), "per_class_accuracy": self.per_class_accuracy.tolist(),
            "pairs": [{**p, "true": names[p["true"]], "pred": names[p["pred"]]} for p in self.pairs]})
        return folder

    @property
    def normalized(self) -> torch.Tensor:
        """Rows sum to 1: for each true class, the share given each prediction."""
        m = self.matrix.double()
        return m / m.sum(1, keepdim=True).clamp(min=1)

    @property
    def per_class_accuracy(self) -> torch.Tensor:
        return self.normalized.diagonal()


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    idx = labels.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes**2).view(num_classes, num_classes)


@renamed(labels="target")
def confusion(logits: torch.Tensor, target: torch.Tensor, top_pairs: int = 6,
              examples: int = 6) -> ConfusionResult:
    """The confusion matrix against the true classes ``target``, and the most confused
    (true, predicted) pairs, each with the indices of its most confident mistakes and the
    probability the model gave them."""
    logits = logits.detach().cpu()
    k = logits.shape[1]
    labels = as_target(target, len(logits), k)
    probs = F.softmax(logits.double(), dim=1)
    conf, pred = probs.max(1)
    matrix = confusion_matrix(pred, labels, k)
    off = matrix.clone()
    off.fill_diagonal_(0)
    order = torch.argsort(off.flatten(), descending=True)
    pairs = []
    for flat in order[:top_pairs]:
        count = int(off.flatten()[flat])
        if count == 0:
            break
        t, p = divmod(int(flat), k)
        where = ((labels == t) & (pred == p)).nonzero().squeeze(1)
        worst = where[torch.argsort(conf[where], descending=True)][:examples]
        pairs.append({"true": t, "pred": p, "count": count,
                      "indices": worst.tolist(), "probabilities": conf[worst].tolist(),
                      "true_class_probabilities": probs[worst, t].tolist()})
    return ConfusionResult(matrix, pairs)


def confusion_of(model: nn.Module, images: torch.Tensor, *, target: torch.Tensor, top_pairs: int = 6,
                 examples: int = 6, batch_size: int | None = None) -> ConfusionResult:
    """:func:`confusion` of ``model``'s logits on ``images`` against the true classes ``target``."""
    return confusion(logits_of(model, as_images(images), batch_size), target, top_pairs, examples)
