"""The ``kangae`` command line. User mistakes exit 2 with an error message and no traceback;
unreadable data files exit 1; an interrupted training run exits 130.

One module per command family; options they share are in ``_options``. Every command also
takes ``--threads N`` (added here, once): without it, torch gets the CPUs that other programs
leave free (:mod:`kangae.utils.threads`).
"""

from __future__ import annotations

import functools
import inspect
import sys
import warnings
from typing import Any

import click
import torch

from ..errors import DataError, KangaeError
from ..utils.threads import apply_threads, set_workers
from ._options import LEFT_OUT, SPEC_HELP, as_flags, threads_option


def _warn(message: Any, category: type, *args: Any, **kwargs: Any) -> None:
    click.echo(f"warning: {message}", err=True)


def _with_threads(command: click.Command) -> click.Command:
    """Add ``--threads`` to ``command`` and set torch's thread count before it runs."""
    command.params.append(threads_option())
    callback = command.callback
    assert callback is not None

    @functools.wraps(callback)
    def run(*args: Any, threads: int | None = None, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        before, before_workers = torch.get_num_threads(), set_workers(1)
        ctx.meta["kangae.threads"] = apply_threads(threads)
        try:
            return callback(*args, **kwargs)
        finally:  # a command run in-process (tests, notebooks) leaves torch as it found it
            torch.set_num_threads(before)
            set_workers(before_workers)

    command.callback = run
    return command


class _Group(click.Group):
    """Turns kangae's user-facing errors into one line on stderr and an exit code."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if any(p.name == "spec" for p in cmd.params) and cmd.help and SPEC_HELP not in cmd.help:
            cmd.help = f"{inspect.cleandoc(cmd.help)}\n\n{SPEC_HELP}"  # as click cleans a docstring
        super().add_command(_with_threads(cmd) if not isinstance(cmd, click.Group) else cmd, name)

    def invoke(self, ctx: click.Context) -> Any:
        from ..training.trainer import TrainingInterrupted

        warnings.showwarning = _warn
        try:
            done = super().invoke(ctx)
        except TrainingInterrupted as e:
            click.echo(f"kangae: {e}", err=True)
            sys.exit(130)
        except KangaeError as e:  # bad data files exit 1; every other user mistake exits 2
            click.echo(f"error: {as_flags(str(e))}", err=True)
            sys.exit(1 if isinstance(e, DataError) else 2)
        missed = ctx.meta.get(LEFT_OUT, 0)
        if missed:  # the others were done and written; the bad ones were named as they came
            click.echo(f"error: {missed} picture{'s' if missed > 1 else ''} could not be read "
                       "(named above); the rest were done", err=True)
            sys.exit(2)
        return done


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kangae")
def cli() -> None:
    """kangae (考え): what is this image classifier thinking?"""


from .data import datasets, layers, models  # noqa: E402
from .diagnostics import calibrate, confusion_cmd, dynamics, eval_cmd  # noqa: E402
from .explain import explain, explain_bench  # noqa: E402
from .fool import fool  # noqa: E402
from .gan import gan  # noqa: E402
from .ideas import ideas  # noqa: E402
from .serve import serve  # noqa: E402
from .tour import tour  # noqa: E402
from .train import train  # noqa: E402

for _command in (datasets, models, train, eval_cmd, layers, ideas, confusion_cmd, calibrate, dynamics,
                 explain, explain_bench, fool, gan, serve, tour):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="kangae")


if __name__ == "__main__":
    main()
