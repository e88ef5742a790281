"""Animated embedding maps: train points by class, test points as stars (post 003)."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..utils.atomic import atomic_path
from .plots import pyplot, save_figure


def _frame(plt: Any, train: np.ndarray, y: np.ndarray, test: np.ndarray | None,
           y_test: np.ndarray | None, classes: Sequence[str], title: str, lims: tuple) -> Image.Image:
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    colors = cmap(y % cmap.N)
    ax.scatter(train[:, 0], train[:, 1], c=colors, s=3, alpha=0.6, linewidths=0)
    if test is not None:
        ax.scatter(test[:, 0], test[:, 1], c=cmap(y_test % cmap.N), s=28, marker="*",
                   edgecolors="black", linewidths=0.3)
    for k, name in enumerate(classes):
        pts = train[y == k]
        if len(pts):
            cx, cy = np.median(pts, axis=0)
            ax.text(cx, cy, name, fontsize=11, weight="bold", ha="center", va="center",
                    bbox={"boxstyle": "round", "fc": "white", "alpha": 0.7, "lw": 0})
    ax.set(xlim=lims[0], ylim=lims[1], xticks=[], yticks=[], title=title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _limits(result: Any) -> tuple:
    """Axis limits holding every epoch's points, with a 5% margin (the same in every frame)."""
    pts = [result.train] + ([result.test] if result.test is not None else [])
    allpts = np.concatenate([p.reshape(-1, 2) for p in pts])
    lo, hi = allpts.min(0), allpts.max(0)
    pad = (hi - lo) * 0.05
    return ((lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1]))


def embedding_frame(result: Any, i: int, classes: Sequence[str], label: str = "",
                    lims: tuple | None = None) -> Image.Image:
    """Epoch ``result.epochs[i]``'s map as a picture, titled with its k-NN accuracy."""
    m = result.metrics[i] if result.metrics else {}
    knn = f", k-NN {m['knn_map']:.1%}" if "knn_map" in m else ""
    return _frame(pyplot(), result.train[i], result.train_labels,
                  None if result.test is None else result.test[i], result.test_labels,
                  classes, f"{label} epoch {result.epochs[i]}{knn}".strip(), lims or _limits(result))


def save_embedding_animation(result: Any, classes: Sequence[str], path: str | os.PathLike,
                             label: str = "", duration_ms: int = 700) -> list[Path]:
    """A GIF of every epoch's map (and an MP4 when ffmpeg is on the PATH)."""
    plt = pyplot()
    lims = _limits(result)
    frames = [embedding_frame(result, i, classes, label, lims) for i in range(len(result.epochs))]
    size = frames[0].size
    frames = [f.resize(size) for f in frames]
    path = Path(path)
    with atomic_path(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:],
                       duration=[duration_ms] * (len(frames) - 1) + [duration_ms * 4], loop=0)
    written = [path]
    if shutil.which("ffmpeg"):
        import matplotlib.animation as animation

        fig = plt.figure(figsize=(size[0] / 80, size[1] / 80), dpi=80)
        ax = fig.add_axes([0, 0, 1, 1])
        ax.axis("off")
        im = ax.imshow(frames[0])
        anim = animation.FuncAnimation(fig, lambda i: [im.set_data(frames[i])], frames=len(frames))
        mp4 = path.with_suffix(".mp4")
        anim.save(mp4, writer=animation.FFMpegWriter(fps=max(1, 1000 // duration_ms)))
        plt.close(fig)
        written.append(mp4)
    return written


def plot_dynamics_metrics(metrics: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """k-NN accuracy, silhouette and displacement over epochs."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.3))
    ep = [m["epoch"] for m in metrics]
    if "knn_map" in metrics[0]:
        axes[0].plot(ep, [m["knn_map"] for m in metrics], "-o", ms=3, label="in the map")
        axes[0].plot(ep, [m["knn_features"] for m in metrics], "-s", ms=3, label="in the features")
        axes[0].legend()
    axes[0].set(title="test k-NN accuracy", xlabel="epoch")
    axes[1].plot(ep, [m["silhouette"] for m in metrics], "-o", ms=3)
    axes[1].set(title="silhouette of classes (map)", xlabel="epoch")
    later = [m for m in metrics if "displacement" in m]
    if later:
        axes[2].plot([m["epoch"] for m in later], [m["displacement"] for m in later], "-o", ms=3,
                     label="aligned")
        if "displacement_unaligned" in later[0]:
            axes[2].plot([m["epoch"] for m in later], [m["displacement_unaligned"] for m in later],
                         "-s", ms=3, label="fitted independently")
        axes[2].legend()
    axes[2].set(title="mean point displacement", xlabel="epoch")
    for ax in axes:
        ax.grid(alpha=0.3)
    return save_figure(fig, path)
