"""A small reader and writer for the IDX format of MNIST (LeCun et al.), on numpy.

Files may be gzip-compressed (``.gz``) or raw. Every error names the file and the problem.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..utils.atomic import write_bytes

_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {v.newbyteorder(">") if v.itemsize > 1 else v: k for k, v in _DTYPES.items()}


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise DataError(f"{path}: truncated or corrupt gzip data ({e})") from None
    return raw


def _type_name(code: int) -> str:
    return f"{_DTYPES[code].newbyteorder('=').name} (IDX type 0x{code:02x})"


def read_idx(path: str | os.PathLike, dtype: str | np.dtype | None = None) -> np.ndarray:
    """Read an IDX file into a numpy array of its stored shape and type. With ``dtype``, a file
    that declares another element type is refused (it would be read as wrong numbers)."""
    path = Path(path)
    want = np.dtype(dtype) if dtype is not None else None
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: file is {len(data)} bytes, too short for an IDX header")
    zero, code, ndim = data[0:2], data[2], data[3]
    if zero != b"\x00\x00" or code not in _DTYPES or ndim == 0:
        raise DataError(
            f"{path}: bad magic number 0x{data[:4].hex()} (expected 0x0000TTNN: "
            "type 08 for uint8 and the number of dimensions); is this an IDX file?"
        )
    native = want.newbyteorder("=") if want is not None else None
    if native is not None and _DTYPES[code].newbyteorder("=") != native:
        expected = next((k for k, v in _DTYPES.items() if v.newbyteorder("=") == native), None)
        wanted = _type_name(expected) if expected is not None else native.name
        raise DataError(f"{path}: the file holds {_type_name(code)} elements; expected {wanted}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated header ({len(data)} bytes, need {header})")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _DTYPES[code]
    expected = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
    got = len(data) - header
    if got < expected:
        raise DataError(
            f"{path}: truncated: header says shape {shape} ({expected} bytes of data) "
            f"but the file holds {got}"
        )
    if got > expected:
        raise DataError(f"{path}: {got - expected} unexpected bytes after the data of shape {shape}")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=False) if dtype.itemsize > 1 else arr


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` as IDX; gzip when the name ends in ``.gz`` (or ``compress`` says so)."""
    path = Path(path)
    arr = np.asarray(array)
    be = arr.dtype.newbyteorder(">") if arr.dtype.itemsize > 1 else arr.dtype
    if be not in _CODES:
        raise ValueError(f"IDX cannot store dtype {arr.dtype}")
    header = bytes([0, 0, _CODES[be], arr.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in arr.shape
    )
    payload = header + arr.astype(be, copy=False).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    write_bytes(path, payload)
