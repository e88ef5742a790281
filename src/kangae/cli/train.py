"""``kangae train``: train a zoo model (post 001's solver); the run folder is a TensorBoard logdir."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..errors import KangaeError
from ..training.run import OPTIMIZERS, SCHEDULES
from ._options import at_least, data_dir_option, device_option, seed_option


@click.command()
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
@seed_option()
@device_option("auto")
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
    from ..data.registry import get_spec
    from ..models.zoo import DEFAULT_MODEL, get_entry
    from ..training.callbacks import kept_epoch
    from ..training.run import train as run_train

    model_name = model_name or DEFAULT_MODEL
    get_entry(model_name)
    get_spec(dataset)
    for key in ("epochs", "batch_size", "limit"):
        at_least(kwargs[key], f"--{key.replace('_', '-')}")
    at_least(kwargs["lr"], "--lr", 0, strict=True)
    at_least(kwargs["max_shift"], "--shift", 0)
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
    if kwargs["adversarial"] is None and (kwargs["eps"] is not None or adv_options):
        raise click.UsageError("--eps, --eps-warmup, --adv-steps, --adv-alpha and --adv-check set up "
                               "adversarial training: pass --adversarial too")
    if kwargs["adversarial"] is not None and kwargs["eps"] is None:
        raise click.UsageError(f"--adversarial {kwargs['adversarial']} needs --eps (e.g. 0.3 on MNIST)")
    run = run_train(model_name, dataset, out=out, tensorboard=not no_tensorboard,
                    snapshots=not no_snapshots, **kwargs)
    kept = kept_epoch(run.history)
    last = run.history[kept - 1] if kept else {}
    click.echo(f"saved {run.path} (val accuracy {last.get('val_acc', float('nan')):.2%}"
               + (f", weights of epoch {kept})" if run.stopped else ")"))


def _model_of(model_name: str, out: str | None, dataset: str, resume: bool) -> str:
    """The model a --resume continues is the one in the run's config, whatever --model says."""
    if resume:
        from ..models.zoo import DEFAULT_MODEL

        config = Path(out) if out else Path("runs") / f"{DEFAULT_MODEL}-{dataset}"
        try:
            return str(json.loads((config / "config.json").read_text())["model"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # train() reports a missing or broken run with its own message
    return model_name


def _model_args(model_name: str, pairs: tuple[str, ...]) -> dict[str, Any]:
    """``("width=32", "hidden=256")`` -> ``{"width": 32, "hidden": 256}``, checked against the
    model's constructor so a typo is a usage error, not a traceback."""
    from ..models.zoo import check_model_arguments, model_arguments

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


