"""``kangae explain`` and ``kangae explain-bench``: explanations saved as panels, and measured.

``write_explanations`` explains a batch of pictures (user files, MNIST-style preprocessed,
or test images) with one method and writes one panel PNG per image, the 28x28 image the
model saw, and ``explanations.json``. ``explain_bench`` scores every method (and a random
baseline) for faithfulness and writes ``bench.json`` and ``bench.md``.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..data.cluttered import load_cluttered
from ..data.dataset import load_dataset
from ..data.preprocess import Preprocessed
from ..data.store import cache_root
from ..errors import KangaeError
from ..probes.attribution import METHODS, explain
from ..probes.explanation import Explanation
from ..probes.faithfulness import deletion_insertion, pointing_hits, sanity_check
from ..probes.registry import explainers
from ..render.explain import save_panel
from ..render.images import save_image
from ..utils.atomic import write_bytes, write_json

BENCH_METHODS = METHODS  # every registered method
CLUTTERED_MODEL = "cluttered-global-cnn-v1"


def parse_target(text: str, num_classes: int, classes: Sequence[str]) -> str | int:
    """'auto', a class index, or a class name."""
    if text == "auto":
        return "auto"
    if text in classes:
        return list(classes).index(text)
    if text.isdigit() and 0 <= int(text) < num_classes:
        return int(text)
    raise KangaeError(f"invalid target '{text}'; use auto or a class: {', '.join(classes)}")


def _stem(text: str, i: int) -> str:
    name = Path(text).stem if text else f"image{i}"
    return f"{i:02d}-" + (re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:40] or "image")


def write_explanations(model: torch.nn.Module, classes: Sequence[str], images: torch.Tensor,
                       out: str | os.PathLike, method: str = "mask", target: str | int = "auto",
                       sources: Sequence[str] = (), pictures: Sequence[Preprocessed] = (),
                       **options: Any) -> dict[str, Any]:
    """Explain ``images`` (N, 1, H, W) in one batch and write a panel per image."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    e = explain(model, images, target, method=method, **options)
    seconds = time.perf_counter() - start
    entries = []
    for i in range(len(e)):
        source = sources[i] if i < len(sources) else ""
        stem = _stem(source, i)
        perturbed = None
        if e.perturbed is not None:
            perturbed = e.perturbed[i] if e.perturbed.ndim == 4 else e.perturbed[i, 0]
        line = e.summary(i, classes)
        save_panel(out / f"{stem}-panel.png", images[i], e.attribution[i], perturbed, title=line)
        save_image(images[i], out / f"{stem}-seen.png", scale=1)
        entry: dict[str, Any] = {
            "source": source, "target": int(e.target[i]), "class": classes[int(e.target[i])],
            "prob": float(e.prob[i]), "summary": line,
            "files": [f"{stem}-panel.png", f"{stem}-seen.png"],
        }
        if i < len(pictures):
            entry["inverted"] = pictures[i].inverted
            entry["preprocessing"] = pictures[i].describe()
        if e.prob_after is not None:
            entry["prob_after"] = e.prob_after[i].tolist()
            entry["area"] = e.area[i].tolist()
        entries.append(entry)
    result = {"method": method, "seconds": seconds, "metrics": e.metrics, "images": entries}
    write_json(out / "explanations.json", result)
    return result


def _mean_se(values: torch.Tensor) -> tuple[float, float]:
    v = values.double().flatten()
    v = v[~torch.isnan(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    se = float(v.std() / math.sqrt(len(v))) if len(v) > 1 else 0.0
    return float(v.mean()), se


def cluttered_model(data_dir: str | None = None, progress: bool = False) -> Any:
    """The small cluttered-MNIST classifier the pointing game needs: loaded from the cache,
    or trained once (about a minute on 2 cores) and moved into the cache in one rename."""
    from ..train.run import load, train

    final = cache_root() / "models" / CLUTTERED_MODEL
    if (final / "checkpoints" / "latest.json").is_file():
        return load(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{CLUTTERED_MODEL}.", suffix=".tmp"))
    try:
        train("global-cnn", "cluttered-mnist", out=tmp / "run", data_dir=data_dir, progress=progress,
              tensorboard=False, snapshots=False, device="cpu")
        try:
            os.replace(tmp / "run", final)
        except OSError:  # another process finished first: use theirs
            if not (final / "checkpoints" / "latest.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load(final)


def _explainer(method: str, options: dict[str, Any]) -> Callable[..., torch.Tensor]:
    return lambda m, x, t: explain(m, x, t, method=method, **options).attribution


def explain_bench(run: Any, out: str | os.PathLike, methods: Sequence[str] = BENCH_METHODS,
                  n: int = 100, n_pointing: int = 200, n_sanity: int = 32, mask_steps: int = 150,
                  cluttered_run: Any = None, seed: int = 0,
                  log: Callable[[str], None] = lambda s: None,
                  data_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Deletion/insertion AUC and a sanity check on ``run``'s test set, and the pointing game
    on cluttered MNIST, for every method; writes ``bench.json`` and ``bench.md``."""
    for m in methods:
        if m not in METHODS:
            raise KangaeError(f"unknown method '{m}'; valid: {', '.join(METHODS)}")
    specs = explainers()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    test = run.dataset("test", data_dir=data_dir).subset(n, seed=seed)
    x, y = test.floats(), test.labels
    model = run.model
    conv = any(isinstance(mod, torch.nn.Conv2d) for mod in model.modules())
    if cluttered_run is None and n_pointing > 0:
        log("pointing game: loading (or training once) the cluttered-MNIST model")
        cluttered_run = cluttered_model(data_dir)
    clut = load_cluttered("test", data_dir) if n_pointing > 0 else None
    if clut is not None:
        xc, yc = clut.data.floats()[:n_pointing], clut.data.labels[:n_pointing]
        boxes = clut.boxes[:n_pointing]
    rows: dict[str, dict[str, Any]] = {}
    for method in methods:
        opts = {"steps": mask_steps} if "steps" in specs[method].options else {}
        row: dict[str, Any] = {}
        start = time.perf_counter()
        if specs[method].needs_conv and not conv:
            row["skipped"] = "the model has no convolutional layer"
        else:
            e: Explanation = explain(model, x, y, method=method, seed=seed, **opts)
            scores = deletion_insertion(model, x, e.attribution, e.target, seed=seed)
            row["deletion"] = _mean_se(scores["deletion"])
            row["insertion"] = _mean_se(scores["insertion"])
            k = min(n_sanity, len(x))
            rho = sanity_check(_explainer(method, {**opts, "seed": seed}), model, x[:k], y[:k], seed=seed)
            row["sanity_spearman"] = _mean_se(rho)
        if clut is not None:
            ec = explain(cluttered_run.model, xc, yc, method=method, seed=seed, **opts)
            row["pointing"] = _mean_se(pointing_hits(ec.attribution, boxes).float())
        row["seconds"] = time.perf_counter() - start
        rows[method] = row
        log(_format_row(method, row))
    goals = _goals(rows)
    result = {"model": run.meta.model, "run": str(run.path), "n": len(x), "n_pointing": n_pointing,
              "n_sanity": n_sanity, "mask_steps": mask_steps, "methods": rows, "goals": goals,
              "pointing_model": str(cluttered_run.path) if cluttered_run is not None else None,
              "pointing_tolerance_px": 1}
    write_json(out / "bench.json", result)
    write_bytes(out / "bench.md", markdown_table(result).encode())
    return result


def _fmt(v: Any, pct: bool = False) -> str:
    if not isinstance(v, (list, tuple)) or math.isnan(v[0]):
        return "-"
    return f"{v[0]:.1%} ± {v[1]:.1%}" if pct else f"{v[0]:.3f} ± {v[1]:.3f}"


def _format_row(method: str, row: dict[str, Any]) -> str:
    if "skipped" in row and "pointing" not in row:
        return f"{method:11s} skipped: {row['skipped']}"
    return (f"{method:11s} deletion {_fmt(row.get('deletion'))}  insertion {_fmt(row.get('insertion'))}"
            f"  pointing {_fmt(row.get('pointing'), True)}  sanity rho {_fmt(row.get('sanity_spearman'))}"
            f"  ({row['seconds']:.1f} s)")


def _goals(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    def get(m: str, k: str) -> float:
        v = rows.get(m, {}).get(k)
        return v[0] if v else float("nan")

    best = max(((get(m, "pointing"), m) for m in rows if not math.isnan(get(m, "pointing"))),
               default=(float("nan"), None))
    return {
        "mask_deletion_beats_saliency": get("mask", "deletion") < get("saliency", "deletion"),
        "mask_deletion_beats_random": get("mask", "deletion") < get("random", "deletion"),
        "best_pointing": {"method": best[1], "rate": best[0], "goal": 0.9, "met": best[0] >= 0.9},
    }


def markdown_table(result: dict[str, Any]) -> str:
    lines = [f"# Faithfulness of explanations: {result['model']} ({result['run']})", "",
             f"Deletion/insertion AUC on {result['n']} test images (lower deletion and higher "
             "insertion are better; pixels go to 0 in the explanation's order). Pointing game on "
             f"{result['n_pointing']} cluttered-MNIST canvases (hit: maximum within 1 px of the digit's "
             f"box). Sanity: Spearman correlation with the explanation of a randomized model on "
             f"{result['n_sanity']} images (lower means the method depends on the weights). "
             "Mean ± standard error.", "",
             "| method | deletion AUC ↓ | insertion AUC ↑ | pointing game ↑ | sanity ρ ↓ | seconds |",
             "|---|---|---|---|---|---|"]
    for m, row in result["methods"].items():
        lines.append(f"| {m} | {_fmt(row.get('deletion'))} | {_fmt(row.get('insertion'))} | "
                     f"{_fmt(row.get('pointing'), True)} | {_fmt(row.get('sanity_spearman'))} | "
                     f"{row['seconds']:.1f} |")
    g = result["goals"]
    lines += ["", f"- mask deletion AUC beats saliency: {g['mask_deletion_beats_saliency']}; "
              f"beats random: {g['mask_deletion_beats_random']}",
              f"- best pointing game: {g['best_pointing']['method']} "
              f"{g['best_pointing']['rate']:.1%} (goal ≥ 90%: {g['best_pointing']['met']})", ""]
    return "\n".join(lines)


def test_images(run: Any, count: int, data_dir: str | os.PathLike | None = None
                ) -> tuple[torch.Tensor, list[str]]:
    """The first ``count`` test images of the run's dataset, with names for their files."""
    data = load_dataset(run.meta.dataset, "test", data_dir=data_dir)
    count = min(count, len(data))
    names = [f"test-{i}-label-{data.classes[int(data.labels[i])]}" for i in range(count)]
    return data.floats()[:count], names
