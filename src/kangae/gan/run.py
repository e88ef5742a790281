"""GAN runs: ``train_gan(...)`` creates or resumes one, ``load_gan(path)`` opens one::

    run/
      config.json            what was asked for (architecture, dataset, recipe, judge)
      metrics.jsonl          one line per epoch: losses, D(x), D(G(z)), Fréchet distance, ...
      events.out.tfevents.*  the same for TensorBoard
      judge.json, judge.png  the classifier's verdict after every epoch (epoch 0: untrained)
      checkpoints/           safetensors, generator and discriminator, with the training state
      samples/               epoch-NNNN.png, frames.safetensors, progress.gif, interpolation.gif
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .. import __version__
from ..data import BatchLoader, load_dataset
from ..errors import KangaeError, RunError, UnknownNameError
from ..models.checkpoint import MODEL_FILE, ModelMeta, read_meta
from ..training.callbacks import (
    Callback,
    Checkpointer,
    MetricsLog,
    ProgressBar,
    TensorBoardLogger,
    read_metrics,
)
from ..training.folders import restore, start_or_resume
from ..training.run import find_checkpoint, run_folder_and_config
from ..utils.atomic import write_json
from ..utils.device import pick_device
from .judge import Judge, judge_classifier
from .models import ARCHS, GAN, INITS, GANConfig, get_arch
from .trainer import GANTrainer, JudgeEpochs, SampleFrames, generate

MODEL_NAME = "dcgan"


@dataclass
class GANRun:
    """A trained GAN with what was recorded about it."""

    path: Path
    gan: GAN
    meta: ModelMeta
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def generator(self) -> torch.nn.Module:
        return self.gan.generator

    @property
    def classes(self) -> list[str]:
        return list(self.meta.classes)

    @property
    def judgements(self) -> list[dict[str, Any]]:
        """The judge's metrics per epoch (epoch 0 is the untrained generator)."""
        path = self.path / "judge.json"
        return json.loads(path.read_text())["epochs"] if path.is_file() else []

    def sample(self, n: int = 64, labels: int | Sequence[int] | torch.Tensor | None = None,
               seed: int = 0) -> torch.Tensor:
        return sample(self.gan, n, labels, seed)


def _labels(gan: GAN, n: int, labels: int | Sequence[int] | torch.Tensor | None) -> torch.Tensor | None:
    if not gan.config.conditional:
        if labels is not None:
            raise KangaeError("this GAN is not conditional: it cannot be asked for a class "
                              "(train one with --conditional)")
        return None
    k = gan.config.num_classes
    if labels is None:
        return torch.arange(n) % k
    t = torch.as_tensor(labels, dtype=torch.long).flatten()
    if t.numel() == 1:
        t = t.expand(n).clone()
    if t.numel() != n:
        raise KangaeError(f"{t.numel()} labels given for {n} samples")
    if (t < 0).any() or (t >= k).any():
        raise KangaeError(f"class labels must be in 0..{k - 1}, got {t.unique().tolist()}")
    return t


def sample(gan: GAN | GANRun, n: int = 64, labels: int | Sequence[int] | torch.Tensor | None = None,
           seed: int = 0) -> torch.Tensor:
    """``n`` images (float, [0, 1], ``(n, 1, 28, 28)``) from latents drawn with ``seed``; a
    conditional GAN draws class ``labels`` (one int for all, or one per sample; default i % K)."""
    gan = gan.gan if isinstance(gan, GANRun) else gan
    if n < 1:
        raise KangaeError(f"the number of samples must be at least 1, got {n}")
    z = torch.randn(n, gan.z_dim, generator=torch.Generator().manual_seed(seed))
    return generate(gan, z, _labels(gan, n, labels))


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation (White 2016, "Sampling Generative Networks") between rows of
    ``a`` and ``b`` ``(P, D)`` at times ``t`` ``(S,)``: returns ``(S, P, D)``."""
    an, bn = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    omega = (an * bn).sum(1).clamp(-1, 1).acos()[None, :, None]  # (1, P, 1)
    t = t[:, None, None]
    so = omega.sin()
    lerp = (1 - t) * a + t * b
    s = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / so.clamp(min=1e-8)
    return torch.where(so.abs() < 1e-6, lerp, s)


def interpolation(gan: GAN | GANRun, paths: int = 10, steps: int = 16, seed: int = 0) -> torch.Tensor:
    """Frames ``(2*steps, paths, C, H, W)`` walking each of ``paths`` latent pairs there and back."""
    gan = gan.gan if isinstance(gan, GANRun) else gan
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(paths, gan.z_dim, generator=g), torch.randn(paths, gan.z_dim, generator=g)
    z = slerp(a, b, torch.linspace(0, 1, steps))  # (S, P, D)
    labels = _labels(gan, paths, None)
    lab = labels.repeat(steps) if labels is not None else None
    imgs = generate(gan, z.reshape(-1, gan.z_dim), lab).reshape(steps, paths, *gan_image_shape(gan))
    return torch.cat([imgs, imgs.flip(0)])


def gan_image_shape(gan: GAN) -> tuple[int, int, int]:
    return (gan.config.channels, 28, 28)


def write_interpolation(gan: GAN | GANRun, path: str | os.PathLike, paths: int = 10, steps: int = 16,
                        seed: int = 0) -> Path:
    from ..render.images import save_gif

    frames = interpolation(gan, paths, steps, seed)
    return save_gif(frames, path, ncols=paths, scale=3, duration_ms=80)


def load_gan(path: str | os.PathLike, device: str | torch.device = "cpu") -> GANRun:
    """Open a GAN run folder (or one of its checkpoints) with its newest weights, in eval mode."""
    path = Path(path)
    ckpt = find_checkpoint(path)
    meta = read_meta(ckpt)
    if meta.model != MODEL_NAME:
        raise RunError(f"{path}: holds a '{meta.model}' model, not a GAN (train one with `kangae gan`)")
    try:
        gan = GAN(GANConfig(**meta.model_args))
    except (TypeError, KangaeError) as e:
        raise RunError(f"{ckpt}: GAN arguments {meta.model_args} do not fit ({e})") from None
    try:
        gan.load_state_dict(load_file(str(ckpt / MODEL_FILE)))
    except (FileNotFoundError, SafetensorError, OSError) as e:
        raise RunError(f"{ckpt / MODEL_FILE}: not a readable safetensors file ({e})") from None
    except RuntimeError as e:
        raise RunError(f"{ckpt / MODEL_FILE}: weights do not fit the GAN ({e})") from None
    run_dir, config = run_folder_and_config(ckpt, path)
    return GANRun(run_dir, gan.to(pick_device(device)).eval(), meta, config,
                  read_metrics(run_dir / "metrics.jsonl"))


def _check_resume(run_dir: Path, config: dict[str, Any], asked: dict[str, Any]) -> dict[str, Any]:
    differ = [f"{k}={v} (run has {config.get(k)})" for k, v in asked.items()
              if v is not None and config.get(k) != v]
    if differ:
        raise KangaeError(f"{run_dir} was configured otherwise: {', '.join(differ)}; "
                          "resuming continues the run as configured")
    return config


def train_gan(dataset: str = "mnist", *, out: str | os.PathLike | None = None, epochs: int = 5,
              conditional: bool | None = None, arch: str | None = None, z_dim: int | None = None,
              batch_size: int | None = None, lr: float | None = None, limit: int | None = None,
              classifier: str | os.PathLike | None = None, judge_n: int = 5000, n_fixed: int | None = None,
              real_target: float | None = None, init: str | None = None, seed: int = 0, device: str = "auto",
              data_dir: str | os.PathLike | None = None,
              resume: bool = False, progress: bool = True, tensorboard: bool = True, echo: bool = True,
              callbacks: Sequence[Callback] = ()) -> GANRun:
    """Train the post's DCGAN with kangae's :class:`~kangae.training.Trainer` and judge it every epoch.

    Unset options default to the seed (``arch="seed"``, ``z_dim=100``) and to Radford et al.'s
    recipe (Adam, lr 2e-4, beta1 0.5) with batches of 128. ``limit`` trains on a stratified
    subset. ``classifier`` is a kangae run folder trained on ``dataset``; without one, a small
    classifier is trained once and cached. ``resume=True`` continues the run in ``out`` (to
    ``epochs`` epochs in all). ``judge_n`` samples are scored per epoch against as many real
    test images (at most half the test split). ``real_target`` < 1 is one-sided label smoothing
    (default 0.9 for conditional runs). ``init`` is ``"pytorch"`` (the post's default
    initialization) or ``"dcgan"`` (Radford et al.'s N(0, 0.02), which does not train this
    sigmoid-output network in a few epochs; see :mod:`kangae.gan.models`).
    """
    run_dir = Path(out) if out else Path("runs") / f"gan-{dataset}"
    asked = {"dataset": dataset if dataset != "mnist" or not resume else None, "arch": arch,
             "conditional": conditional, "z_dim": z_dim, "batch_size": batch_size, "lr": lr,
             "limit": limit, "init": init}
    if epochs < 1:
        raise KangaeError(f"epochs must be at least 1, got {epochs}")
    saved, resume_from = start_or_resume(run_dir, resume)
    if saved is not None:
        config = _check_resume(run_dir, saved, asked)
        config["epochs"] = epochs
    else:
        arch = arch or "seed"
        get_arch(arch)
        init = init or "pytorch"
        if init not in INITS:
            raise UnknownNameError("GAN initialization", init, INITS)
        config = {"model": MODEL_NAME, "dataset": dataset, "arch": arch, "conditional": bool(conditional),
                  "z_dim": z_dim or 100, "batch_size": batch_size or 128, "lr": lr or 2e-4,
                  "betas": [0.5, 0.999], "real_target": real_target or (0.9 if conditional else 1.0),
                  "limit": limit, "epochs": epochs, "init": init,
                  "seed": seed,
                  "judge_n": judge_n, "classifier": str(classifier) if classifier else None,
                  "kangae": __version__, "torch": torch.__version__}
        if config["batch_size"] < 2 or config["lr"] <= 0 or config["z_dim"] < 1:
            raise KangaeError("batch size must be at least 2 (batch norm), lr positive and z_dim >= 1")
    train_set = load_dataset(config["dataset"], "train", data_dir=data_dir).subset(config["limit"],
                                                                                   seed=config["seed"])
    test_set = load_dataset(config["dataset"], "test", data_dir=data_dir)
    dev = pick_device(device)

    cls = classifier or config.get("classifier")
    model, cls_path = judge_classifier(config["dataset"], cls if cls and Path(cls).exists() else classifier,
                                       data_dir=data_dir, progress=progress, device=str(dev))
    config["classifier"] = str(cls_path)
    judge = Judge(model, test_set, n=config["judge_n"], seed=config["seed"])

    torch.manual_seed(config["seed"])
    gcfg = GANConfig(arch=config["arch"], z_dim=config["z_dim"], num_classes=train_set.num_classes,
                     conditional=config["conditional"], channels=int(train_set.images.shape[1]))
    gan = GAN(gcfg, init=config.get("init", "pytorch"))
    gan.start_at_mean(train_set.stats()[0])
    gan.to(dev)
    loader = BatchLoader(train_set, config["batch_size"], shuffle=True, seed=config["seed"],
                         drop_last=True, device=dev)
    if len(loader) == 0:
        raise KangaeError(f"batch size {config['batch_size']} is larger than the {len(train_set)} "
                          "training images")
    betas = tuple(config["betas"])
    opt = torch.optim.Adam([{"params": gan.generator.parameters(), "name": "generator"},
                            {"params": gan.discriminator.parameters(), "name": "discriminator"}],
                           lr=config["lr"], betas=betas)
    meta = ModelMeta(model=MODEL_NAME, model_args=gcfg.to_dict(), dataset=train_set.name,
                     classes=list(train_set.classes), input_shape=list(train_set.images.shape[1:]))
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", {**config, "train_source": train_set.source})
    n_fixed = n_fixed or (10 * gcfg.num_classes if gcfg.conditional and gcfg.num_classes <= 10 else 64)
    frames = SampleFrames(run_dir, n_fixed, seed=config["seed"] + 1)
    cbs: list[Callback] = [JudgeEpochs(run_dir, judge, seed=config["seed"] + 2, echo=echo), frames]
    if progress:
        cbs.append(ProgressBar())
    cbs += [MetricsLog(run_dir / "metrics.jsonl"), Checkpointer(run_dir, meta)]
    if tensorboard:
        cbs.append(TensorBoardLogger(run_dir, histograms=False, graph=False))
    cbs += list(callbacks)
    trainer = GANTrainer(gan, opt, callbacks=cbs, real_target=config.get("real_target", 1.0))
    if resume_from is not None:
        restore(trainer, resume_from,
                lambda ckpt: gan.load_state_dict(load_gan(ckpt, device=dev).gan.state_dict()))
    trainer.fit(loader, None, epochs=epochs)
    frames.write_gif()
    gan.eval()
    write_interpolation(gan, run_dir / "samples" / "interpolation.gif", paths=min(10, gcfg.num_classes)
                        if gcfg.conditional else 10, seed=config["seed"] + 3)
    return GANRun(run_dir, gan, meta, config, list(trainer.state.history))


__all__ = ["ARCHS", "GANRun", "interpolation", "load_gan", "sample", "slerp", "train_gan",
           "write_interpolation"]
