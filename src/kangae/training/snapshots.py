"""Hidden-layer snapshots during training, for the embedding maps of post 003.

A callback records one layer's output on a fixed, stratified subsample (5,000 train and
1,000 test images by default) for the untrained model (epoch 0) and after every epoch,
as float16 safetensors: ``snapshots/epoch-NNNN.safetensors`` holding ``train`` and
``test`` features, beside ``snapshots/subset.safetensors`` (the subsample's images and labels)
and ``snapshots/meta.json``. At the end it gives TensorBoard's projector the final
epoch's test features with labels and a sprite of the images.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..data import ImageSet
from ..models.layers import capture, eval_mode, get_layer
from ..utils.atomic import atomic_path, write_json
from .callbacks import Callback

if TYPE_CHECKING:
    from .trainer import Trainer


def default_layer(model: nn.Module) -> str:
    """``hidden`` when the model has one (the post's Dense-512), else the module that feeds
    the last Linear layer (the penultimate representation)."""
    names = dict(model.named_modules())
    if "hidden" in names:
        return "hidden"
    ordered = [n for n in names if n]
    last_linear = max((i for i, n in enumerate(ordered) if isinstance(names[n], nn.Linear)), default=None)
    if not last_linear:
        raise ValueError("no Linear layer with a module before it; name a layer for snapshots")
    return ordered[last_linear - 1]


@torch.no_grad()
def layer_features(model: nn.Module, layer: str, images: torch.Tensor, batch_size: int = 256
                   ) -> torch.Tensor:
    """``layer``'s output, flattened, for uint8 ``images`` (eval mode, restored after)."""
    device = next(model.parameters()).device
    out = []
    with eval_mode(model), capture(model, [layer]) as feats:
        for chunk in images.split(batch_size):
            model(chunk.to(device).float().div_(255))
            out.append(feats[layer].flatten(1).float().cpu())
    return torch.cat(out)


class Snapshots(Callback):
    def __init__(self, run_dir: str | Path, train: ImageSet, test: ImageSet | None,
                 layer: str | None = None, n_train: int = 5000, n_test: int = 1000,
                 seed: int = 0, tensorboard: bool = True):
        self.dir = Path(run_dir) / "snapshots"
        self.layer = layer
        self.train = train.subset(n_train, seed=seed)
        self.test = test.subset(n_test, seed=seed) if test is not None else None
        self.tensorboard = tensorboard

    def _record(self, trainer: Trainer, epoch: int) -> None:
        model = trainer.bare_model
        tensors = {"train": layer_features(model, self.layer, self.train.images).half()}
        if self.test is not None:
            tensors["test"] = layer_features(model, self.layer, self.test.images).half()
        with atomic_path(self.dir / f"epoch-{epoch:04d}.safetensors") as tmp:
            save_file(tensors, str(tmp))

    def on_fit_start(self, trainer: Trainer) -> None:
        model = trainer.bare_model
        self.layer = self.layer or default_layer(model)
        get_layer(model, self.layer)
        self.dir.mkdir(parents=True, exist_ok=True)
        subset = {"train_labels": self.train.labels, "train_images": self.train.images}
        if self.test is not None:
            subset.update(test_labels=self.test.labels, test_images=self.test.images)
        with atomic_path(self.dir / "subset.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in subset.items()}, str(tmp))
        write_json(self.dir / "meta.json", {"layer": self.layer, "dataset": self.train.name,
                                            "classes": list(self.train.classes),
                                            "n_train": len(self.train),
                                            "n_test": len(self.test) if self.test else 0})
        if trainer.state.epoch == 0 and trainer.state.batch == 0:
            self._record(trainer, 0)

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        self._record(trainer, int(logs["epoch"]))

    def on_fit_end(self, trainer: Trainer) -> None:
        if not self.tensorboard or self.test is None:
            return
        from torch.utils.tensorboard import SummaryWriter

        feats = read_snapshot(self.dir.parent, trainer.state.epoch)["test"].float()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            writer = SummaryWriter(str(self.dir.parent))
            writer.add_embedding(feats, metadata=[self.test.classes[int(y)] for y in self.test.labels],
                                 label_img=self.test.images.float() / 255,
                                 global_step=trainer.state.epoch, tag=f"{self.layer} (test)")
            writer.close()


def snapshot_epochs(run_dir: str | Path) -> list[int]:
    files = (Path(run_dir) / "snapshots").glob("epoch-*.safetensors")
    return sorted(int(p.stem.split("-")[1]) for p in files)


def read_snapshot(run_dir: str | Path, epoch: int) -> dict[str, torch.Tensor]:
    return load_file(str(Path(run_dir) / "snapshots" / f"epoch-{epoch:04d}.safetensors"))


def read_subset(run_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    folder = Path(run_dir) / "snapshots"
    return load_file(str(folder / "subset.safetensors")), json.loads((folder / "meta.json").read_text())
