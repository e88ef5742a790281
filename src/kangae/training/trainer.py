"""A training loop with callbacks (the ``Solver`` of post 001, done well).

The loop keeps per-batch work to what a hand-written loop does: loss and accuracy are
summed as tensors and read at the end of the epoch (and every few batches by a progress
bar on a terminal), so the trainer runs at bare-loop speed.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import KangaeError
from ..models.layers import eval_mode
from ..utils.device import module_device
from .callbacks import Callback

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    batch: int = 0  # batches completed in the current epoch (non-zero only when interrupted)
    step: int = 0  # optimizer steps in all
    epochs: int = 0  # epochs asked for
    batches_per_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    running: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # loss sum, correct, n
    stopped: str = ""  # why training ended before ``epochs`` (a resume does not continue it)
    interrupted: bool = False


class TrainingDiverged(KangaeError):
    """The loss stopped being a number: raised at the end of the epoch, before its weights
    are saved, so the run keeps the last epoch that was finite."""


class TrainingInterrupted(Exception):
    """Raised by :meth:`Trainer.fit` after Ctrl-C, once callbacks have saved the state."""

    def __init__(self, state: TrainState):
        super().__init__(f"interrupted in epoch {state.epoch + 1} after {state.batch} batches")
        self.state = state


class _StopFlag:
    """The first SIGINT asks the loop to stop after the current batch; a second one kills."""

    def __init__(self) -> None:
        self.set = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.set:
            raise KeyboardInterrupt
        self.set = True

    def __enter__(self) -> _StopFlag:
        self._installed = threading.current_thread() is threading.main_thread()
        if self._installed:
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._installed:  # a handler not set from Python reads as None: restore the default
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.SIG_DFL)


def _is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class Trainer:
    """Fit a classifier with any optimizer, optional scheduler, AMP on CUDA, and callbacks.

    ``scheduler_interval`` is ``"step"`` (e.g. OneCycleLR) or ``"epoch"``. Subclass and
    override :meth:`compute_loss` for other objectives (adversarial training does).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *,
                 loss_fn: LossFn = F.cross_entropy,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                 scheduler_interval: str = "step",
                 callbacks: Sequence[Callback] = (),
                 amp: bool | None = None,
                 grad_clip: float | None = None):
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.scheduler = scheduler
        self.scheduler_interval = scheduler_interval
        self.callbacks = list(callbacks)
        self.device = module_device(model)
        self.amp = (self.device.type == "cuda") if amp is None else amp
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.device.type == "cuda")
        self.grad_clip = grad_clip
        self.state = TrainState()
        self.example_input: torch.Tensor | None = None

    @property
    def bare_model(self) -> nn.Module:
        """The model without a DistributedDataParallel wrapper."""
        return getattr(self.model, "module", self.model)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _emit(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def compute_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(loss, logits)`` for one batch."""
        logits = self.model(x)
        return self.loss_fn(logits, y), logits

    def check_epoch(self, logs: dict[str, float]) -> None:
        """Called after validation, before callbacks see ``logs``: add metrics there, or set
        ``state.stopped`` to end training after this epoch (subclasses do)."""

    def extra_state(self) -> dict[str, Any]:
        """What a subclass needs to resume besides the loop's own state (tensors allowed)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""

    def _step(self, x: torch.Tensor, y: torch.Tensor, acc: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, enabled=self.amp):
            loss, logits = self.compute_loss(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()
        loss = loss.detach()
        acc[0] += loss * y.shape[0]
        acc[1] += (logits.detach().argmax(1) == y).sum()
        acc[2] += y.shape[0]
        return loss

    def running_metrics(self) -> dict[str, float]:
        acc = self._acc.tolist() if hasattr(self, "_acc") else [0.0, 0.0, 0.0]
        total = [a + b for a, b in zip(self.state.running, acc)]
        n = max(total[2], 1.0)
        return {"train_loss": total[0] / n, "train_acc": total[1] / n}

    def fit(self, train: Iterable[tuple[torch.Tensor, torch.Tensor]],
            val: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
            epochs: int = 1) -> list[dict[str, float]]:
        """Train until ``epochs`` epochs are complete (counting epochs already done)."""
        s = self.state
        s.epochs = epochs
        s.batches_per_epoch = len(train) if hasattr(train, "__len__") else 0
        self._emit("on_fit_start")
        try:
            self._loop(train, val, epochs)
        except TrainingInterrupted:
            raise
        except BaseException as e:
            self._emit("on_error", e)
            raise
        self._emit("on_fit_end")
        return s.history

    def _loop(self, train: Iterable[tuple[torch.Tensor, torch.Tensor]],
              val: Iterable[tuple[torch.Tensor, torch.Tensor]] | None, epochs: int) -> None:
        s = self.state
        with _StopFlag() as stop:
            while s.epoch < epochs and not s.stopped:
                if hasattr(train, "set_epoch"):
                    train.set_epoch(s.epoch, s.batch)
                self.model.train()
                self._emit("on_epoch_start")
                self._acc = torch.zeros(3, device=self.device, dtype=torch.float64)
                for x, y in train:
                    x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                    if self.example_input is None:
                        self.example_input = x[:1].detach()
                    loss = self._step(x, y, self._acc)
                    s.batch += 1
                    s.step += 1
                    self._emit("on_batch_end", loss, y.shape[0])
                    if stop.set:
                        self._fold_running()
                        s.interrupted = True
                        self._emit("on_interrupt")
                        raise TrainingInterrupted(s)
                self._end_epoch(val)

    def _fold_running(self) -> None:
        self.state.running = [a + b for a, b in zip(self.state.running, self._acc.tolist())]
        self._acc.zero_()

    def _end_epoch(self, val: Iterable | None) -> None:
        s = self.state
        self._fold_running()
        totals = torch.tensor(s.running, dtype=torch.float64, device=self.device)
        if _is_distributed():
            torch.distributed.all_reduce(totals)
        loss_sum, correct, n = totals.tolist()
        logs = {"epoch": s.epoch + 1, "step": s.step,
                "train_loss": loss_sum / max(n, 1), "train_acc": correct / max(n, 1)}
        if val is not None:
            ev = evaluate(self.bare_model, val)
            logs.update(val_loss=ev["loss"], val_acc=ev["accuracy"])
        bad = [k for k in ("train_loss", "val_loss") if k in logs and not math.isfinite(logs[k])]
        if bad:
            kept = f"epoch {s.epoch}'s" if s.epoch else "no"
            raise TrainingDiverged(f"training diverged in epoch {s.epoch + 1}: {bad[0]} is {logs[bad[0]]} "
                                   f"(the learning rate is likely too high); {kept} weights are kept")
        self.check_epoch(logs)
        logs["lr"] = self.lr
        if self.scheduler is not None and self.scheduler_interval == "epoch":
            self.scheduler.step()
        s.epoch += 1
        s.batch = 0
        s.running = [0.0, 0.0, 0.0]
        s.history.append(logs)
        self._emit("on_epoch_end", logs)

    # -- resumable state ------------------------------------------------------------------
    def training_state(self) -> dict[str, Any]:
        """Everything :meth:`load_training_state` needs to continue exactly (no pickling)."""
        st = asdict(self.state)
        st.pop("interrupted")
        out: dict[str, Any] = {
            "trainer": st,
            "optimizer": self.optimizer.state_dict(),
            "rng_cpu": torch.get_rng_state(),
        }
        if self.scheduler is not None:
            out["scheduler"] = self.scheduler.state_dict()
        if self.scaler.is_enabled():
            out["scaler"] = self.scaler.state_dict()
        if torch.cuda.is_available():
            out["rng_cuda"] = torch.cuda.get_rng_state_all()
        extra = self.extra_state()
        if extra:
            out["extra"] = extra
        return out

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state and torch.cuda.is_available():
            with contextlib.suppress(RuntimeError):
                torch.cuda.set_rng_state_all(list(state["rng_cuda"]))
        self.load_extra_state(state.get("extra", {}))
        t = dict(state["trainer"])
        t["history"] = [dict(h) for h in t.get("history", [])]
        if _is_distributed() and torch.distributed.get_rank() != 0:
            t["running"] = [0.0, 0.0, 0.0]  # rank 0's partial-epoch sums are counted once
        self.state = TrainState(**t)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
             num_classes: int | None = None) -> dict[str, Any]:
    """Cross-entropy, accuracy and per-class accuracy over ``batches`` (mode restored)."""
    device = module_device(model)
    with eval_mode(model):
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        preds, labels = [], []
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            logits = model(x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
            preds.append(logits.argmax(1).cpu())
            labels.append(y.cpu())
    pred, label = torch.cat(preds), torch.cat(labels)
    k = num_classes or int(max(pred.max(), label.max()) + 1)
    per_class_total = torch.bincount(label, minlength=k).double()
    per_class_right = torch.bincount(label[pred == label], minlength=k).double()
    return {
        "loss": float(loss_sum) / len(label),
        "accuracy": float((pred == label).double().mean()),
        "per_class_accuracy": (per_class_right / per_class_total.clamp(min=1)).tolist(),
        "per_class_n": per_class_total.long().tolist(),
        "n": len(label),
    }
