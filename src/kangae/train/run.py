"""Runs: a folder that is a TensorBoard logdir, with config, metrics and checkpoints.

``train(...)`` creates or resumes one; ``load(path)`` opens one for probing::

    run/
      config.json          what was asked for (model, dataset, recipe, seed)
      metrics.jsonl        one line per epoch
      events.out.tfevents.*
      checkpoints/latest.json, checkpoints/epoch-NNNN/ (model + training state)
      snapshots/           hidden-layer features per epoch (see ``train.snapshots``)
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import __version__
from ..data import BatchLoader, ImageSet, load_dataset
from ..errors import KangaeError, RunError
from ..models.checkpoint import ModelMeta, read_checkpoint, read_training_state
from ..models.layers import eval_mode
from ..models.zoo import DEFAULT_MODEL, Recipe, check_model_arguments, create_model, get_entry
from ..utils.atomic import remove_stale_temporaries, write_json
from ..utils.device import pick_device
from .adversarial import AdversarialSettings, AdversarialTrainer
from .adversarial import settings as adversarial_settings
from .callbacks import (
    Callback,
    Checkpointer,
    MetricsLog,
    ProgressBar,
    TensorBoardLogger,
    kept_epoch,
    read_metrics,
)
from .snapshots import Snapshots
from .trainer import Trainer, evaluate

OPTIMIZERS = ("adam", "adamw", "sgd", "gd")
SCHEDULES = ("onecycle", "cosine", "constant")


def find_checkpoint(path: str | os.PathLike) -> Path:
    """The newest complete checkpoint of a run folder (or ``path`` itself if it is one)."""
    path = Path(path)
    if not path.exists():
        raise RunError(f"{path}: no such run folder")
    if (path / "model.json").is_file():
        return path
    ckpts = path / "checkpoints"
    latest = ckpts / "latest.json"
    if latest.is_file():
        try:
            folder = ckpts / json.loads(latest.read_text())["checkpoint"]
            if (folder / "model.json").is_file():
                return folder
        except (ValueError, KeyError, TypeError):  # fall back to scanning the folders
            pass
    found = sorted(p for p in ckpts.glob("epoch-*") if (p / "model.json").is_file())
    if found:
        return found[-1]
    raise RunError(f"{path}: no checkpoint in this run folder (train one with `kangae train --out {path}`)")


@dataclass
class Run:
    """A trained model with everything recorded about it, ready for probes."""

    path: Path
    model: nn.Module
    meta: ModelMeta
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    stopped: str = ""  # why training stopped early (empty when it ran every epoch)

    @property
    def classes(self) -> list[str]:
        return list(self.meta.classes)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def dataset(self, split: str = "test", data_dir: str | os.PathLike | None = None) -> ImageSet:
        return load_dataset(self.meta.dataset, split, data_dir=data_dir)

    def evaluate(self, split: str = "test", dataset: str | None = None,
                 data_dir: str | os.PathLike | None = None, batch_size: int = 1000) -> dict[str, Any]:
        """Accuracy, cross-entropy and per-class accuracy on a dataset split."""
        data = load_dataset(dataset or self.meta.dataset, split, data_dir=data_dir)
        if data.num_classes != len(self.meta.classes):
            raise KangaeError(
                f"dataset '{data.name}' has {data.num_classes} classes but the model was "
                f"trained on {len(self.meta.classes)} ({self.meta.dataset})")
        result = evaluate(self.model, BatchLoader(data, batch_size), num_classes=data.num_classes)
        result.update(dataset=data.name, split=split, classes=list(data.classes))
        return result

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities for float images in [0, 1] of shape (N, C, H, W)."""
        with eval_mode(self.model):
            return F.softmax(self.model(images.to(self.device).float()), dim=1)


def run_folder_and_config(ckpt: Path, path: Path) -> tuple[Path, dict[str, Any]]:
    """The run folder a checkpoint belongs to, and its ``config.json`` (empty if absent)."""
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else path
    config: dict[str, Any] = {}
    if (run_dir / "config.json").is_file():
        try:
            config = json.loads((run_dir / "config.json").read_text())
        except ValueError as e:
            raise RunError(f"{run_dir / 'config.json'}: not valid JSON ({e})") from None
    return run_dir, config


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> Run:
    """Open a run folder (or a checkpoint folder) and load its newest model."""
    path = Path(path)
    ckpt = find_checkpoint(path)
    model, meta = read_checkpoint(ckpt, map_location=pick_device(device))
    run_dir, config = run_folder_and_config(ckpt, path)
    history = read_metrics(run_dir / "metrics.jsonl")
    kept = kept_epoch(history)
    stopped = (f"stopped early after epoch {len(history)}; weights of epoch {kept}"
               if kept < len(history) else "")
    return Run(path=run_dir, model=model, meta=meta, config=config, history=history, stopped=stopped)


def _optimizer(name: str, params: Any, recipe: Recipe) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=0.9, nesterov=True,
                               weight_decay=recipe.weight_decay)
    if name == "gd":
        return torch.optim.SGD(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    raise KangaeError(f"unknown optimizer '{name}'; use one of {', '.join(OPTIMIZERS)}")


def _scheduler(name: str, opt: torch.optim.Optimizer, recipe: Recipe, steps: int
               ) -> torch.optim.lr_scheduler.LRScheduler | None:
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps)
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    if name == "constant":
        return None
    raise KangaeError(f"unknown schedule '{name}'; use one of {', '.join(SCHEDULES)}")


def _dist_env() -> tuple[int, int, int]:
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def _setup_distributed(device: torch.device, world: int, local_rank: int) -> torch.device:
    if world <= 1:
        return device
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def train(model: str = DEFAULT_MODEL, dataset: str = "mnist", *,
          out: str | os.PathLike | None = None, epochs: int | None = None,
          batch_size: int | None = None, lr: float | None = None,
          optimizer: str | None = None, schedule: str | None = None,
          weight_decay: float | None = None, max_shift: int | None = None,
          seed: int = 0, device: str = "auto", data_dir: str | os.PathLike | None = None,
          limit: int | None = None, resume: bool = False, amp: bool | None = None,
          progress: bool = True, tensorboard: bool = True,
          snapshots: bool = True, snapshot_layer: str | None = None,
          model_args: dict[str, Any] | None = None,
          adversarial: str | None = None, eps: float | None = None,
          adversarial_options: dict[str, Any] | None = None,
          callbacks: Sequence[Callback] = ()) -> Run:
    """Train a zoo model on an MNIST-family dataset; return the finished :class:`Run`.

    Unset hyperparameters come from the model's recipe (``kangae models`` lists them).
    ``resume=True`` continues the run in ``out`` exactly where its last checkpoint left off.
    ``snapshots`` records ``snapshot_layer`` (default: the penultimate) on a fixed subsample
    at epoch 0 and after every epoch, for ``kangae dynamics``.
    Under ``torchrun`` each process trains on its share of every batch (DDP; gloo on CPU).
    ``adversarial="fgsm-rs"`` or ``"pgd"`` with ``eps`` trains on L-infinity perturbed
    batches (``train.adversarial``; ``adversarial_options``: alpha, steps, warmup_epochs,
    check_images, check_drop).
    """
    entry = get_entry(model)
    if not resume:
        check_model_arguments(model, model_args or {})
    run_dir = Path(out) if out else Path("runs") / f"{model}-{dataset}"
    rank, world, local_rank = _dist_env()
    adv = _adversarial_settings(adversarial, eps, adversarial_options)
    resume_from: Path | None = None
    overrides = {k: v for k, v in dict(
        epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, schedule=schedule,
        weight_decay=weight_decay, max_shift=max_shift).items() if v is not None}
    if rank == 0:
        remove_stale_temporaries(run_dir / "checkpoints")
    if resume:
        resume_from = find_checkpoint(run_dir)
        try:
            config = json.loads((run_dir / "config.json").read_text())
        except (OSError, ValueError) as e:
            raise RunError(f"{run_dir / 'config.json'}: cannot resume without the run's "
                           f"config ({e})") from None
        if config.get("adversarial"):  # runs from before the check had none: keep it that way
            config["adversarial"].setdefault("check_images", 0)
        asked = {**overrides, "limit": limit} if limit is not None else dict(overrides)
        saved = {**config["recipe"], "limit": config.get("limit")}
        if model != DEFAULT_MODEL:
            asked["model"], saved["model"] = model, config["model"]
        if dataset != "mnist":
            asked["dataset"], saved["dataset"] = dataset, config["dataset"]
        if model_args:
            asked["model_args"], saved["model_args"] = dict(model_args), config.get("model_args", {})
        if adv is not None:  # the check is the run's own: compare what shapes the training
            before = config.get("adversarial")
            guard = ("check_images", "check_drop")
            asked["adversarial"] = {k: v for k, v in adv.to_dict().items() if k not in guard}
            saved["adversarial"] = {k: v for k, v in AdversarialSettings(**before).to_dict().items()
                                    if k not in guard} if before else None
        differ = [f"{k}={v} (run has {saved[k]})" for k, v in asked.items() if saved.get(k) != v]
        if differ:
            raise KangaeError(f"{run_dir} was configured otherwise: {', '.join(differ)}; "
                              "--resume continues the run as configured")
    else:
        if (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").glob("epoch-*")):
            raise KangaeError(f"{run_dir} already holds a run; pass --resume to continue it "
                              "or choose another --out")
        recipe = replace(entry.recipe, **overrides)
        if recipe.epochs < 1 or recipe.batch_size < 1 or recipe.lr <= 0:
            raise KangaeError("epochs and batch size must be at least 1 and lr positive")
        config = {
            "model": model, "model_args": dict(model_args or {}), "dataset": dataset,
            "recipe": recipe.to_dict(), "seed": seed, "limit": limit,
            "adversarial": adv.to_dict() if adv else None,
            "validation": "test split", "kangae": __version__, "torch": torch.__version__,
        }
    recipe = Recipe(**config["recipe"])
    train_set = load_dataset(config["dataset"], "train", data_dir=data_dir)
    train_set = train_set.subset(config["limit"], seed=config["seed"])
    val_set = load_dataset(config["dataset"], "test", data_dir=data_dir)

    dev = _setup_distributed(pick_device(device), world, local_rank)
    torch.manual_seed(config["seed"])
    model_args = {"image_size": train_set.images.shape[-1], **config["model_args"]}
    try:
        net = create_model(config["model"], num_classes=train_set.num_classes,
                           in_channels=train_set.images.shape[1], **model_args)
    except (TypeError, ValueError, RuntimeError) as e:  # e.g. a negative width
        raise KangaeError(f"cannot build model '{config['model']}' with "
                          f"{config['model_args']}: {e}") from None
    norm = config.get("normalization")
    mean, std = (norm["mean"][0], norm["std"][0]) if resume and norm else train_set.stats()
    if hasattr(net, "normalize"):
        net.normalize.mean.fill_(mean)
        net.normalize.std.fill_(std)
    net.to(dev)

    loader = BatchLoader(train_set, recipe.batch_size, shuffle=True, seed=config["seed"],
                         max_shift=recipe.max_shift, drop_last=True, rank=rank, world_size=world,
                         device=dev)
    if len(loader) == 0:
        raise KangaeError(f"batch size {recipe.batch_size} is larger than the "
                          f"{loader.samples_per_rank} training images each process gets")
    val_loader = BatchLoader(val_set, 1000, device=dev)
    opt = _optimizer(recipe.optimizer, net.parameters(), recipe)
    sched = _scheduler(recipe.schedule, opt, recipe, recipe.epochs * len(loader))

    meta = ModelMeta(model=config["model"], model_args=model_args,
                     dataset=train_set.name, classes=list(train_set.classes),
                     input_shape=list(train_set.images.shape[1:]))
    cbs: list[Callback] = []
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            write_json(run_dir / "config.json", {**config, "normalization": {"mean": [mean], "std": [std]},
                                                 "train_source": train_set.source})
        if progress:
            cbs.append(ProgressBar())
        cbs += [MetricsLog(run_dir / "metrics.jsonl"), Checkpointer(run_dir, meta)]
        if tensorboard:
            cbs.append(TensorBoardLogger(run_dir))
        if snapshots:
            cbs.append(Snapshots(run_dir, train_set, val_set, layer=snapshot_layer,
                                 seed=config["seed"], tensorboard=tensorboard))
    cbs += list(callbacks)

    wrapped: nn.Module = net
    if world > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            net, device_ids=[dev.index] if dev.type == "cuda" else None)
    trainer_kwargs: dict[str, Any] = dict(scheduler=sched, callbacks=cbs, amp=amp,
                                          loss_fn=_loss(recipe.label_smoothing))
    if config.get("adversarial"):
        adv_settings = AdversarialSettings(**config["adversarial"])
        check = None
        if adv_settings.check_images:
            # Training images, as in Wong et al.: the test split stays unseen by model selection.
            chosen = train_set.subset(adv_settings.check_images, seed=config["seed"] + 1)
            check = (chosen.floats().to(dev), chosen.labels.long().to(dev))
        trainer: Trainer = AdversarialTrainer(wrapped, opt, adversarial=adv_settings, check=check,
                                              **trainer_kwargs)
    else:
        trainer = Trainer(wrapped, opt, **trainer_kwargs)
    if resume_from is not None:
        weights, _ = read_checkpoint(resume_from, map_location=dev)
        net.load_state_dict(weights.state_dict())
        state = read_training_state(resume_from)
        if state is None:
            raise RunError(f"{resume_from}: holds weights but no training state to resume from")
        trainer.load_training_state(state)
    trainer.fit(loader, val_loader, epochs=recipe.epochs)
    if world > 1:
        torch.distributed.barrier()
    if rank == 0 and progress:
        if trainer.state.stopped:
            print(f"stopped early: {trainer.state.stopped}", file=sys.stderr, flush=True)
        robust = [h["train_pgd_acc"] for h in trainer.state.history if "train_pgd_acc" in h]
        if robust and max(robust) < 0.1:
            print(f"warning: PGD-10 accuracy on training images never passed {max(robust):.1%}: "
                  "the model is not robust (FGSM training can overfit catastrophically from the "
                  "start); try --eps-warmup 2 or --adversarial pgd", file=sys.stderr, flush=True)
    net.eval()
    return Run(path=run_dir, model=net, meta=meta, config=config,
               history=list(trainer.state.history), stopped=trainer.state.stopped)


def _adversarial_settings(method: str | None, eps: float | None,
                          options: dict[str, Any] | None) -> AdversarialSettings | None:
    if method is None:
        if eps is not None or options:
            raise KangaeError("--eps, --eps-warmup, --adv-steps, --adv-alpha and --adv-check set up "
                              "adversarial training: pass --adversarial too")
        return None
    if eps is None:
        raise KangaeError(f"--adversarial {method} needs --eps (e.g. 0.3 on MNIST)")
    return adversarial_settings(method, eps, **(options or {}))


def _loss(label_smoothing: float):
    if not label_smoothing:
        return F.cross_entropy

    def smoothed(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing)

    return smoothed
