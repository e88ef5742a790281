"""Shared fixtures: a tiny synthetic MNIST-format dataset, and the real one when present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from kangae.data import clear_cache, write_idx

torch.set_num_threads(2)

REAL_DATA = os.environ.get("KANGAE_DATA")


def make_blobs(n: int, seed: int, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Class k is a bright 6x6 square at the k-th of ten fixed places, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        r, c = 3 + 12 * ((k % 10) // 5), 2 + 5 * ((k % 10) % 5)
        images[i, r : r + 6, c : c + 6] = 255
    return images, labels.astype(np.uint8)


def write_dataset(folder: Path, n_train: int = 640, n_test: int = 200) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = make_blobs(n, seed)
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)
    return folder


@pytest.fixture(scope="session")
def blob_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root whose ``mnist/`` holds 640 train and 200 test synthetic images."""
    root = tmp_path_factory.mktemp("data")
    write_dataset(root / "mnist")
    return root


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test touches the user's cache or the network; loads are not shared across tests."""
    monkeypatch.setenv("KANGAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("KANGAE_OFFLINE", "1")
    monkeypatch.delenv("KANGAE_DATA", raising=False)
    monkeypatch.delenv("KANGAE_MIRROR", raising=False)
    clear_cache()


@pytest.fixture
def blob_data(blob_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KANGAE_DATA", str(blob_root))
    return blob_root


@pytest.fixture
def real_mnist(monkeypatch: pytest.MonkeyPatch) -> Path:
    if not REAL_DATA or not (Path(REAL_DATA) / "mnist").is_dir():
        pytest.skip("full MNIST absent: set KANGAE_DATA to a folder with mnist/ (make test does)")
    monkeypatch.setenv("KANGAE_DATA", REAL_DATA)
    return Path(REAL_DATA)


@pytest.fixture
def mlp_run(blob_data: Path, tmp_path: Path) -> Path:
    """A small MLP trained for 2 epochs on the blobs: a run folder for CLI tests."""
    import kangae

    kangae.train("mlp", out=tmp_path / "mlp", epochs=2, batch_size=32, progress=False,
                 tensorboard=False, model_args={"hidden": 64})
    return tmp_path / "mlp"


@pytest.fixture(scope="session")
def shapes_resnet_run(tmp_path_factory: pytest.TempPathFactory):
    """The zoo's ResNet-8 trained briefly on the generated ``shapes`` pictures (3x64x64, 100%
    test accuracy), once per session: the pointing game and the prototype tests share it.
    Its run folder is ``run.path``."""
    from .probes.rgb_models import shapes_resnet

    with pytest.MonkeyPatch.context() as mp:
        cache = tmp_path_factory.mktemp("shapes-cache")
        mp.setenv("KANGAE_CACHE", str(cache))
        mp.setenv("KANGAE_OFFLINE", "1")
        return shapes_resnet(cache / "models" / "resnet-shapes")
