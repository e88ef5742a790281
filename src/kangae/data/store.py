"""Find dataset files on disk, or download them (MD5 checked, atomic rename).

Lookup order: an explicit ``data_dir``, then ``$KANGAE_DATA``, then the user cache
(``$KANGAE_CACHE`` or ``~/.cache/kangae``), then a download into the cache. A folder the user
named (``data_dir`` itself or its dataset subfolder, or the dataset's subfolder of
``$KANGAE_DATA``) that holds only some of a dataset's files is an error naming the missing
ones, never a reason to look elsewhere.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ..utils.atomic import atomic_path
from .registry import CifarSpec, DatasetSpec

DOWNLOAD_TIMEOUT_S = 30.0


def cache_root() -> Path:
    return Path(os.environ.get("KANGAE_CACHE") or Path.home() / ".cache" / "kangae")


def search_roots(data_dir: str | os.PathLike | None) -> list[Path]:
    roots = []
    if data_dir:
        roots.append(Path(data_dir))
    if os.environ.get("KANGAE_DATA"):
        roots.append(Path(os.environ["KANGAE_DATA"]))
    roots.append(cache_root())
    return roots


@dataclass(frozen=True)
class Located:
    """Where a dataset's files are: ``folder`` holds all of them; or ``partial``, a folder the
    user named, holds only some and ``missing`` lists the others."""

    folder: Path | None = None
    partial: Path | None = None
    missing: tuple[str, ...] = ()

    def missing_error(self, spec: DatasetSpec | CifarSpec) -> DataError:
        found = len(spec.files) - len(self.missing)
        return DataError(
            f"{self.partial / self.missing[0]}: no such file; {self.partial} holds {found} of the "
            f"{len(spec.files)} files of {spec.name} (missing: {', '.join(self.missing)})"
        )


def _candidates(spec: DatasetSpec | CifarSpec, data_dir: str | os.PathLike | None) -> list[tuple[Path, bool]]:
    """Folders to look in, in order, each with whether the user named it."""
    out: list[tuple[Path, bool]] = []
    if data_dir:
        root = Path(data_dir)
        out += [(root / f, True) for f in spec.search_folders] + [(root, True)]
    if os.environ.get("KANGAE_DATA"):
        root = Path(os.environ["KANGAE_DATA"])
        out += [(root / f, True) for f in spec.search_folders] + [(root, False)]
    root = cache_root()
    out += [(root / f, False) for f in spec.search_folders] + [(root, False)]
    return out


def locate(spec: DatasetSpec | CifarSpec, data_dir: str | os.PathLike | None) -> Located:
    """The first folder holding every file of ``spec``; a user-named folder on the way that
    holds only some of them stops the search (see :class:`Located`)."""
    names = list(spec.files.values())
    for folder, named in _candidates(spec, data_dir):
        present = [(folder / n).is_file() for n in names]
        if all(present):
            return Located(folder=folder)
        if named and any(present):
            return Located(partial=folder, missing=tuple(n for n, ok in zip(names, present) if not ok))
    return Located()


def find_local(spec: DatasetSpec, data_dir: str | os.PathLike | None) -> Path | None:
    """The folder that holds all files of ``spec`` (or None when absent or incomplete)."""
    return locate(spec, data_dir).folder


def download(url: str, dest: Path, md5: str | None,
             progress: Callable[[int], None] | None = None) -> Path:
    """Download ``url`` to ``dest`` through a temporary file; check MD5 before the rename."""
    with atomic_path(dest) as tmp:
        h = hashlib.md5()
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp, open(tmp, "wb") as out:
            while chunk := resp.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
                if progress:
                    progress(len(chunk))
        if md5 and h.hexdigest() != md5:
            raise DataError(
                f"{url}: checksum mismatch (MD5 {h.hexdigest()}, expected {md5}); "
                f"the download was discarded and {dest} was not written"
            )
    return dest


def _mirrors(spec: DatasetSpec) -> list[str]:
    extra = os.environ.get("KANGAE_MIRROR")
    return ([extra.rstrip("/") + "/"] if extra else []) + list(spec.mirrors)


def fetch(spec: DatasetSpec) -> Path:
    """Download ``spec`` into the cache. Raises DataError naming every failed source."""
    folder = cache_root() / spec.name
    failures: list[str] = []
    if spec.archive is not None:
        archive = cache_root() / spec.archive.local_name
        if not archive.is_file():
            try:
                download(spec.archive.url, archive, spec.archive.md5)
            except (OSError, urllib.error.URLError, DataError) as e:
                raise DataError(f"{spec.name}: download failed: {e}") from None
        _extract(archive, spec, folder)
        return folder
    for name in spec.files.values():
        if (folder / name).is_file():
            continue
        for mirror in _mirrors(spec):
            try:
                download(mirror + name, folder / name, spec.md5.get(name))
                break
            except (OSError, urllib.error.URLError, DataError) as e:
                failures.append(f"{mirror}{name}: {getattr(e, 'reason', e)}")
        else:
            raise DataError(f"{spec.name}: download failed: " + "; ".join(failures))
    return folder


def _extract(archive: Path, spec: DatasetSpec, folder: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as z:
            for name in spec.files.values():
                with z.open(spec.archive.member_folder + name) as src, atomic_path(folder / name) as tmp:
                    with open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst)
    except (zipfile.BadZipFile, KeyError) as e:
        raise DataError(f"{archive}: not a usable EMNIST archive ({e})") from None


def missing_message(spec: DatasetSpec, data_dir: str | os.PathLike | None) -> str:
    roots = search_roots(data_dir)
    where = ", ".join(str(r / spec.name) for r in roots)
    return (
        f"dataset '{spec.name}' not found and could not be downloaded. "
        f"Put {', '.join(spec.files.values())} in one of: {where} "
        "(or pass --data-dir / set KANGAE_DATA to a folder holding a "
        f"'{spec.name}/' subfolder)"
    )
