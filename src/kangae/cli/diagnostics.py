"""``kangae eval``, ``confusion``, ``calibrate`` and ``dynamics``: how good, how sure, how it learned."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ._options import (
    data_dir_option,
    device_option,
    images_option,
    model_options,
    needs_labels,
    open_run,
    seed_option,
    table,
)


@click.command("eval")
@click.argument("spec", metavar="SPEC")
@click.option("--dataset", default=None, help="Default: the dataset the model was trained on.")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@device_option()
@data_dir_option
@model_options
@images_option
def eval_cmd(spec: str, dataset: str | None, split: str, as_json: bool, device: str,
             data_dir: str | None, weights: str | None, card: str | None, images: str | None) -> None:
    """Accuracy and per-class accuracy of a model, on its test set or --images."""
    run = open_run(spec, weights, card, device, images)
    needs_labels(run, "eval")
    res = run.evaluate(split=split, dataset=dataset, data_dir=data_dir)
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    click.echo(f"{run.meta.model} on {res['dataset']} {res['split']}: accuracy {res['accuracy']:.2%} "
               f"(n={res['n']:,}, loss {res['loss']:.4f})")
    rows = [[c, f"{a:.2%}", f"{n:,}"] for c, a, n in zip(res["classes"], res["per_class_accuracy"],
                                                          res["per_class_n"]) if n]
    click.echo(table(rows, ["class", "accuracy", "n"]))


@click.command("confusion")
@click.argument("spec", metavar="SPEC")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Default: SPEC/confusion for a run, kangae-out/NAME/confusion otherwise.")
@click.option("--pairs", "top_pairs", type=click.IntRange(1, 50), default=6, show_default=True)
@data_dir_option
@model_options
@images_option
@device_option()
def confusion_cmd(spec: str, split: str, out: str | None, top_pairs: int, data_dir: str | None,
                  weights: str | None, card: str | None, images: str | None, device: str) -> None:
    """Curves, the confusion matrix, and the most confused pairs with their images."""
    from ..report.diagnostics import write_confusion

    run = open_run(spec, weights, card, device, images)
    needs_labels(run, "confusion")
    out_dir = Path(out) if out else run.path / "confusion"
    res = write_confusion(run, out_dir, split=split, data_dir=data_dir, top_pairs=top_pairs)
    files = ", ".join(sorted(p.name for p in out_dir.iterdir()))
    click.echo(f"{run.meta.model} on {res['dataset']} {res['split']}: accuracy {res['accuracy']:.2%}")
    for p in res["pairs"]:
        click.echo(f"  {p['true']} read as {p['pred']}: {p['count']} times "
                   f"(most confident at {p['probabilities'][0]:.1%})")
    click.echo(f"wrote {out_dir}/: {files}")


@click.command()
@click.argument("spec", metavar="SPEC")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--bins", type=click.IntRange(2, 100), default=15, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Default: SPEC/calibration for a run, kangae-out/NAME/calibration otherwise.")
@seed_option("Which half fits T.")
@data_dir_option
@model_options
@images_option
@device_option()
def calibrate(spec: str, split: str, bins: int, out: str | None, seed: int, data_dir: str | None,
              weights: str | None, card: str | None, images: str | None, device: str) -> None:
    """Is confidence honest? ECE, MCE, NLL, Brier; temperature scaling before and after."""
    from ..report.diagnostics import write_calibration

    run = open_run(spec, weights, card, device, images)
    needs_labels(run, "calibrate")
    out_dir = Path(out) if out else run.path / "calibration"
    res = write_calibration(run, out_dir, split=split, data_dir=data_dir, bins=bins, seed=seed)
    split_name = "" if res["split"] == "images" else f" {res['split']}"  # --images: no split
    click.echo(f"temperature T = {res['temperature']:.3f}, fitted on {res['fit_examples']:,} "
               f"{res['dataset']}{split_name} images; numbers on the other {res['eval_examples']:,}:")
    click.echo(f"{'':8}{'ECE':>8}{'MCE':>8}{'NLL':>8}{'Brier':>8}{'acc':>8}{'conf':>8}")
    for label in ("before", "after"):
        m = res[label]
        click.echo(f"{label:8}{m['ece']:8.2%}{m['mce']:8.2%}{m['nll']:8.4f}{m['brier']:8.4f}"
                   f"{m['accuracy']:8.2%}{m['mean_confidence']:8.2%}")
    click.echo(f"wrote {out_dir}/: reliability.png, calibration.json")


@click.command()
@click.argument("run_dir", type=click.Path())
@click.option("--layer", default=None, help="Must be the recorded layer (see snapshots/meta.json).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Default: RUN_DIR/dynamics.")
@click.option("--compare/--no-compare", default=True, show_default=True,
              help="Also fit unaligned maps to measure how much alignment steadies them.")
@click.option("--neighbors", type=click.IntRange(2, 200), default=15, show_default=True)
@seed_option()
def dynamics(run_dir: str, layer: str | None, out: str | None, compare: bool, neighbors: int,
             seed: int) -> None:
    """UMAP of a hidden layer after every epoch, aligned and animated, with metrics."""
    from ..report.dynamics import write_dynamics
    from ..training.run import load

    run = load(run_dir)
    out_dir = Path(out) if out else run.path / "dynamics"
    res = write_dynamics(run, out_dir, layer, compare_unaligned=compare, n_neighbors=neighbors,
                         seed=seed)
    click.echo(f"{'epoch':>5} {'kNN map':>8} {'kNN raw':>8} {'silh.':>6} {'moved':>7} "
               f"{'unaligned':>9} {'s':>6}")
    for m in res["frames"]:
        click.echo(f"{m['epoch']:>5} {m.get('knn_map', float('nan')):>8.2%} "
                   f"{m.get('knn_features', float('nan')):>8.2%} {m['silhouette']:>6.3f} "
                   f"{m.get('displacement', float('nan')):>7.2f} "
                   f"{m.get('displacement_unaligned', float('nan')):>9.2f} {m['seconds']:>6.1f}")
    click.echo(f"wrote {out_dir}/: {', '.join(res['files'])}, dynamics.png, dynamics.json "
               f"(numba compile {res['compile_seconds']:.0f}s)")


