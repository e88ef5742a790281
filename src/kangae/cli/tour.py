"""``kangae tour``: the main job."""

from __future__ import annotations

import click

from ._options import SPEC_HELP, device_option, images_option, model_options, open_run


@click.command()
@click.option("--out", type=click.Path(file_okay=False), default="tour", show_default=True)
@click.option("--quick", is_flag=True, help="Smaller models and settings (about 2 minutes on 2 cores).")
@click.option("--only", default=None, help="Run only these steps (comma-separated), e.g. models,ideas.")
@click.option("--model", "spec", default=None, metavar="SPEC",
              help=f"Your own model instead of training kangae's ({SPEC_HELP}); give --images too.")
@model_options
@images_option
@device_option()
def tour(out: str, quick: bool, only: str | None, spec: str | None, weights: str | None,
         card: str | None, images: str | None, device: str) -> None:
    """Train, probe and write one self-contained report.html (a rerun skips finished steps).

    With --model SPEC --images FOLDER the same report is written for your model and pictures;
    the steps that need a training history (dynamics, the GAN) say they were skipped.

    Without --threads, the thread count is chosen again before every step, from the CPUs that
    other programs leave free, and printed."""
    from ..report.tour import STEPS, run_tour

    if spec is None and (weights or card or images):
        raise click.UsageError("--weights, --card and --images go with --model SPEC")
    user = None
    if spec is not None:
        user = open_run(spec, weights, card, device, images)
        if user.images is None and not user.meta.dataset:
            raise click.UsageError("give --images FOLDER: the model card names no dataset kangae can load")

    names = [n for n, _, _ in STEPS]
    chosen = [s.strip() for s in only.split(",")] if only else None
    if chosen:
        bad = [s for s in chosen if s not in names]
        if bad:
            raise click.BadParameter(f"unknown step {', '.join(bad)}; steps: {', '.join(names)}",
                                     param_hint="--only")
    choice = click.get_current_context().meta["kangae.threads"]
    res = run_tour(out, quick=quick, log=lambda s: click.echo(s, err=True), only=chosen,
                   threads=choice.threads if choice.explicit else None, model=user)
    click.echo(res["report"])
    if res["failed"]:
        raise SystemExit(1)
