"""``kangae tour``: the main job."""

from __future__ import annotations

import click


@click.command()
@click.option("--out", type=click.Path(file_okay=False), default="tour", show_default=True)
@click.option("--quick", is_flag=True, help="Smaller models and settings (about 2 minutes on 2 cores).")
@click.option("--only", default=None, help="Run only these steps (comma-separated), e.g. models,ideas.")
def tour(out: str, quick: bool, only: str | None) -> None:
    """Train, probe and write one self-contained report.html (a rerun skips finished steps).

    Without --threads, the thread count is chosen again before every step, from the CPUs that
    other programs leave free, and printed."""
    from ..report.tour import STEPS, run_tour

    names = [n for n, _, _ in STEPS]
    chosen = [s.strip() for s in only.split(",")] if only else None
    if chosen:
        bad = [s for s in chosen if s not in names]
        if bad:
            raise click.BadParameter(f"unknown step {', '.join(bad)}; steps: {', '.join(names)}",
                                     param_hint="--only")
    choice = click.get_current_context().meta["kangae.threads"]
    res = run_tour(out, quick=quick, log=lambda s: click.echo(s, err=True), only=chosen,
                   threads=choice.threads if choice.explicit else None)
    click.echo(res["report"])
    if res["failed"]:
        raise SystemExit(1)
