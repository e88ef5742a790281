"""Maps of a hidden layer over training: UMAP per epoch, aligned so frames do not jump (post 003).

Post 003 fits UMAP to the CNN's Dense-512 output after every epoch and draws the frames
as an animation; separately fitted maps rotate, flip and jump between frames. kangae
starts each epoch's UMAP from the previous epoch's layout and then rotates/reflects it
onto the previous frame (orthogonal Procrustes), so motion in the animation is motion in
the representation. Test points are placed into each epoch's map with ``transform``.

Per frame it measures k-NN accuracy of the test points among the train points, in the
map and in the raw features; the silhouette of the classes in the map; and the mean
displacement of points between consecutive frames (for aligned and, optionally,
independently fitted maps).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .display import Shows


@dataclass
class EmbeddingResult(Shows):
    """``train`` ``(E, N, 2)`` and ``test`` ``(E, M, 2)`` coordinates for each epoch."""

    epochs: list[int]
    train: np.ndarray
    test: np.ndarray | None
    train_labels: np.ndarray
    test_labels: np.ndarray | None
    metrics: list[dict[str, Any]] = field(default_factory=list)

    picture_name = "embedding.png"

    def picture(self, classes: Sequence[str] | None = None) -> Any:
        """The last epoch's map: train points by class, test points as stars."""
        from ..render.embedding import embedding_frame

        return embedding_frame(self, -1, _names(self, classes))

    def tensors(self) -> dict[str, torch.Tensor]:
        """The coordinates and labels, as tensors."""
        arrays = {"train": self.train, "test": self.test, "train_labels": self.train_labels,
                  "test_labels": self.test_labels}
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items() if v is not None}

    def save(self, folder: str | Path, *, classes: Sequence[str] | None = None,  # type: ignore[override]
             label: str = "", extra: dict[str, Any] | None = None) -> Path:
        """The files ``kangae dynamics`` writes: ``embedding.gif`` (and ``.mp4`` with ffmpeg),
        ``dynamics.png`` (the metrics over epochs), ``dynamics.json`` (``extra``, the epochs
        and each frame's metrics), and the coordinates in ``tensors.safetensors``."""
        from ..render.embedding import plot_dynamics_metrics, save_embedding_animation
        from ..utils.atomic import write_json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files = save_embedding_animation(self, _names(self, classes), folder / "embedding.gif", label=label)
        plot_dynamics_metrics(self.metrics, folder / "dynamics.png")
        write_json(folder / "dynamics.json", {**(extra or {}), "epochs": list(self.epochs),
                                              "frames": self.metrics, "files": [p.name for p in files]})
        self._save_tensors(folder)
        return folder


def _names(result: EmbeddingResult, classes: Sequence[str] | None) -> list[str]:
    if classes:
        return list(classes)
    labels = [result.train_labels] + ([result.test_labels] if result.test_labels is not None else [])
    return [str(k) for k in range(int(max(int(v.max()) for v in labels if len(v))) + 1)]


def _procrustes(moving: np.ndarray, target: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The rotation/reflection (with centring) that brings ``moving`` closest to ``target``."""
    from scipy.linalg import orthogonal_procrustes

    mc, tc = moving.mean(0), target.mean(0)
    r, _ = orthogonal_procrustes(moving - mc, target - tc)
    return lambda points: (points - mc) @ r + tc


def knn_accuracy(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray,
                 test_labels: np.ndarray, k: int = 5) -> float:
    from sklearn.neighbors import KNeighborsClassifier

    return float(KNeighborsClassifier(k).fit(train, train_labels).score(test, test_labels))


def _silhouette(points: np.ndarray, labels: np.ndarray, n: int = 2000, seed: int = 0) -> float:
    from sklearn.metrics import silhouette_score

    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(silhouette_score(points, labels, sample_size=min(n, len(points)), random_state=seed))


def _umap(n_neighbors: int, min_dist: float, seed: int, init: Any):
    import umap

    return umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, random_state=seed, init=init,
                     n_components=2)


def warm_up(seed: int = 0) -> float:
    """Compile UMAP's numba kernels once on a tiny problem; returns the seconds it took."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    # above 4,096 points UMAP switches to NN-descent: compile that path too
    x = rng.normal(size=(4200, 4)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = _umap(10, 0.1, seed, "spectral").fit(x)
        m.transform(x[:50])
        _umap(10, 0.1, seed, m.embedding_).fit(x)
    return time.perf_counter() - t0


def embed_epochs(train_features: Sequence[torch.Tensor], train_labels: torch.Tensor,
                 test_features: Sequence[torch.Tensor] | None = None,
                 test_labels: torch.Tensor | None = None, epochs: Sequence[int] | None = None, *,
                 aligned: bool = True, compare_unaligned: bool = False, n_neighbors: int = 15,
                 min_dist: float = 0.1, seed: int = 0, k: int = 5,
                 progress: Callable[[str], None] | None = None) -> EmbeddingResult:
    """2-d maps of each epoch's features (``(N, D)`` each), aligned across epochs."""
    say = progress or (lambda msg: None)
    epochs = list(epochs if epochs is not None else range(len(train_features)))
    y = train_labels.numpy()
    y_test = test_labels.numpy() if test_labels is not None else None
    maps, test_maps, metrics = [], [], []
    prev = prev_free = None
    for i, epoch in enumerate(epochs):
        x = train_features[i].float().numpy()
        t0 = time.perf_counter()
        say(f"epoch {epoch}: UMAP of {x.shape[0]:,} x {x.shape[1]}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            init = prev if (aligned and prev is not None) else "spectral"
            model = _umap(n_neighbors, min_dist, seed, init).fit(x)
            emb = model.embedding_.astype(np.float64)
            if aligned and prev is not None:
                align = _procrustes(emb, prev)
                emb = align(emb)
            row: dict[str, Any] = {"epoch": epoch}
            if test_features is not None:
                xt = test_features[i].float().numpy()
                et = model.transform(xt).astype(np.float64)
                if aligned and prev is not None:
                    et = align(et)
                test_maps.append(et)
                row["knn_map"] = knn_accuracy(emb, y, et, y_test, k)
                row["knn_features"] = knn_accuracy(x, y, xt, y_test, k)
            row["silhouette"] = _silhouette(emb, y, seed=seed)
            if prev is not None:
                row["displacement"] = float(np.linalg.norm(emb - prev, axis=1).mean())
            if compare_unaligned:
                free = _umap(n_neighbors, min_dist, seed, "spectral").fit(x).embedding_.astype(np.float64)
                if prev_free is not None:
                    row["displacement_unaligned"] = float(np.linalg.norm(free - prev_free, axis=1).mean())
                prev_free = free
        row["seconds"] = time.perf_counter() - t0
        metrics.append(row)
        maps.append(emb)
        prev = emb
    return EmbeddingResult(epochs, np.stack(maps), np.stack(test_maps) if test_maps else None,
                           y, y_test, metrics)
