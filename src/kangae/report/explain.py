"""``kangae explain`` and ``kangae explain-bench``: explanations saved as panels, and measured.

``write_explanations`` explains a batch of pictures (user files, MNIST-style preprocessed,
or test images) with one method and writes one panel PNG per image, the 28x28 image the
model saw, and ``explanations.json``. ``explain_bench`` scores every method (and a random
baseline) for faithfulness and writes ``bench.json`` and ``bench.md``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data.cluttered import load_cluttered
from ..data.preprocess import Preprocessed
from ..data.store import cache_root
from ..errors import KangaeError
from ..probes._model import input_shape_of, readings
from ..probes.attribution import METHODS, explain
from ..probes.explanation import Explanation, degenerate
from ..probes.faithfulness import (
    ROAD_FRACTIONS,
    CascadeResult,
    cascading_randomization,
    centre_map,
    complexity,
    deletion_insertion,
    difficult,
    infidelity,
    max_sensitivity,
    mean_and_se,
    pointing_hits,
    random_logit,
    road,
    sparseness,
)
from ..probes.registry import explainers
from ..render.plots import plot_cascade
from ..utils import shard
from ..utils.atomic import write_bytes, write_json

BENCH_METHODS = METHODS  # every registered method (the tour's table)
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


def write_explanations(model: torch.nn.Module, classes: Sequence[str], images: torch.Tensor,
                       out: str | os.PathLike, method: str = "mask", target: str | int = "auto",
                       sources: Sequence[str] = (), pictures: Sequence[Preprocessed] = (),
                       **options: Any) -> tuple[Explanation, dict[str, Any]]:
    """Explain ``images`` (N, C, H, W) in one batch and write what :meth:`Explanation.save`
    writes (a panel per image, the input as seen, ``explanations.json``); returns the
    explanation and that JSON."""
    start = time.perf_counter()
    e = explain(model, images, target, method=method, **options)
    seconds = time.perf_counter() - start
    e.save(out, classes=classes, sources=sources, pictures=pictures, extra={"seconds": seconds})
    return e, json.loads((Path(out) / "explanations.json").read_text())


def cluttered_model(data_dir: str | None = None, progress: bool = False) -> Any:
    """The small cluttered-MNIST classifier the pointing game needs: loaded from the cache,
    or trained once (about a minute on 2 cores) and moved into the cache in one rename."""
    from ..training.folders import cached_run
    from ..training.run import load, train

    folder = cached_run(cache_root() / "models" / CLUTTERED_MODEL, lambda out: train(
        "global-cnn", "cluttered-mnist", out=out, data_dir=data_dir, progress=progress,
        tensorboard=False, snapshots=False, device="cpu"))
    return load(folder)


def _explainer(method: str, options: dict[str, Any]) -> Callable[..., torch.Tensor]:
    return lambda m, x, t: explain(m, x, t, method=method, **options).attribution


def _put(row: dict[str, Any], key: str, values: torch.Tensor) -> None:
    row[key], row.setdefault("n", {})[key] = mean_and_se(values)


@dataclass(frozen=True)
class BenchSizes:
    """How many images each group of metrics uses (the expensive ones use fewer)."""

    n: int = 100  # deletion, insertion, ROAD, infidelity, sparseness, complexity
    n_pointing: int = 200  # cluttered canvases for the pointing game
    n_sanity: int = 32  # cascading randomization and the random-logit test
    n_robust: int = 16  # max-sensitivity (each image explained n_perturb times more)
    n_perturb: int = 8


Task = Callable[[], dict[str, Any]]


def _check_fits(run: Any, shape: tuple[int, ...]) -> None:
    """The pointing game's model must take the cluttered canvases; a run trained on another
    dataset is one clear line, not a shape error deep in the first forward pass."""
    try:
        takes = tuple(input_shape_of(run.model))
    except KangaeError:
        return  # the model does not say; its first forward pass will
    if takes != shape:
        raise KangaeError(f"the pointing game's model ({run.path}) takes {list(takes)} pictures, not the "
                          f"{list(shape)} cluttered-MNIST canvases: give --cluttered-run a run trained on "
                          "cluttered-mnist, or leave it out to train one")


def _faithfulness_task(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, method: str,
                       opts: dict[str, Any], seed: int) -> Task:
    """One block's explanations and their per-image scores (NaN for a degenerate map)."""

    def run() -> dict[str, Any]:
        e: Explanation = explain(model, x, y, method=method, seed=seed, **opts)
        a, t = e.attribution, e.target
        scores = deletion_insertion(model, x, a, t, seed=seed)
        r = road(model, x, a, t, seed=seed)
        return {"degenerate": degenerate(a), "deletion": scores["deletion"],
                "insertion": scores["insertion"], "road_morf": r["morf_mean"], "road_lerf": r["lerf_mean"],
                "morf": r["morf"], "lerf": r["lerf"],
                "infidelity": infidelity(model, x, a, t, seed=seed),
                "sparseness": sparseness(a), "complexity": complexity(a)}

    return run


def _robust_task(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, method: str,
                 opts: dict[str, Any], n_perturb: int, seed: int) -> Task:
    explainer = _explainer(method, {**opts, "seed": seed})
    return lambda: {"max_sensitivity": max_sensitivity(explainer, model, x, y, n_perturb, seed=seed)}


def _sanity_task(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, method: str,
                 opts: dict[str, Any], num_classes: int, seed: int, block_seed: int) -> Task:
    """Cascading randomization (to the same random weights, from ``seed``, in every block) and
    the random-logit test of one block."""
    explainer = _explainer(method, {**opts, "seed": block_seed})

    def run() -> dict[str, Any]:
        cascade = cascading_randomization(explainer, model, x, y, seed=seed)
        logit = random_logit(explainer, model, x, y, num_classes, seed=block_seed)
        return {"layers": cascade.layers, "spearman": cascade.spearman, "ssim": cascade.ssim,
                "degenerate": cascade.degenerate, "logit_ssim": logit["ssim"],
                "logit_spearman": logit["spearman"]}

    return run


def _pointing_task(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, boxes: torch.Tensor,
                   method: str, opts: dict[str, Any], seed: int) -> Task:
    def run() -> dict[str, Any]:
        ec = explain(model, x, y, method=method, seed=seed, **opts)
        bad = degenerate(ec.attribution)
        hits = pointing_hits(ec.attribution, boxes, POINTING_TOLERANCE).float()
        return {"hits": hits.masked_fill(bad, float("nan")), "degenerate": bad}

    return run


def _cat(parts: list[dict[str, Any]], key: str, dim: int = 0) -> torch.Tensor:
    return torch.cat([p[key] for p in parts], dim)


def _faithfulness_row(row: dict[str, Any], parts: list[dict[str, Any]]) -> None:
    """The faithfulness scores over all blocks; degenerate maps are counted and left out."""
    bad = _cat(parts, "degenerate")
    row["images"] = len(bad)
    row["degenerate"] = int(bad.sum())
    for key in ("deletion", "insertion", "road_morf", "road_lerf"):
        _put(row, key, _cat(parts, key))
    ok = ~bad
    row["road_curves"] = {"fractions": list(ROAD_FRACTIONS),
                          "morf": _cat(parts, "morf")[ok].mean(0).tolist() if ok.any() else [],
                          "lerf": _cat(parts, "lerf")[ok].mean(0).tolist() if ok.any() else []}
    for key in ("infidelity", "sparseness", "complexity"):
        _put(row, key, _cat(parts, key))


def _sanity_row(row: dict[str, Any], parts: list[dict[str, Any]]) -> None:
    """Cascading randomization (its last step is the full randomization, reported as
    ``sanity_spearman`` as before) and the random-logit test, over all blocks."""
    layers = parts[0]["layers"]
    rho, sim, bad = (_cat(parts, k, 1) for k in ("spearman", "ssim", "degenerate"))
    row["cascade"] = CascadeResult(layers, rho, sim, bad).summary()
    if len(layers):
        _put(row, "sanity_spearman", rho[-1])
        _put(row, "sanity_ssim", sim[-1])
        row["sanity_degenerate"] = int(bad[-1].sum())
    logit_ssim = _cat(parts, "logit_ssim")
    row["sanity_images"] = len(logit_ssim)
    row["random_logit_degenerate"] = int(torch.isnan(logit_ssim).sum())
    _put(row, "random_logit_ssim", logit_ssim)
    _put(row, "random_logit_spearman", _cat(parts, "logit_spearman"))


def _seeded(count: int, size: int, seed: int) -> list[tuple[slice, int]]:
    """The blocks of ``count`` images, each with its seed (none for no images)."""
    parts = shard.blocks(count, size) if count else []
    return [(part, shard.block_seed(seed, b)) for b, part in enumerate(parts)]


# images per block of work: a block's numbers do not depend on which process computes it
BENCH_BLOCK = 32


def explain_bench(run: Any, out: str | os.PathLike, methods: Sequence[str] = BENCH_METHODS,
                  n: int = 100, n_pointing: int = 200, n_sanity: int = 32, mask_steps: int = 150,
                  cluttered_run: Any = None, seed: int = 0,
                  log: Callable[[str], None] = lambda s: None,
                  data_dir: str | os.PathLike | None = None, n_robust: int = 16,
                  options: dict[str, dict[str, Any]] | None = None,
                  block: int | None = None) -> dict[str, Any]:
    """Every faithfulness score of every method on ``run``'s test set, and the pointing game
    on cluttered MNIST (with a centre baseline and the difficult subset); writes
    ``bench.json``, ``bench.md``, ``pointing.csv`` and ``cascade.png``. ``options`` gives
    per-method settings (e.g. ``{"rise": {"n_masks": 1000}}``).

    The images go in blocks of ``block`` (default :data:`BENCH_BLOCK`), block ``b`` seeded
    ``kangae.utils.shard.block_seed(seed, b)``; under ``torchrun`` the processes share the
    blocks and rank 0 writes the files, with the numbers one process gets."""
    specs = explainers()
    for m in methods:
        if m not in specs:
            raise KangaeError(f"unknown method '{m}'; valid: {', '.join(specs)}")
    size = block or BENCH_BLOCK
    sizes = BenchSizes(n, n_pointing, n_sanity, n_robust)
    out = Path(out)
    main = shard.is_main()
    say = log if main else (lambda s: None)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    test = run.dataset("test", data_dir=data_dir).subset(n, seed=seed)
    x, y = test.floats(), test.known_labels
    model = run.model
    if y is None:  # unlabelled pictures: explain the class the model reads in each
        y = readings(model, x)
        say(f"{test.name}: unlabelled, so each picture's explanation is of the class the model reads")
    num_classes = len(run.meta.classes)
    conv = any(isinstance(mod, torch.nn.Conv2d) for mod in model.modules())
    if cluttered_run is None and n_pointing > 0:
        say("pointing game: loading (or training once) the cluttered-MNIST model")
        cluttered_run = shard.main_first(lambda: cluttered_model(data_dir))
    clut = load_cluttered("test", data_dir) if n_pointing > 0 else None
    if clut is not None:
        _check_fits(cluttered_run, tuple(clut.data.images.shape[1:]))
    baselines: dict[str, Any] = {}
    if clut is not None:
        xc, yc = clut.data.floats()[:n_pointing], clut.data.labels[:n_pointing]
        boxes = clut.boxes[:n_pointing]
        hard = difficult(xc, boxes, POINTING_TOLERANCE)
        centre = pointing_hits(centre_map(len(xc), tuple(xc.shape[-2:])), boxes, POINTING_TOLERANCE)
        baselines["center"] = _pointing_row(centre.float(), hard)
    k_sanity, k_robust = min(n_sanity, len(x)), min(sizes.n_robust, len(x))
    rows: dict[str, dict[str, Any]] = {}
    for method in methods:
        spec = specs[method]
        opts = {"steps": mask_steps} if "steps" in spec.options else {}
        opts.update((options or {}).get(method, {}))
        row: dict[str, Any] = {}
        start = time.perf_counter()
        tasks: list[tuple[str, Task]] = []
        if spec.needs_conv and not conv:
            row["skipped"] = "the model has no convolutional layer"
        else:
            tasks += [("faith", _faithfulness_task(model, x[p], y[p], method, opts, s))
                      for p, s in _seeded(len(x), size, seed)]
            tasks += [("robust", _robust_task(model, x[p], y[p], method, opts, sizes.n_perturb, s))
                      for p, s in _seeded(k_robust, size, seed)]
            tasks += [("sanity", _sanity_task(model, x[p], y[p], method, opts, num_classes, seed, s))
                      for p, s in _seeded(k_sanity, size, seed)]
        if clut is not None:
            tasks += [("point", _pointing_task(cluttered_run.model, xc[p], yc[p], boxes[p], method, opts, s))
                      for p, s in _seeded(len(xc), size, seed)]
        results = shard.run_tasks([task for _, task in tasks])
        parts = {g: [r for (kind, _), r in zip(tasks, results) if kind == g]
                 for g in ("faith", "robust", "sanity", "point")}
        if parts["faith"]:
            _faithfulness_row(row, parts["faith"])
            if parts["robust"]:
                _put(row, "max_sensitivity", _cat(parts["robust"], "max_sensitivity"))
            _sanity_row(row, parts["sanity"])
        if parts["point"]:
            point = _pointing_row(_cat(parts["point"], "hits"), hard)
            row.setdefault("n", {}).update(point.pop("n"))
            row.update(point)
            row["pointing_degenerate"] = int(_cat(parts["point"], "degenerate").sum())
        row["seconds"] = time.perf_counter() - start
        rows[method] = row
        say(_format_row(method, row))
    goals = _goals(rows)
    result = {"model": run.meta.model, "run": str(run.path), "n": len(x), "n_pointing": n_pointing,
              "n_sanity": k_sanity, "n_robust": k_robust, "mask_steps": mask_steps, "methods": rows,
              "goals": goals, "pointing_baselines": baselines,
              "n_difficult": int(hard.sum()) if clut is not None else 0,
              "pointing_model": str(cluttered_run.path) if cluttered_run is not None else None,
              "pointing_tolerance_px": POINTING_TOLERANCE, "road_fractions": list(ROAD_FRACTIONS),
              "block": size, "processes": shard.rank_and_world()[1]}
    if not main:
        return result
    write_json(out / "bench.json", result)
    write_bytes(out / "bench.md", markdown_table(result).encode())
    if clut is not None:
        write_bytes(out / "pointing.csv", pointing_csv(result).encode())
    if any("cascade" in r for r in rows.values()):
        plot_cascade(rows, out / "cascade.png", f"Cascading randomization: {run.meta.model}")
    return result


POINTING_TOLERANCE = 1


def _pointing_row(hits: torch.Tensor, hard: torch.Tensor) -> dict[str, Any]:
    row: dict[str, Any] = {}
    _put(row, "pointing", hits)
    _put(row, "pointing_difficult", hits[hard])
    return row


def pointing_csv(result: dict[str, Any]) -> str:
    """The pointing game in the layout of TorchRay's ``pointing.csv``: one row per method
    (and the centre baseline), the hit rate in percent on all canvases and on the difficult
    ones."""
    lines = ["method,all,difficult"]
    rows = {**result.get("pointing_baselines", {}), **result["methods"]}
    for name, row in rows.items():
        if "pointing" not in row:
            continue
        cells = ["" if math.isnan(row[k][0]) else f"{100 * row[k][0]:.1f}"
                 for k in ("pointing", "pointing_difficult")]
        lines.append(",".join([name, *cells]))
    return "\n".join(lines) + "\n"


def _fmt(v: Any, pct: bool = False, n: int | None = None, total: int | None = None) -> str:
    if not isinstance(v, (list, tuple)) or math.isnan(v[0]):
        return "-"
    if pct:
        text = f"{v[0]:.1%} ± {v[1]:.1%}"
    elif 0 < abs(v[0]) < 0.01:
        text = f"{v[0]:.2e} ± {v[1]:.1e}"
    else:
        text = f"{v[0]:.3f} ± {v[1]:.3f}"
    return text + (f" (n={n})" if n is not None and total is not None and n < total else "")


def _format_row(method: str, row: dict[str, Any]) -> str:
    if "skipped" in row and "pointing" not in row:
        return f"{method:15s} skipped: {row['skipped']}"
    degen = f"  degenerate {row['degenerate']}/{row['images']}" if row.get("degenerate") else ""
    return (f"{method:15s} deletion {_fmt(row.get('deletion'))}  insertion {_fmt(row.get('insertion'))}"
            f"  ROAD MoRF {_fmt(row.get('road_morf'))}  pointing {_fmt(row.get('pointing'), True)}"
            f"  sanity rho {_fmt(row.get('sanity_spearman'))}{degen}  ({row['seconds']:.1f} s)")


def _goals(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    def get(m: str, k: str) -> float:
        v = rows.get(m, {}).get(k)
        return v[0] if v else float("nan")

    def beats(m: str, other: str) -> bool | None:  # None: one of the two was not measured
        a, b = get(m, "deletion"), get(other, "deletion")
        return None if math.isnan(a) or math.isnan(b) else a < b

    best = max(((get(m, "pointing"), m) for m in rows if not math.isnan(get(m, "pointing"))),
               default=None)
    return {
        "mask_deletion_beats_saliency": beats("mask", "saliency"),
        "mask_deletion_beats_random": beats("mask", "random"),
        "best_pointing": (None if best is None else
                          {"method": best[1], "rate": best[0], "goal": 0.9, "met": best[0] >= 0.9}),
    }


TABLES = [
    ("Faithfulness", [("deletion", "deletion AUC ↓"), ("insertion", "insertion AUC ↑"),
                      ("road_morf", "ROAD MoRF ↓"), ("road_lerf", "ROAD LeRF ↑"),
                      ("infidelity", "infidelity ↓"), ("max_sensitivity", "max-sensitivity ↓")]),
    ("Sanity", [("sanity_spearman", "randomized ρ ↓"), ("sanity_ssim", "randomized SSIM ↓"),
                ("random_logit_ssim", "random-logit SSIM ↓"),
                ("random_logit_spearman", "random-logit ρ ↓")]),
    ("Maps", [("sparseness", "sparseness (Gini) ↑"), ("complexity", "complexity (entropy) ↓"),
              ("pointing", "pointing game ↑"), ("pointing_difficult", "pointing, difficult ↑")]),
]


def markdown_table(result: dict[str, Any]) -> str:
    lines = [f"# Faithfulness of explanations: {result['model']} ({result['run']})", "",
             f"Deletion/insertion AUC and ROAD (noisy linear imputation; mean over fractions "
             f"{', '.join(f'{f:g}' for f in result.get('road_fractions', ()))}) on {result['n']} test "
             "images, infidelity on the same, max-sensitivity on the first "
             f"{result.get('n_robust', 0)} (lower deletion and MoRF, higher insertion and LeRF are "
             "better). Pointing game on "
             f"{result['n_pointing']} cluttered-MNIST canvases (hit: maximum within "
             f"{result.get('pointing_tolerance_px', 1)} px of the digit's box; difficult: "
             f"{result.get('n_difficult', 0)} canvases with clutter within that tolerance). Sanity: "
             "Spearman correlation and SSIM with the explanation of the fully randomized model, and "
             f"with the explanation of a random other class, on {result['n_sanity']} images (lower "
             "means the method depends on the weights and the class). Mean ± standard error over the "
             "images; a constant map ranks nothing and is counted as degenerate and left out of "
             "every mean ((n=k) marks a mean over fewer images).", ""]
    for title, cols in TABLES:
        lines += [f"## {title}", "",
                  "| method | images | degenerate | " + " | ".join(c[1] for c in cols) + " | seconds |",
                  "|---|---|---|" + "---|" * len(cols) + "---|"]
        for m, row in result["methods"].items():
            counts = row.get("n", {})
            images = row.get("sanity_images", "-") if title == "Sanity" else row.get("images", "-")
            degen = (f"{row.get('sanity_degenerate', 0)} randomized, {row.get('random_logit_degenerate', 0)} "
                     "random-logit" if title == "Sanity" else row.get("degenerate", 0))
            cells = []
            for key, _ in cols:
                total = (result.get("n_robust") if key == "max_sensitivity" else
                         row.get("sanity_images") if title == "Sanity" else
                         result["n_pointing"] if key == "pointing" else None)
                total = min(total, row.get("images", total)) if key == "max_sensitivity" else total
                total = total if total is not None else row.get("images")
                if key == "pointing_difficult":
                    total = result.get("n_difficult")
                cells.append(_fmt(row.get(key), key.startswith("pointing"), counts.get(key), total))
            lines.append(f"| {m} | {images} | {degen} | " + " | ".join(cells)
                         + f" | {row['seconds']:.1f} |")
        lines.append("")
    base = result.get("pointing_baselines", {}).get("center")
    if base:
        lines.append(f"Pointing-game centre baseline: {_fmt(base['pointing'], True)} on all canvases, "
                     f"{_fmt(base['pointing_difficult'], True)} on the difficult ones.")
        lines.append("")
    g = result["goals"]
    beats = [f"{other}: {g[f'mask_deletion_beats_{other}']}" for other in ("saliency", "random")
             if g[f"mask_deletion_beats_{other}"] is not None]
    if beats:  # only what both sides were measured for
        lines.append(f"- mask deletion AUC beats {'; beats '.join(beats)}")
    best = g["best_pointing"]
    if best:
        lines.append(f"- best pointing game: {best['method']} {best['rate']:.1%} (goal ≥ 90%: {best['met']})")
    lines.append("")
    return "\n".join(lines)


def test_images(run: Any, count: int, data_dir: str | os.PathLike | None = None
                ) -> tuple[torch.Tensor, list[str]]:
    """The first ``count`` test images of the run's dataset (or its ``--images`` pictures),
    with names for their files."""
    data = run.dataset("test", data_dir=data_dir)
    count = min(count, len(data))
    label = lambda i: data.classes[int(data.labels[i])] if int(data.labels[i]) >= 0 else "unknown"
    names = [f"{data.split}-{i}-label-{label(i)}" for i in range(count)]
    return data.floats()[:count], names
