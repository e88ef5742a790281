"""``kangae dynamics``: the recorded hidden-layer snapshots of a run as aligned UMAP maps."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ..errors import KangaeError
from ..probes.embeddings import embed_epochs, warm_up
from ..training.run import Run
from ..training.snapshots import read_snapshot, read_subset, snapshot_epochs


def write_dynamics(run: Run, out: str | Path, layer: str | None = None, *,
                   compare_unaligned: bool = True, n_neighbors: int = 15, min_dist: float = 0.1,
                   seed: int = 0, progress: bool = True) -> dict[str, Any]:
    epochs = snapshot_epochs(run.path)
    if not epochs:
        raise KangaeError(f"{run.path}: no snapshots (train with snapshots on, the default)")
    subset, meta = read_subset(run.path)
    if layer and layer != meta["layer"]:
        raise KangaeError(f"{run.path} recorded layer '{meta['layer']}', not '{layer}'; train "
                          f"with --snapshot-layer {layer} to record it")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(epochs) + 1, file=sys.stderr, disable=not progress, unit="frame",
               dynamic_ncols=True)
    bar.set_description("compiling UMAP kernels (numba: once per process, 20-30 s on 2 cores)")
    compile_s = warm_up(seed)
    bar.update(1)

    snaps = [read_snapshot(run.path, e) for e in epochs]
    has_test = "test" in snaps[0]
    started: list[str] = []

    def step(msg: str) -> None:
        if started:  # the previous epoch's frame is done
            bar.update(1)
        started.append(msg)
        bar.set_description(msg)

    result = embed_epochs([s["train"] for s in snaps], subset["train_labels"],
                          [s["test"] for s in snaps] if has_test else None,
                          subset.get("test_labels"), epochs, compare_unaligned=compare_unaligned,
                          n_neighbors=n_neighbors, min_dist=min_dist, seed=seed, progress=step)
    bar.update(1)
    bar.close()
    label = f"{run.meta.model} '{meta['layer']}'"
    result.save(out, classes=run.classes, label=label,
                extra={"run": str(run.path), "layer": meta["layer"],
                       "n_train": int(len(subset["train_labels"])), "compile_seconds": compile_s})
    return json.loads((out / "dynamics.json").read_text())
