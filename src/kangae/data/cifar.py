"""CIFAR-10 and CIFAR-100 (Krizhevsky, "Learning Multiple Layers of Features from Tiny Images",
2009), read from their binary version with numpy.

A binary file is a run of fixed-size records: the label byte(s), then a 32 x 32 RGB image as
1,024 red, 1,024 green and 1,024 blue bytes, row by row. Every error names the file and the
problem (empty, truncated record, label out of range, a pickle where a binary file should be).
The pickled "python version" of the datasets is refused with a message, never unpickled: a
pickle can run any code when it is loaded.
"""

from __future__ import annotations

import os
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .imageset import ImageSet
from .integrity import DataIntegrityWarning, is_strict
from .registry import CifarSpec, get_spec
from .store import locate, search_roots

PIXELS = 3 * 32 * 32
_PICKLE_START = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def read_cifar_bin(path: str | os.PathLike, label_bytes: int = 1, label_index: int = 0,
                   check_labels: tuple[tuple[int, int], ...] = ((0, 10),)) -> tuple[np.ndarray, np.ndarray]:
    """Read one binary CIFAR file: uint8 images ``(N, 3, 32, 32)`` and int64 labels ``(N,)``
    (the label byte at ``label_index``). ``check_labels`` holds ``(byte index, number of
    classes)`` pairs that every record's label bytes must respect."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    record = label_bytes + PIXELS
    if raw[:2] in _PICKLE_START:
        raise DataError(f"{path}: this is a Python pickle (CIFAR's \"python version\"), not the binary "
                        "version; kangae never unpickles files")
    if raw[:2] == b"\x1f\x8b":
        raise DataError(f"{path}: gzip data; unpack the .tar.gz archive first (tar xzf) and point "
                        "kangae at the folder of .bin files")
    if not raw:
        raise DataError(f"{path}: the file is empty")
    whole, rest = divmod(len(raw), record)
    if rest:
        raise DataError(f"{path}: truncated: {len(raw):,} bytes is {whole:,} records of {record} bytes "
                        f"(label + 32x32x3 image) and {rest} bytes of a broken last record")
    table = np.frombuffer(raw, np.uint8).reshape(whole, record)
    for index, count in check_labels:
        column = table[:, index]
        bad = np.flatnonzero(column >= count)
        if len(bad):
            raise DataError(f"{path}: record {int(bad[0]):,} has label byte {index} = {int(column[bad[0]])}, "
                            f"outside 0..{count - 1} ({len(bad):,} records like it): not a CIFAR file "
                            "of this kind?")
    images = table[:, label_bytes:].reshape(whole, 3, 32, 32).copy()
    return images, table[:, label_index].astype(np.int64)


def _pickled_copy(spec: CifarSpec, data_dir: str | os.PathLike | None) -> Path | None:
    for root in search_roots(data_dir):
        for folder in (root / spec.name / spec.pickled_folder, root / spec.pickled_folder):
            if folder.is_dir():
                return folder
    return None


def _not_found(spec: CifarSpec, data_dir: str | os.PathLike | None) -> DataError:
    pickled = _pickled_copy(spec, data_dir)
    how = (f"download the binary version ({spec.archive_name}) from {spec.url} and unpack it to "
           f"get {spec.folder}/")
    if pickled is not None:
        return DataError(f"{pickled}: this is {spec.title.split(' (')[0]}'s pickled \"python version\"; "
                         f"kangae never unpickles files (a pickle can run code when loaded): {how}")
    where = ", ".join(str(r / spec.name) for r in search_roots(data_dir))
    return DataError(f"dataset '{spec.name}' not found: {how}, then put {spec.folder}/ in one of: {where} "
                     "(or pass --data-dir / set KANGAE_DATA to its parent folder)")


@lru_cache(maxsize=4)
def _cached(name: str, split: str, data_dir: str | None, strict: bool,
            _env: tuple[str | None, ...]) -> ImageSet:
    spec = get_spec(name)
    assert isinstance(spec, CifarSpec)
    found = locate(spec, data_dir)
    if found.partial is not None:
        raise found.missing_error(spec)
    if found.folder is None:
        raise _not_found(spec, data_dir)
    files = spec.train_files if split == "train" else spec.test_files
    parts = [read_cifar_bin(found.folder / f, spec.label_bytes, spec.label_index, spec.check_labels)
             for f in files]
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    expected = spec.records[split]
    if len(labels) != expected:
        msg = (f"{found.folder}: the {split} files of {spec.name} hold {len(labels):,} images; the "
               f"official release has {expected:,}")
        if strict:
            raise DataError(msg + " (refused: strict data checks are on)")
        warnings.warn(msg + "; kangae reads them anyway", DataIntegrityWarning, stacklevel=4)
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels), spec.classes, spec.name, split,
                    str(found.folder))


def load_cifar(spec: CifarSpec, split: str, data_dir: str | os.PathLike | None = None,
               strict: bool | None = None) -> ImageSet:
    """One split of CIFAR-10/100 as uint8 ``(N, 3, 32, 32)`` images (see ``load_dataset``)."""
    env = tuple(os.environ.get(k) for k in ("KANGAE_DATA", "KANGAE_CACHE", "HOME"))
    return _cached(spec.name, split, str(data_dir) if data_dir else None, is_strict(strict), env)


def clear_cache() -> None:
    _cached.cache_clear()
