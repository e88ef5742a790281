"""Judge generated images with a kangae-trained classifier.

Metrics (all batched, one forward pass per chunk for features and logits):

- ``fd``: the Fréchet distance between the classifier's penultimate features of the samples
  and of half A of the real test set (an FID with an MNIST network instead of Inception);
- ``fd_floor``: the same distance between halves A and B of the real test set, with as
  many images as there are samples: what a perfect generator would score;
- ``confidence``: the classifier's mean top probability on the samples;
- ``histogram`` and ``entropy_bits``: the share of samples given to each class and its
  entropy; a collapsed generator (Salimans et al. 2016's "mode collapse") has low entropy;
- ``class_match`` (conditional models): the share of samples read as the asked-for class.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import ImageSet, load_dataset
from ..errors import KangaeError
from ..models.layers import capture, eval_mode, get_layer
from ..training.snapshots import default_layer
from ..utils.device import module_device
from .frechet import GaussianStats, frechet_from_stats, gaussian_stats

JUDGE_MODEL = "fast-cnn"
JUDGE_EPOCHS = 2
JUDGE_BATCH = 500


@dataclass
class Judgement:
    """What the classifier thinks of a set of samples; ``metrics`` is JSON-ready."""

    metrics: dict[str, Any]
    predictions: torch.Tensor = field(repr=False)  # (N,) predicted classes
    features: torch.Tensor = field(repr=False)  # (N, D) penultimate features

    @property
    def fd(self) -> float:
        return float(self.metrics["fd"])


@torch.no_grad()
def classify(model: nn.Module, layer: str, images: torch.Tensor, batch_size: int = JUDGE_BATCH
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features (N, D), probabilities (N, K))`` for float images in [0, 1]."""
    device = module_device(model)
    feats, probs = [], []
    with eval_mode(model), capture(model, [layer]) as out:
        for chunk in images.split(batch_size):
            logits = model(chunk.to(device).float())
            feats.append(out[layer].flatten(1).float().cpu())
            probs.append(F.softmax(logits.float(), 1).cpu())
    return torch.cat(feats), torch.cat(probs)


def entropy_bits(histogram: torch.Tensor) -> float:
    p = histogram.double()
    p = p[p > 0]
    return float(-(p * p.log2()).sum()) + 0.0  # not -0.0


class Judge:
    """A classifier with the real test set's reference statistics, ready to score samples.

    The test split is shuffled (``seed``) and cut into halves A and B of ``n`` images each;
    samples are compared with A, and A with B gives the floor.
    """

    def __init__(self, classifier: nn.Module, test: ImageSet, n: int = 5000, layer: str | None = None,
                 seed: int = 0):
        self.model = classifier
        self.layer = layer or default_layer(classifier)
        get_layer(classifier, self.layer)
        self.classes = list(test.classes)
        self.n = min(n, len(test) // 2)
        if self.n < 2:
            raise KangaeError(f"the {test.name} test split has {len(test)} images; "
                              "the judge needs at least 4")
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(test), generator=g)
        a, b = order[: self.n], order[self.n : 2 * self.n]
        feats_a, probs_a = classify(classifier, self.layer, test.images[a].float() / 255)
        feats_b, probs_b = classify(classifier, self.layer, test.images[b].float() / 255)
        self.reference: GaussianStats = gaussian_stats(feats_a)
        self.floor = self._fd(gaussian_stats(feats_b))
        k = len(self.classes)
        hist_b = torch.bincount(probs_b.argmax(1), minlength=k).double() / self.n
        self.real = {"fd_floor": self.floor, "confidence": float(probs_b.max(1).values.mean()),
                     "entropy_bits": entropy_bits(hist_b),
                     "accuracy": float((probs_b.argmax(1) == test.labels[b]).double().mean())}

    def _fd(self, stats: GaussianStats) -> float:
        r = self.reference
        return frechet_from_stats(r.mean, r.cov, stats.mean, stats.cov)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> Judgement:
        """Score float images in [0, 1] ``(N, C, H, W)``; ``labels`` are the asked-for classes."""
        feats, probs = classify(self.model, self.layer, images)
        pred = probs.argmax(1)
        k = len(self.classes)
        hist = torch.bincount(pred, minlength=k).double() / len(pred)
        metrics: dict[str, Any] = {
            "fd": self._fd(gaussian_stats(feats)),
            "fd_floor": self.floor,
            "confidence": float(probs.max(1).values.mean()),
            "entropy_bits": entropy_bits(hist),
            "max_entropy_bits": math.log2(k),
            "class_match": (float((pred == labels.cpu()).double().mean()) if labels is not None else None),
            "histogram": [round(float(h), 6) for h in hist],
            "n": int(len(pred)),
        }
        return Judgement(metrics, pred, feats)


def _cache_dir(dataset: str) -> Path:
    from ..data.store import cache_root

    return cache_root() / "judges" / f"{dataset}-{JUDGE_MODEL}-e{JUDGE_EPOCHS}"


def judge_classifier(dataset: str = "mnist", classifier: str | os.PathLike | None = None,
                     data_dir: str | os.PathLike | None = None, progress: bool = True,
                     device: str = "cpu") -> tuple[nn.Module, Path]:
    """The classifier that judges samples: ``classifier`` (a run folder) if given, else the one
    cached under the kangae cache dir, trained once (``fast-cnn``, 2 epochs) when missing.

    The cached run is trained in a temporary folder renamed into place, so a killed process
    never leaves half a judge; a cache trained on other data files is retrained.
    """
    from ..training.run import load, train

    if classifier is not None:
        run = load(classifier, device=device)
        if run.meta.dataset != dataset:
            raise KangaeError(f"classifier {classifier} was trained on '{run.meta.dataset}', "
                              f"not on '{dataset}'")
        return run.model, Path(run.path)
    from ..training.folders import cached_run

    folder = _cache_dir(dataset)
    source = load_dataset(dataset, "train", data_dir=data_dir).source

    def train_judge(out: Path) -> None:
        if progress:
            print(f"training the judge classifier ({JUDGE_MODEL}, {JUDGE_EPOCHS} epochs on {dataset}) "
                  f"once, into {folder}", flush=True)
        train(JUDGE_MODEL, dataset, out=out, epochs=JUDGE_EPOCHS, data_dir=data_dir, progress=progress,
              tensorboard=False, snapshots=False, device=device)

    # a cache trained on other data files is trained again
    cached_run(folder, train_judge, lambda f: load(f).config.get("train_source") == source)
    return load(folder, device=device).model, folder


def judge(images: torch.Tensor, labels: torch.Tensor | None = None, *, dataset: str = "mnist",
          classifier: str | os.PathLike | nn.Module | None = None, n_reference: int = 5000,
          data_dir: str | os.PathLike | None = None, seed: int = 0) -> Judgement:
    """One-shot scoring of ``images`` (float, [0, 1]) against ``dataset``'s test split."""
    model = classifier if isinstance(classifier, nn.Module) else judge_classifier(
        dataset, classifier, data_dir=data_dir)[0]
    test = load_dataset(dataset, "test", data_dir=data_dir)
    return Judge(model, test, n=min(n_reference, len(images)), seed=seed)(images, labels)
