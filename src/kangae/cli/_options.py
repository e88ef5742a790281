"""Options and parsers every command shares, written once."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

data_dir_only_option = click.option(
    "--data-dir", type=click.Path(file_okay=False),
    help="Folder with one subfolder per dataset (before $KANGAE_DATA).")


def _strict_data(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:  # for the rest of the command: a file that fails its MD5 check is an error
        from ..data.integrity import strict_data

        ctx.with_resource(strict_data())


strict_data_option = click.option(
    "--strict-data", is_flag=True, expose_value=False, callback=_strict_data,
    help="Refuse dataset files whose MD5 differs from the official release (default: warn).")


def data_dir_option(f: F) -> F:
    """``--data-dir`` and ``--strict-data``, for every command that reads a dataset."""
    return data_dir_only_option(strict_data_option(f))


def device_option(default: str = "cpu") -> Callable[[F], F]:
    return click.option("--device", default=default, show_default=True,
                        help="auto (CUDA, then MPS, then the CPU), cpu, cuda[:N] or mps.")


def seed_option(help: str | None = None) -> Callable[[F], F]:
    return click.option("--seed", type=int, default=0, show_default=True, help=help)


def threads_option() -> click.Option:
    return click.Option(["--threads"], type=click.IntRange(1, 1024), default=None,
                        help="Torch threads (default: the CPUs other programs leave free, chosen at start).")


# Library errors name parameters; the command line says its flags instead.
LIBRARY_TO_FLAGS = {"pass resume=True": "pass --resume", "another out folder": "another --out",
                    "epochs and batch_size must": "--epochs and --batch-size must",
                    "and lr positive": "and --lr positive"}


def as_flags(message: str) -> str:
    """A library error's message in the command line's words."""
    for words, flags in LIBRARY_TO_FLAGS.items():
        message = message.replace(words, flags)
    return message


def table(rows: list[list[str]], header: list[str]) -> str:
    """A plain text table, columns padded to their widest cell."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def numbers(text: str, name: str, *, low: float | None = None, high: float | None = None,
            what: str = "") -> list[float]:
    """``"0,0.1,0.3"`` -> ``[0.0, 0.1, 0.3]``; a usage error naming the option otherwise."""
    example = "0,0.1,0.3" if low is None or low >= 0 else "-1,0,1"
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected numbers like {example}, got {text!r}", param_hint=name) from None
    if not values:
        raise click.BadParameter("give at least one number", param_hint=name)
    if any(v != v for v in values):
        raise click.BadParameter(f"expected numbers, got {text!r}", param_hint=name)
    below = low is not None and any(v < low for v in values)
    if below or (high is not None and any(v > high for v in values)):
        bounds = f"[{low:g}, {high:g}]" if low is not None and high is not None else (
            f">= {low:g}" if low is not None else f"<= {high:g}")
        what = what or "values"
        noun, _, note = what.partition(" (")
        note = f" ({note}" if note else ""
        raise click.BadParameter(f"{noun} must lie in {bounds}{note}, got {text}", param_hint=name)
    return values


def at_least(value: float | None, name: str, low: float = 1, *, strict: bool = False) -> None:
    """A usage error when ``value`` is below ``low`` (or not above it, with ``strict``)."""
    if value is None:
        return
    if not math.isfinite(value):
        raise click.BadParameter(f"must be a finite number, got {value:g}", param_hint=name)
    if value < low or (strict and value == low):
        word = "positive" if strict and low == 0 else f"at least {low:g}"
        raise click.BadParameter(f"must be {word}, got {value:g}", param_hint=name)


def refuse_inapplicable(ctx: click.Context, method: str, applies: Mapping[str, Iterable[str]],
                        what: str = "--method") -> None:
    """An option the user set that the chosen ``method`` does not use is a usage error (one
    line), not silently ignored. ``applies`` maps parameter names to the methods using them."""
    for param, methods in applies.items():
        source = ctx.get_parameter_source(param)
        if source is None or source in (click.core.ParameterSource.DEFAULT,
                                         click.core.ParameterSource.DEFAULT_MAP):
            continue
        methods = tuple(methods)
        if method not in methods:
            flag = next((p.opts[0] for p in ctx.command.params if p.name == param), f"--{param}")
            raise click.UsageError(f"{flag} applies to {what} {' or '.join(methods)}, not {method}")


SPEC_HELP = ("SPEC is a kangae run folder, a zoo name or module:factory / file.py:factory with --weights, "
             "a TorchScript, .pt2 or .onnx file, or torchvision:NAME / timm:NAME.")


def model_options(f: F) -> F:
    """``--weights`` and ``--card``: what a ``SPEC`` that is not a kangae run needs."""
    f = click.option("--card", type=click.Path(dir_okay=False), default=None,
                     help="Model card (JSON): input size, mean/std, resize, class names. "
                          "Default: <weights>.card.json or card.json beside the weights.")(f)
    return click.option("--weights", type=click.Path(dir_okay=False), default=None,
                        help="Weights for a zoo name or factory SPEC: .safetensors or a state-dict .pt.")(f)


def images_option(f: F) -> F:
    return click.option("--images", "images", type=click.Path(file_okay=False), default=None,
                        help="A folder of your pictures: one subfolder per class (labelled) or flat "
                             "(unlabelled), resized and cropped as the model card says.")(f)


LEFT_OUT = "kangae.pictures_left_out"  # click context meta: pictures named as unreadable


def left_out(count: int) -> None:
    """Count pictures that could not be read (each already named on stderr): the command goes
    on with the rest and exits 2 at the end (``kangae.cli._Group``)."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and count:
        ctx.meta[LEFT_OUT] = ctx.meta.get(LEFT_OUT, 0) + count


def open_run(spec: str, weights: str | None = None, card: str | None = None, device: str = "cpu",
             images: str | None = None) -> Any:
    """Open ``SPEC`` for a command; every picture ``--images`` could not read is one line on stderr."""
    from ..training.run import open_model

    run = open_model(spec, weights=weights, card=card, device=device, images=images)
    for err in run.image_errors:
        click.echo(f"error: {err}", err=True)
    left_out(len(run.image_errors))
    if run.images is not None:
        labels = run.images.labels
        kind = (f"in {len(set(labels.tolist()))} classes" if run.images.labelled
                else "(no class folders: unlabelled)")
        left = f", {len(run.image_errors)} left out" if run.image_errors else ""
        click.echo(f"{images}: {len(labels)} pictures {kind}{left}", err=True)
    return run


def needs_labels(run: Any, what: str) -> None:
    """Refuse an unlabelled ``--images`` folder for a command that compares with the truth."""
    from ..errors import KangaeError

    if run.images is not None and not run.images.labelled:
        raise KangaeError(f"{what} needs labels, and {run.images.source} has no class subfolders "
                          "(explain, ideas and predictions work without)")


@dataclass
class PictureFiles:
    """Picture files from the command line, as float ``(C, H, W)`` images prepared for ``run``;
    ``digits`` keeps MNIST preprocessing's notes (inversion) for digit models."""

    images: list[Any]
    sources: list[str]
    errors: list[Any]
    digits: list[Any]


def read_picture_files(run: Any, files: Iterable[str]) -> PictureFiles:
    """Decode and prepare picture files as the run's card says (MNIST-style for digit models,
    resize and crop for others); each bad file is one ``error:`` line and the rest go on."""
    files = list(files)
    if not files:
        return PictureFiles([], [], [], [])
    if run.card is None or run.card.preprocess == "mnist":
        from ..data.preprocess import load_pictures

        digits, errors = load_pictures(files)
        images, sources = [p.image for p in digits], [p.source for p in digits]
        for p in digits:
            if p.inverted:
                click.echo(f"{p.source}: inverted (dark ink on a light background)")
    else:
        from ..data.folder import prepare_pictures

        batch, sources, errors = prepare_pictures(files, run.card)
        images, digits = list(batch.float().div_(255)), []
    for err in errors:
        click.echo(f"error: {err}", err=True)
    left_out(len(errors))
    return PictureFiles(images, list(sources), list(errors), digits)
