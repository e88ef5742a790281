import pickle

import numpy as np
import pytest
import torch

from kangae.data import DATASETS, load_dataset, where_is
from kangae.data.cifar import read_cifar_bin
from kangae.data.integrity import DataIntegrityWarning
from kangae.errors import DataError


def _records(labels: np.ndarray, images: np.ndarray) -> bytes:
    """The binary layout: label byte(s), then R, G and B planes of 32x32, per record."""
    labels = labels.reshape(len(images), -1).astype(np.uint8)
    return np.concatenate([labels, images.reshape(len(images), -1)], 1).tobytes()


def _images(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def write_cifar10(root, per_file=4):
    folder = root / "cifar10" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    truth = {}
    for i, name in enumerate([f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]):
        images, labels = _images(per_file, i), (np.arange(per_file) + i) % 10
        (folder / name).write_bytes(_records(labels, images))
        truth[name] = (images, labels)
    return folder, truth


def test_cifar10_reads_the_binary_layout(tmp_path):
    folder, truth = write_cifar10(tmp_path)
    with pytest.warns(DataIntegrityWarning, match="hold 20 images; the official release has 50,000"):
        train = load_dataset("cifar10", "train", data_dir=tmp_path)
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.uint8
    expected = np.concatenate([truth[f"data_batch_{k}.bin"][0] for k in range(1, 6)])
    assert np.array_equal(train.images.numpy(), expected)
    assert train.labels.tolist() == np.concatenate([truth[f"data_batch_{k}.bin"][1]
                                                    for k in range(1, 6)]).tolist()
    assert train.classes[0] == "airplane" and train.num_classes == 10 and train.source == str(folder)
    # the red plane comes first: pixel (row 3, column 5) of the green channel is byte 1024 + 3*32 + 5
    raw = (folder / "test_batch.bin").read_bytes()
    with pytest.warns(DataIntegrityWarning):
        test = load_dataset("cifar10", "test", data_dir=tmp_path)
    assert test.images[0, 1, 3, 5] == raw[1 + 1024 + 3 * 32 + 5]
    with pytest.raises(DataError, match="refused: strict"):
        load_dataset("cifar10", "test", data_dir=tmp_path, strict=True)


def test_cifar100_takes_the_fine_label_and_checks_both(tmp_path):
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    images = _images(6, 0)
    coarse, fine = np.array([0, 1, 2, 3, 4, 19]), np.array([99, 0, 50, 7, 3, 42])
    labels = np.stack([coarse, fine], 1)
    for name in ("train.bin", "test.bin"):
        (folder / name).write_bytes(_records(labels, images))
    with pytest.warns(DataIntegrityWarning):
        data = load_dataset("cifar100", "test", data_dir=tmp_path)
    assert data.labels.tolist() == fine.tolist() and data.classes[99] == "worm"
    assert np.array_equal(data.images.numpy(), images)
    bad = labels.copy()
    bad[4, 0] = 20  # coarse labels run 0..19
    (folder / "odd.bin").write_bytes(_records(bad, images))
    with pytest.raises(DataError, match=r"odd.bin: record 4 has label byte 0 = 20, outside 0..19"):
        read_cifar_bin(folder / "odd.bin", 2, 1, DATASETS["cifar100"].check_labels)


def test_truncated_empty_and_bad_label_files_name_the_file(tmp_path):
    images, labels = _images(3, 1), np.array([1, 2, 3])
    good = _records(labels, images)
    cases = {
        "cut.bin": (good[:-100], "truncated: 9,119 bytes is 2 records of 3073 bytes"),
        "empty.bin": (b"", "empty"),
        "label.bin": (_records(np.array([1, 12, 3]), images), "record 1 has label byte 0 = 12, outside 0..9"),
        "zipped.bin": (b"\x1f\x8b" + good, "unpack the .tar.gz"),
        "pickle.bin": (pickle.dumps({"data": 1}, protocol=2), "Python pickle"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=message) as e:
            read_cifar_bin(tmp_path / name)
        assert str(e.value).startswith(str(tmp_path / name))


def test_the_pickled_python_version_is_refused_not_unpickled(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()

    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("unpickled!",))

    (folder / "data_batch_1").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(DataError, match=r"pickled \"python version\"; kangae never unpickles.*"
                                        r"cifar-10-binary.tar.gz"):
        load_dataset("cifar10", "train", data_dir=tmp_path)


def test_missing_files_and_absent_data_are_clear(tmp_path):
    folder, _ = write_cifar10(tmp_path)
    (folder / "data_batch_3.bin").unlink()
    with pytest.raises(DataError, match=r"data_batch_3.bin: no such file; .* holds 5 of the 6 files"):
        load_dataset("cifar10", "test", data_dir=tmp_path)
    with pytest.raises(DataError, match="dataset 'cifar100' not found: download the binary version"):
        load_dataset("cifar100", "test", data_dir=tmp_path / "nothing")
    assert where_is("cifar100", tmp_path).startswith("not found: download cifar-100-binary.tar.gz")
    assert where_is("cifar10", tmp_path).startswith("incomplete:")
