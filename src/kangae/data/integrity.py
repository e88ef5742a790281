"""Are the local dataset files the official ones? MD5 checks, done once and remembered.

A file passes when its MD5 is that of the file as distributed (``DatasetSpec.md5``) or, for a
re-compressed copy, when the MD5 of its decompressed IDX bytes is the official one
(``DatasetSpec.content_md5``). Digests are remembered by file size and modification time in
``.kangae-checksums.json`` beside the files; when that folder is read-only, in the user cache
(``$KANGAE_CACHE/checksums/``); when that fails too, for this process only. A mismatch warns
with :class:`DataIntegrityWarning`; in strict mode (``strict=True`` or the ``strict_data()``
context, which the CLI's ``--strict-data`` enters) it raises :class:`DataError`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import stat
import warnings
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..utils.atomic import write_bytes
from .registry import DatasetSpec

CACHE_NAME = ".kangae-checksums.json"
_STRICT: ContextVar[bool] = ContextVar("kangae_strict_data", default=False)
_MEMORY: dict[tuple[str, int, int], dict[str, str]] = {}


class DataIntegrityWarning(UserWarning):
    """A dataset file differs from the official release (corrupt, truncated or changed)."""


@contextmanager
def strict_data(on: bool = True) -> Iterator[None]:
    """Within this block, a dataset file that fails its MD5 check is an error, not a warning."""
    token = _STRICT.set(on)
    try:
        yield
    finally:
        _STRICT.reset(token)


def is_strict(strict: bool | None = None) -> bool:
    """``strict`` when given, else the current :func:`strict_data` setting."""
    return _STRICT.get() if strict is None else strict


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _cache_files(folder: Path) -> list[Path]:
    from .store import cache_root

    key = _md5(str(folder.resolve()).encode())[:16]
    return [folder / CACHE_NAME, cache_root() / "checksums" / f"{key}.json"]


def _read_cache(folder: Path) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in reversed(_cache_files(folder)):  # the file beside the data wins
        try:
            got = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(got, dict):
            merged.update({k: v for k, v in got.items() if isinstance(v, dict)})
    return merged


def _writable(folder: Path) -> bool:
    """Whether ``folder`` may be written: its mode has a write bit and this user may write it.
    The mode bits count even for root, so a folder made read-only stays untouched."""
    try:
        mode = folder.stat().st_mode
    except OSError:
        return True  # not there yet (the user cache): try to create it
    return bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)) and os.access(folder, os.W_OK)


def _write_cache(folder: Path, records: dict[str, Any]) -> None:
    payload = json.dumps(records, indent=1, sort_keys=True).encode()
    for path in _cache_files(folder):
        if not _writable(path.parent):
            continue
        try:
            write_bytes(path, payload)
            return
        except OSError:
            continue  # read-only data folder (or cache): the next place, else memory only


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


def _digests(path: Path, size: int, mtime_ns: int, record: dict[str, Any] | None,
             official: str | None, content: str | None) -> dict[str, Any]:
    """The digests of ``path`` needed to judge it, reusing ``record`` while its size and mtime
    still match: the file's MD5, and the MD5 of its decompressed bytes only when the first does
    not settle it."""
    valid = record if record and record.get("size") == size and record.get("mtime_ns") == mtime_ns else {}
    out: dict[str, Any] = {"size": size, "mtime_ns": mtime_ns}
    raw = None
    if isinstance(valid.get("md5"), str):
        out["md5"] = valid["md5"]
    else:
        raw = _read(path)
        out["md5"] = _md5(raw)
    if isinstance(valid.get("content_md5"), str):
        out["content_md5"] = valid["content_md5"]
    elif out["md5"] != official and content:
        raw = raw if raw is not None else _read(path)
        try:
            out["content_md5"] = _md5(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
        except (EOFError, OSError, zlib.error):
            out["content_md5"] = "unreadable gzip data"
    return out


def _problem(spec: DatasetSpec, path: Path, digests: dict[str, Any]) -> str | None:
    official, content = spec.md5.get(path.name), spec.content_md5.get(path.name)
    if digests["md5"] == official or (content and digests.get("content_md5") == content):
        return None
    want = " or ".join(f"{what} {md5}" for what, md5 in (("", official), ("uncompressed", content)) if md5)
    return (f"{path}: MD5 {digests['md5']} is not that of the official {spec.title} file "
            f"({want.strip()}); it may be corrupt or modified")


def check_files(spec: DatasetSpec, folder: Path, names: Sequence[str], *,
                strict: bool | None = None) -> list[str]:
    """Check ``names`` in ``folder`` against ``spec``'s official MD5s. Returns one message per
    file that differs (after warning with each); raises DataError instead in strict mode.
    Files without a known MD5 are not checked."""
    records: dict[str, Any] | None = None
    changed = False
    problems = []
    for name in names:
        official, content = spec.md5.get(name), spec.content_md5.get(name)
        if not (official or content):
            continue
        path = folder / name
        try:
            st = path.stat()
        except OSError as e:
            raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        known = _MEMORY.get(key)
        if known is None:
            if records is None:
                records = _read_cache(folder)
            known = records.get(name)
        digests = _digests(path, st.st_size, st.st_mtime_ns, known, official, content)
        _MEMORY[key] = digests
        if records is not None and records.get(name) != digests:
            records[name], changed = digests, True
        if (msg := _problem(spec, path, digests)) is not None:
            problems.append(msg)
    if changed and records is not None:
        _write_cache(folder, records)
    if problems and is_strict(strict):
        more = f"; {len(problems) - 1} more file(s) differ" if len(problems) > 1 else ""
        raise DataError(f"{problems[0]} (refused: strict data checks are on){more}")
    for msg in problems:
        warnings.warn(f"{msg}; kangae reads it anyway (--strict-data, or strict=True, refuses it)",
                      DataIntegrityWarning, stacklevel=3)
    return problems


def clear_memory() -> None:
    """Forget the digests computed in this process (tests; files changed in place)."""
    _MEMORY.clear()
