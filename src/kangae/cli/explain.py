"""``kangae explain`` and ``kangae explain-bench``."""

from __future__ import annotations

from pathlib import Path

import click

from ..probes.attribution import METHODS
from ..probes.registry import explainers
from ._options import (
    data_dir_option,
    device_option,
    images_option,
    model_options,
    numbers,
    open_run,
    read_picture_files,
    refuse_inapplicable,
    seed_option,
)

# explain-bench's default: one of each family (gradient, path, CAM, sampled masks, optimized
# mask) and the random baseline; --methods all scores every registered method
QUICK_BENCH_METHODS = ("saliency", "ig", "gradcam", "rise", "mask", "random")


def _applies() -> dict[str, tuple[str, ...]]:
    """Which methods use each option (from the registry): any other method refuses it."""
    specs = explainers()
    uses = lambda option: tuple(n for n, s in specs.items() if option in s.options)
    return {"steps": uses("steps"), "game": uses("game"), "perturbation": uses("perturbation"),
            "areas": uses("areas"), "n_masks": uses("n_masks"),
            "layer": tuple(n for n, s in specs.items() if s.needs_layer)}


@click.command()
@click.argument("spec", metavar="SPEC")
@click.argument("files", nargs=-1, type=click.Path())
@click.option("--method", type=click.Choice(METHODS), default="mask", show_default=True)
@click.option("--target", default="auto", show_default=True,
              help="auto (the predicted class), or a class index or name.")
@click.option("--test", "n_test", type=click.IntRange(1, 10000), default=None,
              help="Explain the first N test images (or --images pictures) instead of files.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Default: SPEC/explain-METHOD for a run, kangae-out/NAME/explain-METHOD otherwise.")
@click.option("--steps", type=click.IntRange(1, 100000), default=None,
              help="Mask optimization steps (mask: 300, extremal: 300).")
@click.option("--game", type=click.Choice(["deletion", "preservation"]), default=None,
              help="Masks: delete the evidence (mask's default) or keep it (extremal's).")
@click.option("--perturbation", type=click.Choice(["constant", "blur", "noise"]), default=None)
@click.option("--areas", default=None, help="Extremal: areas, e.g. 0.05,0.1,0.2.")
@click.option("--layer", default=None, help="Grad-CAM layer (dotted name; see `kangae layers`).")
@click.option("--masks", "n_masks", type=click.IntRange(1, 1_000_000), default=None,
              help="RISE: random masks per image (default 4000, as in the paper).")
@seed_option()
@device_option()
@data_dir_option
@model_options
@images_option
@click.pass_context
def explain(ctx: click.Context, spec: str, files: tuple[str, ...], method: str, target: str,
            n_test: int | None, out: str | None, steps: int | None, game: str | None,
            perturbation: str | None, areas: str | None, layer: str | None, n_masks: int | None,
            seed: int, device: str, data_dir: str | None, weights: str | None, card: str | None,
            images: str | None) -> None:
    """Which pixels does the decision rest on? One panel per image (PNG/JPEG of any size,
    prepared as the model card says: MNIST-style for digit models) and explanations.json."""
    import torch

    from ..errors import KangaeError
    from ..report.explain import parse_target, test_images, write_explanations

    if not files and n_test is None:
        raise click.UsageError("give image files, or --test N to explain test images")
    refuse_inapplicable(ctx, method, _applies())
    options: dict = {}
    if n_masks is not None:
        options["n_masks"] = n_masks
    if steps is not None:
        options["steps"] = steps
    if game:
        options["game"] = game
    if perturbation:
        options["perturbation"] = perturbation
    if areas:
        options["areas"] = tuple(numbers(areas, "--areas"))
        if any(not 0 < a < 1 for a in options["areas"]):
            raise click.BadParameter(f"each area must lie between 0 and 1, got {areas}", param_hint="--areas")
    if layer:
        options["layer"] = layer
    run = open_run(spec, weights, card, device, images)
    classes = run.meta.classes
    goal = parse_target(target, len(classes), classes)
    read = read_picture_files(run, files)
    sources, pictures = list(read.sources), read.digits
    batch = list(read.images)
    if n_test:
        x, names = test_images(run, n_test, data_dir)
        batch += list(x)
        sources += names
    if not batch:
        raise KangaeError("none of the images could be read")
    out_dir = Path(out) if out else run.path / f"explain-{method}"
    _, res = write_explanations(run.model, classes, torch.stack(batch), out_dir, method, goal,
                             sources=sources, pictures=pictures, seed=seed, **options)
    for entry in res["images"]:
        click.echo(f"{entry['source'] or 'image'}: {entry['summary']}")
        if entry.get("warning"):
            click.echo(f"{entry['source'] or 'image'}: warning: {entry['warning']}")
    click.echo(f"wrote {out_dir}/ ({len(res['images'])} panels, explanations.json) "
               f"in {res['seconds']:.1f} s")


@click.command("explain-bench")
@click.argument("spec", metavar="SPEC")
@click.option("--methods", default=",".join(QUICK_BENCH_METHODS), show_default=True,
              help=f"Comma-separated methods, or 'all' for every one of the {len(METHODS)} "
                   "(the default is one of each family and the random baseline).")
@click.option("--n", "n", type=click.IntRange(2, 10000), default=100, show_default=True,
              help="Test images for deletion/insertion.")
@click.option("--pointing", "n_pointing", type=click.IntRange(0, 2000), default=200, show_default=True,
              help="Cluttered canvases for the pointing game (0 skips it).")
@click.option("--sanity", "n_sanity", type=click.IntRange(2, 10000), default=32, show_default=True)
@click.option("--robust", "n_robust", type=click.IntRange(0, 10000), default=16, show_default=True,
              help="Test images for max-sensitivity (each explained 8 more times).")
@click.option("--mask-steps", type=click.IntRange(1, 100000), default=150, show_default=True)
@click.option("--rise-masks", type=click.IntRange(1, 1_000_000), default=4000, show_default=True)
@click.option("--cluttered-run", type=click.Path(), default=None,
              help="A run trained on cluttered-mnist (default: train one once and cache it).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Default: SPEC/explain-bench for a run, kangae-out/NAME/explain-bench otherwise.")
@seed_option()
@device_option()
@data_dir_option
@model_options
@images_option
def explain_bench(spec: str, methods: str, n: int, n_pointing: int, n_sanity: int, n_robust: int,
                  mask_steps: int, rise_masks: int, cluttered_run: str | None, out: str | None, seed: int,
                  device: str, data_dir: str | None, weights: str | None, card: str | None,
                  images: str | None) -> None:
    """Is each explanation true? Deletion/insertion AUC, ROAD, infidelity, max-sensitivity,
    cascading randomization, the random-logit test, sparseness, complexity and the pointing game."""
    from ..report.explain import explain_bench as bench
    from ..training.run import load
    from ..utils.shard import is_main, start

    device = start(device)  # under torchrun: join the other processes, which share the images
    run = open_run(spec, weights, card, device, images)
    clut = load(cluttered_run, device=device) if cluttered_run else None
    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    chosen = list(METHODS) if chosen == ["all"] else chosen
    if not chosen:
        raise click.BadParameter("give at least one method, or 'all'", param_hint="--methods")
    out_dir = Path(out) if out else run.path / "explain-bench"
    res = bench(run, out_dir, chosen, n=n, n_pointing=n_pointing, n_sanity=n_sanity,
                mask_steps=mask_steps, cluttered_run=clut, seed=seed,
                log=lambda s: click.echo(s, err=True), data_dir=data_dir, n_robust=n_robust,
                options={"rise": {"n_masks": rise_masks}})
    from ..report.explain import markdown_table

    if not is_main():
        return
    click.echo(markdown_table(res))
    if n_pointing:
        click.echo((out_dir / "pointing.csv").read_text())
    written = [name for name in ("bench.json", "bench.md", "pointing.csv", "cascade.png")
               if (out_dir / name).is_file()]
    click.echo(f"wrote {out_dir}/{', '.join(written)}")
