"""``kangae datasets``, ``kangae models`` and ``kangae layers``: what there is."""

from __future__ import annotations

import click

from ._options import data_dir_only_option, model_options, open_run, table


@click.command()
@data_dir_only_option
def datasets(data_dir: str | None) -> None:
    """List the datasets (files read, or generated) and where kangae finds each."""
    from ..data import DATASETS, where_is

    rows = [[spec.name, str(spec.num_classes), spec.title, where_is(spec.name, data_dir)]
            for spec in DATASETS.values()]
    click.echo(table(rows, ["name", "classes", "description", "files"]))


@click.command()
def models() -> None:
    """List the model zoo with parameter counts and default recipes."""
    from ..models.zoo import DEFAULT_MODEL, MODELS

    rows = []
    for e in MODELS.values():
        n = sum(p.numel() for p in e.build().parameters())
        r = e.recipe
        recipe = f"{r.epochs} ep, bs {r.batch_size}, {r.optimizer} lr {r.lr:g}, {r.schedule}"
        if r.max_shift:
            recipe += f", shift ±{r.max_shift}px"
        name = e.name + (" (default)" if e.name == DEFAULT_MODEL else "")
        rows.append([name, f"{n:,}", e.summary, recipe, e.source])
    click.echo(table(rows, ["name", "params", "architecture", "recipe", "from"]))


@click.command()
@click.argument("spec", metavar="SPEC", required=False)
@click.option("--model", "model_name", default=None, help="A zoo model instead of a run.")
@model_options
def layers(spec: str | None, model_name: str | None, weights: str | None, card: str | None) -> None:
    """Layer names (for probes), output shapes and parameter counts."""
    from ..models.layers import describe_layers
    from ..models.zoo import create_model

    if bool(spec) == bool(model_name):
        raise click.UsageError("give a SPEC or --model NAME (one of them)")
    if spec:
        run = open_run(spec, weights, card)
        model, shape = run.model, tuple(run.meta.input_shape)
        if run.card is not None and run.card.source != "run":
            said = {k: v for k, v in run.card.to_dict().items() if k != "classes" and v not in (None, "", [])}
            click.echo(f"card: {said}; classes: {len(run.classes)}"
                       f" (inferred: {', '.join(run.card.inferred) or 'nothing'})")
    else:
        model, shape = create_model(model_name), None
    if shape is None:
        from ..probes._model import input_shape_of

        shape = input_shape_of(model)
    click.echo(f"input: {'x'.join(map(str, shape))}")
    rows = [["  " * info.depth + info.name, info.kind,
             "x".join(map(str, info.output_shape)), f"{info.params:,}" if info.params else ""]
            for info in describe_layers(model, shape)]
    click.echo(table(rows, ["layer", "type", "output", "params"]))
    total = sum(p.numel() for p in model.parameters())
    click.echo(f"total parameters: {total:,}")


