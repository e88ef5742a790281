"""``kangae fool``: template addition, FGSM/PGD and fewest-pixel edits on a run (issue 7)."""

from __future__ import annotations

from pathlib import Path

import click

from ._options import (
    data_dir_option,
    device_option,
    images_option,
    model_options,
    needs_labels,
    numbers,
    open_run,
    read_picture_files,
    refuse_inapplicable,
    seed_option,
    table,
)

# the options each attack reads: one it does not read is a usage error, not silently dropped
APPLIES = {"eps": ("fgsm", "pgd"), "steps": ("pgd",), "restarts": ("pgd",), "alphas": ("template",),
           "also": ("template",), "levels": ("edit",), "threshold": ("edit",), "max_edits": ("edit",),
           "source_class": ("edit",), "misread": ("edit",)}


@click.command()
@click.argument("spec", metavar="SPEC")
@click.option("--attack", type=click.Choice(["template", "fgsm", "pgd", "edit"]), required=True)
@click.option("--target", default=None,
              help="Class to push towards (index or name). template: default 7; edit: required.")
@click.option("--eps", default="0,0.05,0.1,0.2,0.3", show_default=True,
              help="L-inf radius or radii (fgsm/pgd), comma-separated, in [0, 1].")
@click.option("--steps", type=click.IntRange(1, 1000), default=40, show_default=True, help="PGD steps.")
@click.option("--restarts", type=click.IntRange(1, 100), default=1, show_default=True,
              help="PGD: attack the survivors again from new random starts.")
@click.option("--alphas", default="0,0.1,0.2,0.3,0.5,0.75,1", show_default=True,
              help="Template strengths (template scaled to max |value| 1).")
@click.option("--image", "image_files", multiple=True, type=click.Path(),
              help="Picture file(s) instead of test images (prepared as the model card says).")
@click.option("--n", "n_images", type=click.IntRange(1, 10000), default=None,
              help="Test images to attack (default 1000; edit: 8).")
@click.option("--levels", default="0,1", show_default=True, help="edit: pixel values to try.")
@click.option("--threshold", type=float, default=0.9, show_default=True,
              help="edit: probability the target must reach.")
@click.option("--max-edits", type=click.IntRange(1, 784), default=150, show_default=True)
@click.option("--from", "source_class", default=None,
              help="edit: start from test digits of this class (e.g. --from 0 --target 9).")
@click.option("--misread", is_flag=True,
              help="edit: fix test digits the model misreads (target: each one's true label).")
@click.option("--also", "also", multiple=True, type=click.Path(),
              help="template: other runs to compare side by side.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Default: SPEC/fool-ATTACK for a run, kangae-out/NAME/fool-ATTACK otherwise.")
@seed_option()
@device_option()
@data_dir_option
@model_options
@images_option
@click.pass_context
def fool(ctx: click.Context, spec: str, attack: str, target: str | None, eps: str, steps: int,
         restarts: int, alphas: str,
         image_files: tuple[str, ...], n_images: int | None, levels: str, threshold: float,
         max_edits: int, source_class: str | None, misread: bool, also: tuple[str, ...], out: str | None,
         seed: int, device: str, data_dir: str | None, weights: str | None, card: str | None,
         images: str | None) -> None:
    """Fool a model: add a class template, FGSM/PGD, or the fewest pixel edits to a target.
    Epsilons are in pixel units on the [0, 1] scale (8/255 = 0.031 for ImageNet-style models),
    whatever normalization the model applies inside."""
    import torch

    from ..errors import KangaeError
    from ..report.attacks import write_fool
    from ..report.ideas import parse_targets
    from ..training.run import open_model
    from ..utils.shard import is_main, start

    refuse_inapplicable(ctx, attack, APPLIES, what="--attack")
    eps_values = numbers(eps, "--eps", low=0, high=1, what="eps (in pixel units)")
    level_values = numbers(levels, "--levels", low=0, high=1, what="levels")
    if not 0 < threshold < 1:
        raise click.BadParameter(f"must be in (0, 1), got {threshold}", param_hint="--threshold")
    device = start(device)  # under torchrun: join the other processes, which share the images
    run = open_run(spec, weights, card, device, images)
    shape = tuple(run.meta.input_shape)
    k = None
    k_targets = None
    if target is not None:
        idx = parse_targets(target, run.model, run.classes, shape).indices
        if len(idx) != 1 or target.startswith("layer:"):
            raise KangaeError(f"invalid target {target!r}: give one class")
        k = idx[0]
    sources = None
    if image_files:
        read = read_picture_files(run, image_files)
        if not read.images:
            raise KangaeError("none of the images could be read")
        batch = torch.stack(read.images)
        labels = None
        sources = [Path(s).name for s in read.sources]
    else:
        n = n_images or (8 if attack == "edit" else 1000)
        from ..probes._model import readings

        data = run.dataset("test", data_dir=data_dir)
        batch, labels = data.floats(), data.known_labels  # None: unlabelled --images pictures
        if misread or source_class is not None:
            needs_labels(run, "--misread" if misread else "--from")
        labels = None if labels is None else labels.long()
        if misread:
            if attack != "edit" or k is not None:
                raise KangaeError("--misread goes with --attack edit and no --target")
            pick = (readings(run.model, batch) != labels).nonzero().flatten()[:n]
            k_targets = labels[pick]
        elif source_class is not None:  # e.g. 0 -> 9
            src = parse_targets(source_class, run.model, run.classes, shape).indices
            if len(src) != 1 or source_class.startswith("layer:"):
                raise KangaeError(f"invalid --from {source_class!r}: give one class")
            pick = (labels == src[0]).nonzero().flatten()[:n]
        elif attack == "edit" and k is not None:  # digits (or unlabelled pictures read as) other classes
            known = labels if labels is not None else readings(run.model, batch)
            pick = (known != k).nonzero().flatten()[:n]
        else:
            pick = torch.arange(min(n, len(batch)))
        batch = batch[pick]
        labels = None if labels is None else labels[pick]
        sources = [f"test #{int(i)}" for i in pick]
    others = [(Path(p).name, open_model(p, device=device).model) for p in also]
    out_dir = Path(out) if out else run.path / f"fool-{attack}"
    res = write_fool(run.model, run.classes, attack, out_dir, batch, labels,
                     target=k_targets if k_targets is not None else k, eps=eps_values,
                     steps=steps, restarts=restarts, alphas=numbers(alphas, "--alphas"), levels=level_values,
                     threshold=threshold, max_edits=max_edits, others=others, sources=sources, seed=seed,
                     source=f"{run.meta.model} on {run.meta.dataset or 'your pictures'} ({run.path})",
                     name=Path(run.path).resolve().name)
    if not is_main():
        return
    click.echo(table(res["table"]["rows"], res["table"]["header"]))
    click.echo(f"wrote {out_dir}/: fool.json, {', '.join(res['files'])} ({res['seconds']:.1f}s)")
