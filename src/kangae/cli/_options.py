"""Options and parsers every command shares, written once."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

data_dir_option = click.option(
    "--data-dir", type=click.Path(file_okay=False),
    help="Folder with one subfolder per dataset (before $KANGAE_DATA).")


def device_option(default: str = "cpu") -> Callable[[F], F]:
    return click.option("--device", default=default, show_default=True,
                        help="auto (CUDA, then MPS, then the CPU), cpu, cuda[:N] or mps.")


def seed_option(help: str | None = None) -> Callable[[F], F]:
    return click.option("--seed", type=int, default=0, show_default=True, help=help)


def threads_option() -> click.Option:
    return click.Option(["--threads"], type=click.IntRange(1, 1024), default=None,
                        help="Torch threads (default: the CPUs other programs leave free, chosen at start).")


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
