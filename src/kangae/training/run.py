"""Runs: a folder that is a TensorBoard logdir, with config, metrics and checkpoints.

``train(...)`` creates or resumes one; ``load(path)`` opens one for probing::

    run/
      config.json          what was asked for (model, dataset, recipe, seed)
      metrics.jsonl        one line per epoch
      events.out.tfevents.*
      checkpoints/latest.json, checkpoints/epoch-NNNN/ (model + training state)
      snapshots/           hidden-layer features per epoch (see ``training.snapshots``)
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
from ..data.pictures import PictureError
from ..data.registry import DATASETS
from ..errors import KangaeError, RunError
from ..models.card import ModelCard
from ..models.checkpoint import ModelMeta, read_checkpoint
from ..models.layers import eval_mode
from ..models.open import open_net
from ..models.zoo import DEFAULT_MODEL, Recipe, check_model_arguments, create_model, get_entry
from ..utils.atomic import write_json
from ..utils.device import module_device, pick_device
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
from .folders import restore, start_or_resume
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
    card: ModelCard | None = None  # what the model expects (kangae runs: from the checkpoint)
    images: ImageSet | None = None  # the user's pictures (``--images``), used instead of a dataset
    image_errors: list[PictureError] = field(default_factory=list)  # the pictures that were left out

    @property
    def classes(self) -> list[str]:
        return list(self.meta.classes)

    @property
    def device(self) -> torch.device:
        return module_device(self.model)

    def dataset(self, split: str = "test", data_dir: str | os.PathLike | None = None) -> ImageSet:
        """The user's ``images`` when given, else the split of the dataset the model knows."""
        if self.images is not None:
            return self.images
        if not self.meta.dataset:
            raise KangaeError(f"{self.meta.model}: the model card names no dataset kangae can load; "
                              "give pictures with --images FOLDER")
        return load_dataset(self.meta.dataset, split, data_dir=data_dir)

    def evaluate(self, split: str = "test", dataset: str | None = None,
                 data_dir: str | os.PathLike | None = None, batch_size: int = 1000) -> dict[str, Any]:
        """Accuracy, cross-entropy and per-class accuracy on a dataset split."""
        data = (load_dataset(dataset, split, data_dir=data_dir) if dataset
                else self.dataset(split, data_dir=data_dir))
        if data.num_classes != len(self.meta.classes):
            raise KangaeError(
                f"dataset '{data.name}' has {data.num_classes} classes but the model was "
                f"trained on {len(self.meta.classes)} ({self.meta.dataset})")
        result = evaluate(self.model, BatchLoader(data, batch_size), num_classes=data.num_classes)
        result.update(dataset=data.name, split=data.split, classes=list(data.classes))
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
    model.input_shape = tuple(meta.input_shape)
    return Run(path=run_dir, model=model, meta=meta, config=config, history=history, stopped=stopped,
               card=card_of_meta(meta))


def card_of_meta(meta: ModelMeta) -> ModelCard:
    """A kangae checkpoint's card: its models normalize themselves; digits are preprocessed as MNIST."""
    c, h, w = meta.input_shape
    digits = c == 1 and (h, w) == (28, 28)
    return ModelCard(channels=c, size=(h, w), normalizes_itself=True, classes=tuple(meta.classes),
                     dataset=meta.dataset, name=meta.model, preprocess="mnist" if digits else "stretch",
                     source="run")


def open_model(spec: str | os.PathLike, *, weights: str | os.PathLike | None = None,
               card: ModelCard | str | os.PathLike | dict[str, Any] | None = None,
               device: str | torch.device = "cpu", images: str | os.PathLike | None = None,
               out_root: str | os.PathLike = "kangae-out") -> Run:
    """Open any image classifier named by ``spec`` (see :mod:`kangae.models.open`): a kangae run,
    a zoo name or factory with ``weights``, TorchScript, ``.pt2``, ONNX, ``torchvision:NAME`` or
    ``timm:NAME``. ``images`` is a folder of the user's pictures (see
    :func:`kangae.data.folder.read_image_folder`). Runs that kangae did not train write their
    outputs under ``out_root/<name>``."""
    from ..data.folder import read_image_folder

    path = Path(spec)
    if path.is_dir():  # a run or checkpoint folder (load says what is missing from one)
        if weights is not None or card is not None:
            raise RunError(f"{spec}: a kangae run carries its own weights and card; "
                           "--weights and --card are for other models")
        run = load(path, device=device)
    else:
        model, full = open_net(spec, weights=weights, card=card)
        meta = ModelMeta(model=full.name, dataset=full.dataset if full.dataset in DATASETS else "",
                         classes=list(full.classes or ()), input_shape=list(full.input_shape),
                         normalization={"mean": list(full.mean), "std": list(full.std)} if full.mean else {})
        config = {"spec": str(spec), "weights": str(weights) if weights else None, "card": full.to_dict()}
        run = Run(path=Path(out_root) / full.name, model=model.to(pick_device(device)), meta=meta,
                  config=config, card=full)
    if images is not None:
        folder = read_image_folder(images, run.card)  # type: ignore[arg-type]
        run.images, run.image_errors = folder.images, folder.errors
    return run


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


@dataclass(frozen=True)
class RunConfig:
    """What a run is, as asked for: the model and its arguments, the dataset, the recipe
    values that override the model's defaults, the seed, the training subset and the
    adversarial settings. A new run saves it (with the full recipe) as ``config.json``; a
    resumed run must ask for nothing that differs from what it saved."""

    model: str = DEFAULT_MODEL
    dataset: str = "mnist"
    overrides: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    limit: int | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    adversarial: AdversarialSettings | None = None

    @classmethod
    def build(cls, model: str = DEFAULT_MODEL, dataset: str = "mnist", *, seed: int = 0,
              limit: int | None = None, model_args: dict[str, Any] | None = None,
              adversarial: str | None = None, eps: float | None = None,
              adversarial_options: dict[str, Any] | None = None, **recipe: Any) -> RunConfig:
        """One step from ``train``'s keyword arguments; unset recipe values are left out."""
        get_entry(model)
        return cls(model=model, dataset=dataset, seed=seed, limit=limit,
                   overrides={k: v for k, v in recipe.items() if v is not None},
                   model_args=dict(model_args or {}),
                   adversarial=_adversarial_settings(adversarial, eps, adversarial_options))

    def new(self) -> dict[str, Any]:
        """The ``config.json`` of a new run: the model's recipe with the overrides applied."""
        check_model_arguments(self.model, self.model_args)
        recipe = replace(get_entry(self.model).recipe, **self.overrides)
        if recipe.epochs < 1 or recipe.batch_size < 1 or recipe.lr <= 0:
            raise KangaeError("epochs and batch_size must be at least 1 and lr positive")
        return {
            "model": self.model, "model_args": dict(self.model_args), "dataset": self.dataset,
            "recipe": recipe.to_dict(), "seed": self.seed, "limit": self.limit,
            "adversarial": self.adversarial.to_dict() if self.adversarial else None,
            "validation": "test split", "kangae": __version__, "torch": torch.__version__,
        }

    def check_resume(self, config: dict[str, Any], run_dir: Path) -> None:
        """Refuse a resume that asks for anything the saved ``config`` does not hold."""
        asked = {**self.overrides, "limit": self.limit} if self.limit is not None else dict(self.overrides)
        saved = {**config["recipe"], "limit": config.get("limit")}
        if self.model != DEFAULT_MODEL:
            asked["model"], saved["model"] = self.model, config["model"]
        if self.dataset != "mnist":
            asked["dataset"], saved["dataset"] = self.dataset, config["dataset"]
        if self.model_args:
            asked["model_args"], saved["model_args"] = dict(self.model_args), config.get("model_args", {})
        if self.adversarial is not None:  # the check is the run's own: compare what shapes training
            before = config.get("adversarial")
            guard = ("check_images", "check_drop")
            asked["adversarial"] = {k: v for k, v in self.adversarial.to_dict().items() if k not in guard}
            saved["adversarial"] = {k: v for k, v in AdversarialSettings(**before).to_dict().items()
                                    if k not in guard} if before else None
        differ = [f"{k}={v} (run has {saved[k]})" for k, v in asked.items() if saved.get(k) != v]
        if differ:
            raise KangaeError(f"{run_dir} was configured otherwise: {', '.join(differ)}; "
                              "resuming continues the run as configured")


@dataclass
class _Parts:
    """What one training session is built from, step by step."""

    run_dir: Path
    config: dict[str, Any]
    resume_from: Path | None
    train_set: ImageSet
    val_set: ImageSet
    device: torch.device
    rank: int
    world: int


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
    batches (``training.adversarial``; ``adversarial_options``: alpha, steps, warmup_epochs,
    check_images, check_drop).
    """
    asked = RunConfig.build(model, dataset, seed=seed, limit=limit, model_args=model_args,
                            adversarial=adversarial, eps=eps, adversarial_options=adversarial_options,
                            epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                            schedule=schedule, weight_decay=weight_decay, max_shift=max_shift)
    run_dir = Path(out) if out else Path("runs") / f"{model}-{dataset}"
    parts = _prepare(asked, run_dir, resume, device, data_dir)
    net, meta, norm = _build_model(parts)
    cbs = _callbacks(parts, meta, norm, progress=progress, tensorboard=tensorboard,
                     snapshots=snapshots, snapshot_layer=snapshot_layer) + list(callbacks)
    trainer, loader, val_loader = _trainer(parts, net, cbs, amp)
    if parts.resume_from is not None:
        weights = lambda ckpt: read_checkpoint(ckpt, map_location=parts.device)[0].state_dict()  # noqa: E731
        restore(trainer, parts.resume_from, lambda ckpt: net.load_state_dict(weights(ckpt)))
    trainer.fit(loader, val_loader, epochs=Recipe(**parts.config["recipe"]).epochs)
    if parts.world > 1:
        torch.distributed.barrier()
    if parts.rank == 0 and progress:
        _warn_after(trainer)
    net.eval()
    return Run(path=run_dir, model=net, meta=meta, config=parts.config,
               history=list(trainer.state.history), stopped=trainer.state.stopped)


def _prepare(asked: RunConfig, run_dir: Path, resume: bool, device: str,
             data_dir: str | os.PathLike | None) -> _Parts:
    """The run's config (new, or saved and checked against what was asked), its data, and
    the device of this process."""
    rank, world, local_rank = _dist_env()
    saved, resume_from = start_or_resume(run_dir, resume, clean=rank == 0)
    if saved is not None:
        config = saved
        if config.get("adversarial"):  # runs from before the check had none: keep it that way
            config["adversarial"].setdefault("check_images", 0)
        asked.check_resume(config, run_dir)
    else:
        config = asked.new()
    train_set = load_dataset(config["dataset"], "train", data_dir=data_dir)
    train_set = train_set.subset(config["limit"], seed=config["seed"])
    val_set = load_dataset(config["dataset"], "test", data_dir=data_dir)
    dev = _setup_distributed(pick_device(device), world, local_rank)
    return _Parts(run_dir, config, resume_from, train_set, val_set, dev, rank, world)


def _build_model(parts: _Parts) -> tuple[nn.Module, ModelMeta, tuple[float, float]]:
    """The zoo model, seeded, with the training set's normalization, on the device."""
    config, train_set = parts.config, parts.train_set
    torch.manual_seed(config["seed"])
    model_args = {"image_size": train_set.images.shape[-1], **config["model_args"]}
    try:
        net = create_model(config["model"], num_classes=train_set.num_classes,
                           in_channels=train_set.images.shape[1], **model_args)
    except (TypeError, ValueError, RuntimeError) as e:  # e.g. a negative width
        raise KangaeError(f"cannot build model '{config['model']}' with "
                          f"{config['model_args']}: {e}") from None
    norm = config.get("normalization")
    mean, std = (norm["mean"][0], norm["std"][0]) if parts.resume_from and norm else train_set.stats()
    if hasattr(net, "normalize"):
        net.normalize.mean.fill_(mean)
        net.normalize.std.fill_(std)
    net.to(parts.device)
    meta = ModelMeta(model=config["model"], model_args=model_args,
                     dataset=train_set.name, classes=list(train_set.classes),
                     input_shape=list(train_set.images.shape[1:]))
    return net, meta, (mean, std)


def _callbacks(parts: _Parts, meta: ModelMeta, norm: tuple[float, float], *, progress: bool,
               tensorboard: bool, snapshots: bool, snapshot_layer: str | None) -> list[Callback]:
    """Rank 0 writes the config and keeps the records: progress, metrics, checkpoints,
    TensorBoard and hidden-layer snapshots."""
    if parts.rank != 0:
        return []
    run_dir, config = parts.run_dir, parts.config
    run_dir.mkdir(parents=True, exist_ok=True)
    if parts.resume_from is None:
        write_json(run_dir / "config.json", {**config, "normalization": {"mean": [norm[0]], "std": [norm[1]]},
                                             "train_source": parts.train_set.source})
    cbs: list[Callback] = [ProgressBar()] if progress else []
    cbs += [MetricsLog(run_dir / "metrics.jsonl"), Checkpointer(run_dir, meta)]
    if tensorboard:
        cbs.append(TensorBoardLogger(run_dir))
    if snapshots:
        cbs.append(Snapshots(run_dir, parts.train_set, parts.val_set, layer=snapshot_layer,
                             seed=config["seed"], tensorboard=tensorboard))
    return cbs


def _trainer(parts: _Parts, net: nn.Module, cbs: list[Callback], amp: bool | None
             ) -> tuple[Trainer, BatchLoader, BatchLoader]:
    """Batches, optimizer, schedule and the trainer (adversarial when the config says so)."""
    config, dev = parts.config, parts.device
    recipe = Recipe(**config["recipe"])
    loader = BatchLoader(parts.train_set, recipe.batch_size, shuffle=True, seed=config["seed"],
                         max_shift=recipe.max_shift, drop_last=True, rank=parts.rank,
                         world_size=parts.world, device=dev)
    if len(loader) == 0:
        raise KangaeError(f"batch size {recipe.batch_size} is larger than the "
                          f"{loader.samples_per_rank} training images each process gets")
    val_loader = BatchLoader(parts.val_set, 1000, device=dev)
    opt = _optimizer(recipe.optimizer, net.parameters(), recipe)
    sched = _scheduler(recipe.schedule, opt, recipe, recipe.epochs * len(loader))
    wrapped: nn.Module = net
    if parts.world > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            net, device_ids=[dev.index] if dev.type == "cuda" else None)
    kwargs: dict[str, Any] = dict(scheduler=sched, callbacks=cbs, amp=amp,
                                  loss_fn=_loss(recipe.label_smoothing))
    if not config.get("adversarial"):
        return Trainer(wrapped, opt, **kwargs), loader, val_loader
    adv = AdversarialSettings(**config["adversarial"])
    check = None
    if adv.check_images:
        # Training images, as in Wong et al.: the test split stays unseen by model selection.
        chosen = parts.train_set.subset(adv.check_images, seed=config["seed"] + 1)
        check = (chosen.floats().to(dev), chosen.labels.long().to(dev))
    return AdversarialTrainer(wrapped, opt, adversarial=adv, check=check, **kwargs), loader, val_loader


def _warn_after(trainer: Trainer) -> None:
    if trainer.state.stopped:
        print(f"stopped early: {trainer.state.stopped}", file=sys.stderr, flush=True)
    robust = [h["train_pgd_acc"] for h in trainer.state.history if "train_pgd_acc" in h]
    if robust and max(robust) < 0.1:
        print(f"warning: PGD-10 accuracy on training images never passed {max(robust):.1%}: "
              "the model is not robust (FGSM training can overfit catastrophically from the "
              "start); try --eps-warmup 2 or --adversarial pgd", file=sys.stderr, flush=True)


def _adversarial_settings(method: str | None, eps: float | None,
                          options: dict[str, Any] | None) -> AdversarialSettings | None:
    if method is None:
        if eps is not None or options:
            raise KangaeError("eps and adversarial_options set up adversarial training: "
                              "pass adversarial='fgsm-rs' or 'pgd' too")
        return None
    if eps is None:
        raise KangaeError(f"adversarial='{method}' needs eps (e.g. 0.3 on MNIST)")
    return adversarial_settings(method, eps, **(options or {}))


def _loss(label_smoothing: float):
    if not label_smoothing:
        return F.cross_entropy

    def smoothed(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing)

    return smoothed
