"""Callbacks: the Solver idea of post 001. The trainer calls them; they never own the loop."""

from __future__ import annotations

import json
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import torch

from ..models.checkpoint import ModelMeta, write_checkpoint
from ..models.layers import eval_mode
from ..utils.atomic import write_bytes, write_json

if TYPE_CHECKING:
    from .trainer import Trainer


class Callback:
    """Override any hook. ``on_batch_end`` runs every step, so keep it cheap."""

    def on_fit_start(self, trainer: Trainer) -> None: ...
    def on_epoch_start(self, trainer: Trainer) -> None: ...
    def on_batch_end(self, trainer: Trainer, loss: torch.Tensor, batch_size: int) -> None: ...
    def on_epoch_end(self, trainer: Trainer, logs: dict[str, float]) -> None: ...
    def on_interrupt(self, trainer: Trainer) -> None: ...
    def on_error(self, trainer: Trainer, error: BaseException) -> None: ...
    def on_fit_end(self, trainer: Trainer) -> None: ...


def _fmt(logs: dict[str, float]) -> str:
    parts = []
    for k, v in logs.items():
        if k in ("epoch", "step"):
            continue
        parts.append(f"{k}={v:.2%}" if k.endswith("acc") else f"{k}={v:.4g}")
    return " ".join(parts)


class ProgressBar(Callback):
    """A tqdm bar with loss and accuracy on a terminal; plain lines in logs and CI."""

    def __init__(self, stream: TextIO | None = None, every: int = 20, force_plain: bool = False):
        self.stream = stream or sys.stderr
        self.every = every
        self.plain = force_plain or not getattr(self.stream, "isatty", lambda: False)()
        self.bar = None

    def on_epoch_start(self, trainer: Trainer) -> None:
        self.t0 = time.perf_counter()
        if self.plain:
            return
        from tqdm.auto import tqdm

        total = trainer.state.batches_per_epoch
        self.bar = tqdm(total=total, initial=trainer.state.batch, file=self.stream, leave=False,
                        desc=f"epoch {trainer.state.epoch + 1}/{trainer.state.epochs}",
                        dynamic_ncols=True, unit="batch")

    def on_batch_end(self, trainer: Trainer, loss: torch.Tensor, batch_size: int) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        if trainer.state.batch % self.every == 0:
            r = trainer.running_metrics()
            self.bar.set_postfix(loss=f"{r['train_loss']:.4f}", acc=f"{r['train_acc']:.2%}")

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        dt = time.perf_counter() - self.t0
        print(f"epoch {int(logs['epoch'])}/{trainer.state.epochs} {_fmt(logs)} ({dt:.1f}s)",
              file=self.stream, flush=True)

    def on_interrupt(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_error(self, trainer: Trainer, error: BaseException) -> None:
        self.on_interrupt(trainer)


class MetricsLog(Callback):
    """Appends one JSON line per epoch to ``metrics.jsonl``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_fit_start(self, trainer: Trainer) -> None:
        # Lines past the checkpoint we resumed from belong to work that was lost: drop them.
        if self.path.exists():
            kept = [m for m in read_metrics(self.path) if m.get("epoch", 0) <= trainer.state.epoch]
            write_bytes(self.path, "".join(json.dumps(m) + "\n" for m in kept).encode())

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(logs) + "\n")


class Checkpointer(Callback):
    """Writes an atomic checkpoint after every epoch (and on Ctrl-C), keeping the last few.

    ``checkpoints/latest.json`` names the newest complete checkpoint; it is replaced
    atomically after that checkpoint is whole, so a killed process never leaves a
    half-written checkpoint where a reader would look.
    """

    def __init__(self, run_dir: str | Path, meta: ModelMeta, keep: int = 2):
        self.dir = Path(run_dir) / "checkpoints"
        self.meta = meta
        self.keep = keep

    def _save(self, trainer: Trainer) -> Path:
        s = trainer.state
        name = f"epoch-{s.epoch:04d}" + (f"-batch-{s.batch:05d}" if s.batch else "")
        kept = kept_epoch(s.history)  # an early stop may have rolled the weights back
        self.meta.epoch = kept
        self.meta.metrics = dict(s.history[kept - 1]) if kept else {}
        folder = write_checkpoint(self.dir / name, trainer.bare_model, self.meta,
                                  trainer.training_state())
        write_json(self.dir / "latest.json", {"checkpoint": name, "epoch": s.epoch, "batch": s.batch})
        self._prune(keep=name)
        return folder

    def _prune(self, keep: str) -> None:
        folders = sorted(p for p in self.dir.glob("epoch-*") if p.is_dir())
        for old in folders[: -self.keep]:
            if old.name != keep:
                shutil.rmtree(old, ignore_errors=True)

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        self._save(trainer)

    def on_interrupt(self, trainer: Trainer) -> None:
        path = self._save(trainer)
        print(f"interrupted: saved {path}; continue with --resume", file=sys.stderr, flush=True)


class TensorBoardLogger(Callback):
    """Scalars every ``every`` steps and per epoch, weight histograms per epoch, the graph once."""

    def __init__(self, log_dir: str | Path, every: int = 50, histograms: bool = True,
                 graph: bool = True):
        self.log_dir, self.every = str(log_dir), every
        self.histograms, self.graph = histograms, graph
        self.writer = None

    def on_fit_start(self, trainer: Trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(self.log_dir, purge_step=trainer.state.step or None)
        self._graph_pending = self.graph and trainer.state.step == 0

    def _write_graph(self, trainer: Trainer) -> None:
        self._graph_pending = False
        if trainer.example_input is not None:
            try:
                with eval_mode(trainer.bare_model) as model, warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # tracing is deprecated but still what TB reads
                    self.writer.add_graph(model, trainer.example_input[:1])
            except Exception as e:  # tracing is best effort for arbitrary user models
                print(f"tensorboard: graph not written ({e})", file=sys.stderr)

    def on_batch_end(self, trainer: Trainer, loss: torch.Tensor, batch_size: int) -> None:
        if self._graph_pending:
            self._write_graph(trainer)
        if (trainer.state.step - 1) % self.every == 0:
            self.writer.add_scalar("batch/train_loss", float(loss), trainer.state.step)
            self.writer.add_scalar("batch/lr", trainer.lr, trainer.state.step)

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        epoch = int(logs["epoch"])
        for k, v in logs.items():
            if k not in ("epoch", "step"):
                group = "accuracy" if k.endswith("acc") else "loss" if k.endswith("loss") else "other"
                self.writer.add_scalar(f"{group}/{k}", v, epoch)
        if self.histograms:
            for name, p in trainer.bare_model.named_parameters():
                self.writer.add_histogram(f"weights/{name}", p.detach().cpu(), epoch)
        self.writer.flush()

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()

    on_interrupt = on_fit_end

    def on_error(self, trainer: Trainer, error: BaseException) -> None:
        self.on_fit_end(trainer)


def kept_epoch(history: list[dict[str, Any]]) -> int:
    """The epoch whose weights a run holds: its last, or the earlier one an early stop kept
    (``kept_epoch`` in the last line, see ``AdversarialTrainer``); 0 before any epoch."""
    return int(history[-1].get("kept_epoch", len(history))) if history else 0


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The epochs of ``metrics.jsonl``; a line cut short by a killed process is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
