"""The GAN step plugged into kangae's :class:`~kangae.training.Trainer`, and the callbacks that
sample, judge and animate a GAN run (the post's ``Solver`` with callbacks).

One Adam optimizer holds two parameter groups (generator, discriminator), so the trainer's
checkpointing and exact resume work unchanged; each half-step leaves the other network's
gradients unset, and Adam skips parameters without gradients.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ..training.callbacks import Callback
from ..training.trainer import Trainer
from ..utils.atomic import atomic_path, write_json
from .models import GAN

if TYPE_CHECKING:
    from .judge import Judge


class GANTrainer(Trainer):
    """Alternating updates (Goodfellow et al. 2014): the discriminator on a real and a fake
    batch, then the generator with the non-saturating loss ``-log D(G(z))``.

    The trainer's running loss and accuracy are the discriminator's (logged as ``d_loss`` and
    ``d_acc``); the generator's loss and the mean ``D(x)``, ``D(G(z))`` are logged beside them.
    """

    def __init__(self, gan: GAN, optimizer: torch.optim.Optimizer, real_target: float = 1.0, **kwargs: Any):
        super().__init__(gan, optimizer, amp=False, **kwargs)
        self.real_target = real_target  # < 1: one-sided label smoothing (Salimans et al. 2016)
        self.callbacks.insert(0, _GANLogs())
        self._extra = torch.zeros(4, dtype=torch.float64, device=self.device)  # g_loss, D(x), D(G(z)), n

    def _step(self, x: torch.Tensor, y: torch.Tensor, acc: torch.Tensor) -> torch.Tensor:
        gan: GAN = self.bare_model
        g, d = gan.generator, gan.discriminator
        b = x.shape[0]
        labels = y if gan.config.conditional else None
        z = torch.randn(b, gan.z_dim, device=x.device)
        fake = g(z, labels)
        ones, zeros = torch.ones(b, device=x.device), torch.zeros(b, device=x.device)

        # discriminator: real -> 1, fake -> 0 (the fake is detached: no generator gradients)
        d_real, d_fake = d(x, labels), d(fake.detach(), labels)
        d_loss = (F.binary_cross_entropy_with_logits(d_real, ones * self.real_target)
                  + F.binary_cross_entropy_with_logits(d_fake, zeros))
        self.optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        self.optimizer.step()

        # generator: make the discriminator say 1 (its weights frozen for this half-step)
        d.requires_grad_(False)
        try:
            g_loss = F.binary_cross_entropy_with_logits(d(fake, labels), ones)
            self.optimizer.zero_grad(set_to_none=True)
            g_loss.backward()
            self.optimizer.step()
        finally:
            d.requires_grad_(True)
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()

        d_loss = d_loss.detach()
        acc[0] += d_loss * b
        acc[1] += ((d_real.detach() > 0).sum() + (d_fake.detach() < 0).sum()) / 2
        acc[2] += b
        e = self._extra
        e[0] += g_loss.detach() * b
        e[1] += torch.sigmoid(d_real.detach()).sum()
        e[2] += torch.sigmoid(d_fake.detach()).sum()
        e[3] += b
        return d_loss


class _GANLogs(Callback):
    """Names the trainer's loss and accuracy for what they are and adds the generator's."""

    def on_epoch_start(self, trainer: Trainer) -> None:
        trainer._extra.zero_()
        self.t0 = time.perf_counter()
        self.batch0 = trainer.state.batch

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        g_sum, dx, dgz, n = trainer._extra.tolist()
        n = max(n, 1.0)
        logs["d_loss"] = logs.pop("train_loss")
        logs["d_acc"] = logs.pop("train_acc")
        logs.update(g_loss=g_sum / n, d_real=dx / n, d_fake=dgz / n,
                    images_per_s=n / max(time.perf_counter() - self.t0, 1e-9))
        logs.pop("lr", None)


def fixed_inputs(gan: GAN, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Latents from a seeded generator and, if conditional, balanced labels ``i % K``."""
    z = torch.randn(n, gan.z_dim, generator=torch.Generator().manual_seed(seed))
    labels = torch.arange(n) % gan.config.num_classes if gan.config.conditional else None
    return z, labels


@torch.no_grad()
def generate(gan: GAN, z: torch.Tensor, labels: torch.Tensor | None = None, batch_size: int = 1000
             ) -> torch.Tensor:
    """Generator output (CPU float, [0, 1]) in eval mode; the module's mode is restored."""
    g = gan.generator
    was = g.training
    device = next(g.parameters()).device
    g.eval()
    try:
        out = [g(zc.to(device), None if labels is None else labels[i * batch_size:(i + 1) * batch_size]
                 .to(device)).float().cpu()
               for i, zc in enumerate(z.split(batch_size))]
    finally:
        g.train(was)
    return torch.cat(out)


class SampleFrames(Callback):
    """Fixed-noise samples before training and after every epoch: ``samples/epoch-NNNN.png``,
    all frames in ``samples/frames.safetensors`` and their animation ``samples/progress.gif``."""

    def __init__(self, run_dir: str | Path, n: int, seed: int, gif_every_epoch: bool = True):
        self.dir = Path(run_dir) / "samples"
        self.n, self.seed, self.gif_every_epoch = n, seed, gif_every_epoch

    @property
    def ncols(self) -> int:
        return 10 if self.n % 10 == 0 else 8

    def on_fit_start(self, trainer: Trainer) -> None:
        self.z, self.labels = fixed_inputs(trainer.bare_model, self.n, self.seed)
        self.frames: dict[int, torch.Tensor] = {}
        path = self.dir / "frames.safetensors"
        if path.is_file():
            saved = load_file(str(path))
            self.frames = {int(k.split("-")[1]): v for k, v in saved.items()
                           if int(k.split("-")[1]) <= trainer.state.epoch}
        if trainer.state.epoch == 0 and trainer.state.batch == 0:
            self._record(trainer, 0)

    def _record(self, trainer: Trainer, epoch: int) -> None:
        from ..render.images import tile_images

        imgs = generate(trainer.bare_model, self.z, self.labels)
        self.frames[epoch] = (imgs * 255).round().to(torch.uint8)
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.dir / f"epoch-{epoch:04d}.png") as tmp:
            tile_images(imgs, self.ncols, 3, False).save(tmp, format="PNG")
        with atomic_path(self.dir / "frames.safetensors") as tmp:
            save_file({f"epoch-{e:04d}": f.contiguous() for e, f in sorted(self.frames.items())}, str(tmp))
        if self.gif_every_epoch:
            self.write_gif()

    def write_gif(self) -> Path | None:
        from ..render.images import save_gif

        if not self.frames:
            return None
        frames = torch.stack([f for _, f in sorted(self.frames.items())]).float() / 255
        return save_gif(frames, self.dir / "progress.gif", ncols=self.ncols, scale=2, duration_ms=200)

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        self._record(trainer, int(logs["epoch"]))


class JudgeEpochs(Callback):
    """Scores ``judge.n`` fixed-noise samples before training and after every epoch; adds
    ``fd``, ``fd_floor``, ``confidence``, ``entropy_bits`` (and ``class_match``) to the
    epoch's logs and writes ``judge.json`` and ``judge.png`` (metrics over epochs)."""

    def __init__(self, run_dir: str | Path, judge: Judge, seed: int, plot: bool = True,
                 echo: bool = True):
        self.dir = Path(run_dir)
        self.judge, self.seed, self.plot, self.echo = judge, seed, plot, echo

    def on_fit_start(self, trainer: Trainer) -> None:
        self.z, self.labels = fixed_inputs(trainer.bare_model, self.judge.n, self.seed)
        self.epochs: list[dict[str, Any]] = []
        path = self.dir / "judge.json"
        if path.is_file():
            try:
                saved = json.loads(path.read_text())["epochs"]
                self.epochs = [e for e in saved if e["epoch"] <= trainer.state.epoch]
            except (ValueError, KeyError, TypeError):
                self.epochs = []
        if trainer.state.epoch == 0 and trainer.state.batch == 0:
            self._score(trainer, 0)
            self._write()

    def _score(self, trainer: Trainer, epoch: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        imgs = generate(trainer.bare_model, self.z, self.labels)
        m = {"epoch": epoch, **self.judge(imgs, self.labels).metrics}
        m["judge_seconds"] = time.perf_counter() - t0
        self.epochs = [e for e in self.epochs if e["epoch"] != epoch] + [m]
        if self.echo:
            cm = f"  asked-for class {m['class_match']:.1%}" if m["class_match"] is not None else ""
            print(f"epoch {epoch}: Fréchet distance {m['fd']:.3f} (real-data floor {m['fd_floor']:.3f})  "
                  f"confidence {m['confidence']:.1%}  class entropy {m['entropy_bits']:.2f}/"
                  f"{m['max_entropy_bits']:.2f} bits{cm}", flush=True)
        return m

    def _write(self) -> None:
        write_json(self.dir / "judge.json", {
            "layer": self.judge.layer, "classes": self.judge.classes, "n": self.judge.n,
            "real": self.judge.real, "epochs": self.epochs})
        if self.plot and len(self.epochs) > 0:
            from .plots import plot_judge

            plot_judge(self.epochs, self.judge.classes, self.dir / "judge.png")

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        m = self._score(trainer, int(logs["epoch"]))
        for k in ("fd", "fd_floor", "confidence", "entropy_bits", "class_match"):
            if m[k] is not None:
                logs[k] = m[k]
        self._write()
