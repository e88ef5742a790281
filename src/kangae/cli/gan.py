"""``kangae gan``: train the post's DCGAN and judge it with a classifier after every epoch."""

from __future__ import annotations

import click

from ._options import data_dir_option, device_option, seed_option


@click.command("gan")
@click.option("--dataset", default="mnist", show_default=True,
              help="Any MNIST-family dataset (`kangae datasets`), e.g. emnist-letters as in the post.")
@click.option("--epochs", type=click.IntRange(1), default=5, show_default=True,
              help="Epochs in all (with --resume: train on up to this many).")
@click.option("--conditional", is_flag=True, default=None, help="Class-conditional: ask for 'a 7'.")
@click.option("--arch", type=click.Choice(["seed", "small", "tiny"]), default=None,
              help="seed: the post's DCGAN (default); small, tiny: the same layers at 1/4, 1/8 width.")
@click.option("--init", type=click.Choice(["pytorch", "dcgan"]), default=None,
              help="Initial weights: pytorch (the post's default) or dcgan (N(0, 0.02); trains poorly here).")
@click.option("--classifier", "classifier", type=click.Path(), default=None,
              help="Run folder of a kangae classifier trained on the dataset (default: train a small "
                   "one once and cache it).")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Run folder.")
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Train on a stratified subset of this many images (a quick look).")
@click.option("--batch-size", type=click.IntRange(2), default=None, help="Default 128.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Adam lr (default 2e-4).")
@click.option("--z-dim", type=click.IntRange(1), default=None, help="Latent size (default 100).")
@click.option("--judge-n", type=click.IntRange(10), default=5000, show_default=True,
              help="Samples scored per epoch (against as many real test images).")
@seed_option()
@device_option("auto")
@click.option("--resume", is_flag=True, help="Continue the run in --out where it left off.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@data_dir_option
def gan(dataset: str, epochs: int, conditional: bool | None, arch: str | None, init: str | None,
        classifier: str | None,
        out: str, limit: int | None, batch_size: int | None, lr: float | None, z_dim: int | None,
        judge_n: int, seed: int, device: str, resume: bool, progress: bool, data_dir: str | None) -> None:
    """Train the DCGAN of post 001 with kangae's trainer; print the Fréchet distance every epoch.

    The distance is measured in a kangae classifier's penultimate features, beside the floor
    of two halves of the real test set. Writes samples/progress.gif, samples/interpolation.gif,
    judge.json, judge.png, metrics.jsonl and safetensors checkpoints to --out.
    """
    from ..gan import train_gan

    run = train_gan(dataset, out=out, epochs=epochs, conditional=conditional, arch=arch, z_dim=z_dim,
                    batch_size=batch_size, lr=lr, limit=limit, init=init, classifier=classifier,
                    judge_n=judge_n,
                    seed=seed, device=device, data_dir=data_dir, resume=resume, progress=progress)
    last = run.judgements[-1]
    speed = [h["images_per_s"] for h in run.history if "images_per_s" in h]
    summary = (f"Fréchet distance {last['fd']:.3f} after {last['epoch']} epochs "
               f"(untrained {run.judgements[0]['fd']:.3f}, real-data floor {last['fd_floor']:.3f})")
    if last.get("class_match") is not None:
        summary += f"; {last['class_match']:.1%} read as the asked-for class"
    if speed:
        summary += f"; {speed[-1]:.0f} images/s"
    click.echo(summary)
    click.echo(f"wrote {run.path}/: samples/progress.gif, samples/interpolation.gif, judge.json, judge.png, "
               f"metrics.jsonl, checkpoints/ (classifier: {run.config['classifier']})")
