"""``kangae ideas``: what the model thinks each class (or channel) looks like."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ._options import (
    at_least,
    data_dir_option,
    device_option,
    images_option,
    model_options,
    numbers,
    open_run,
    refuse_inapplicable,
    seed_option,
)

SEARCH = ("greedy", "mc", "block")
METHODS = (*SEARCH, "gradient", "template", "dream")
# which methods use each option: any other method refuses it when it is given
APPLIES = {"levels": SEARCH, "init": SEARCH, "restarts": SEARCH, "score": SEARCH, "patch": SEARCH,
           "sweeps": ("greedy",), "steps": ("mc", "block", "gradient", "dream"),
           "lr": ("gradient", "dream"), "jitter": ("gradient", "dream"),
           "image": ("dream",), "octaves": ("dream",), "octave_scale": ("dream",),
           **{name: ("gradient",) for name in ("objective", "param", "transforms", "tv", "l1", "lp",
                                               "blur_every", "per_target", "diversity")}}


@click.command()
@click.argument("spec", metavar="SPEC")
@click.option("--method", type=click.Choice(METHODS), default="greedy", show_default=True,
              help="Pixel search (greedy, mc, block), gradient activation maximization, weight "
                   "templates, or Deep Dream of --image pictures on a layer.")
@click.option("--targets", default="all", show_default=True,
              help="all, 3,7, class names, or layer:NAME[:0-15] (channels; gradient and dream: "
                   "dream raises the whole layer unless channels are given).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Default: SPEC/ideas-METHOD for a run, kangae-out/NAME/ideas-METHOD otherwise.")
@click.option("--check-with", multiple=True, type=click.Path(),
              help="Another run: the share of prototypes it reads as the target.")
@click.option("--levels", default="0,1", show_default=True, help="Pixel values to try (search).")
@click.option("--init", type=click.Choice(["blank", "random"]), default="blank", show_default=True)
@click.option("--restarts", type=int, default=1, show_default=True)
@click.option("--sweeps", type=int, default=10, show_default=True, help="Greedy: most sweeps.")
@click.option("--steps", type=int, default=None, help="mc: mutations (10000); gradient: steps (256).")
@click.option("--score", type=click.Choice(["logit", "prob", "logprob"]), default="logit",
              show_default=True)
@click.option("--patch", type=click.IntRange(1, 4096), default=None,
              help="Search: the side in px of the square patches set as one (default: pixels up "
                   "to 64 px, 8x8 patches at 224).")
@click.option("--objective", type=click.Choice(["logit", "prob", "channel", "neuron"]), default=None)
@click.option("--param", type=click.Choice(["auto", "pixel", "fourier"]), default="auto", show_default=True,
              help="auto: pixel below 64 px, fourier from 64 px.")
@click.option("--transforms", type=click.Choice(["auto", "shift", "standard", "none"]), default="auto",
              show_default=True, help="auto: shift below 64 px, Lucid's standard transforms from 64 px.")
@click.option("--lr", type=float, default=None, help="Step size (gradient 0.05, dream 0.01).")
@click.option("--jitter", type=int, default=None, help="Pixels (default 1 per 28).")
@click.option("--image", "image", multiple=True, type=click.Path(dir_okay=False),
              help="Dream: a picture to dream from (repeat for several).")
@click.option("--octaves", type=click.IntRange(1, 12), default=3, show_default=True,
              help="Dream: sizes to dream at.")
@click.option("--octave-scale", type=click.FloatRange(1, 4, min_open=True), default=1.4,
              show_default=True, help="Dream: each octave's size over the last.")
@click.option("--tv", type=float, default=0.0, help="Total-variation weight.")
@click.option("--l1", type=float, default=0.0)
@click.option("--lp", type=float, default=0.0, help="Weight of the L6 norm (Simonyan).")
@click.option("--blur-every", type=int, default=0)
@click.option("--per-target", type=int, default=1, show_default=True)
@click.option("--diversity", type=float, default=0.0)
@seed_option()
@device_option()
@data_dir_option
@model_options
@images_option
@click.pass_context
def ideas(ctx: click.Context, spec: str, method: str, targets: str, out: str | None,
          check_with: tuple[str, ...], levels: str, init: str, restarts: int, sweeps: int,
          steps: int | None, score: str, patch: int | None,
          objective: str | None, param: str, transforms: str, lr: float | None, jitter: int | None,
          image: tuple[str, ...], octaves: int, octave_scale: float, tv: float, l1: float,
          lp: float, blur_every: int, per_target: int, diversity: float, seed: int, device: str,
          data_dir: str | None, weights: str | None, card: str | None, images: str | None) -> None:
    """What the model thinks each class (or channel) looks like, verified."""
    from ..report.ideas import format_table, write_ideas
    from ..training.run import open_model

    refuse_inapplicable(ctx, method, APPLIES)
    level_values = tuple(numbers(levels, "--levels", low=0, high=1, what="levels"))
    for name, value in (("--restarts", restarts), ("--sweeps", sweeps), ("--steps", steps),
                        ("--per-target", per_target)):
        at_least(value, name)
    if lr is not None:
        at_least(lr, "--lr", 0, strict=True)
    if method == "dream" and not image:
        raise click.UsageError("--method dream needs a picture: --image FILE")
    run = open_run(spec, weights, card, device, images)
    others = [open_model(p, device=device).model for p in check_with]
    images = labels = None
    if method in ("greedy", "mc", "block"):
        options = {"levels": level_values, "init": init, "restarts": restarts,
                   "max_sweeps": sweeps, "score": score, "seed": seed, "patch": patch}
        if steps:
            options["steps"] = steps
        _say_cost(run, method, targets, options)
    elif method == "gradient":
        options = {"steps": steps or 256, "lr": lr or 0.05, "param": param, "per_target": per_target,
                   "diversity": diversity, "seed": seed, "jitter": jitter, "tv": tv, "l1": l1,
                   "lp": lp, "blur_every": blur_every, "transforms": transforms}
        if objective:
            options["objective"] = objective
    elif method == "dream":
        from ..probes._model import input_shape_of
        from ..report.ideas import read_photos

        images = read_photos(list(image), input_shape_of(run.model))
        options = {"steps": 20 if steps is None else steps, "lr": lr or 0.01, "jitter": jitter,
                   "octaves": octaves, "octave_scale": octave_scale, "seed": seed}
    else:
        options = {}
        from ..probes.templates import is_linear

        if not is_linear(run.model):
            data = run.dataset("test", data_dir=data_dir).subset(2000, seed=seed)
            images, labels = data.floats(), data.known_labels
            if labels is None:  # a flat --images folder: group the pictures by their readings
                from ..probes._model import readings

                labels = readings(run.model, images)
                click.echo(f"{data.name}: unlabelled, so each class's template averages the pictures "
                           "the model reads as that class", err=True)
    out_dir = Path(out) if out else run.path / f"ideas-{method}"
    metrics = write_ideas(run.model, run.classes, method, targets, out_dir, check_with=others,
                          images=images, labels=labels, options=options,
                          source=f"{run.meta.model} on {run.meta.dataset or 'your pictures'}",
                          picture_names=[Path(p).stem for p in image] or None)
    click.echo(format_table(metrics))
    files = ", ".join(sorted(p.name for p in out_dir.iterdir() if not p.name.startswith("target-")))
    click.echo(f"wrote {out_dir}/: {files} and one PNG per target ({metrics['seconds']:.1f}s)")


def _say_cost(run: Any, method: str, targets: str, options: dict[str, Any]) -> None:
    """One line before a search starts: its units, forward passes and estimated time."""
    from ..probes._model import input_shape_of
    from ..probes.prototypes import estimate_search
    from ..report.ideas import parse_targets

    model = run.model
    spec = parse_targets(targets, model, run.classes, input_shape_of(model))
    if spec.objective != "class":
        return  # the search refuses layer targets, with its own message
    keys = ("levels", "restarts", "max_sweeps", "steps", "patch")
    given = {k: options[k] for k in keys if k in options}
    cost = estimate_search(model, spec.indices, method=method, **given)
    click.echo(cost.line())
