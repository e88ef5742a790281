"""One decoder for every picture a user gives kangae: files on the command line, image folders,
and the app's uploads.

Pillow fails in many ways on a bad file (``DecompressionBombError`` before any size check of
ours, ``OSError`` for a truncated stream, ``SyntaxError``, ``struct.error`` or ``ValueError``
for a broken header, odd modes that will not convert). :func:`decode_picture` turns each into
one :class:`ImageInputError` line that names the file, and hands back a loaded image in one of a
few plain modes (``L``, ``LA``, ``RGB``, ``RGBA``, ``I``, ``F``). :func:`read_pictures` decodes a
batch: the good pictures and one :class:`PictureError` per bad file, so one bad file never
loses the others.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import KangaeError

MAX_PIXELS = 40_000_000  # a 40-megapixel photo is fine; a decompression bomb is not
MAX_FILE_BYTES = 256 << 20
# Raster formats Pillow decodes itself (no EPS: that runs Ghostscript on the user's file)
READ_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM")
PLAIN_MODES = ("L", "LA", "RGB", "RGBA", "I", "F")
_BOMB_SIZE = re.compile(r"\((\d+) pixels\)")
T = TypeVar("T")


class ImageInputError(KangaeError):
    """A picture kangae cannot read or find a digit in."""


@dataclass(frozen=True)
class PictureError:
    """Why one picture of a batch was left out. ``str()`` gives the one line to print."""

    source: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


@dataclass
class PictureBatch(Generic[T]):
    """The pictures that decoded (``items``, in input order, with their ``sources``) and one
    error per file that did not."""

    items: list[T] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    errors: list[PictureError] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.errors)


def _fail(name: str, reason: str) -> ImageInputError:
    reason = " ".join(reason.split())  # one line, whatever Pillow's message held
    return ImageInputError(f"{name}: {reason[:300]}")


def _what(formats: Sequence[str]) -> str:
    return "image" if tuple(formats) == READ_FORMATS else " or ".join(formats) + " image"


def plain_mode(img: Image.Image) -> Image.Image:
    """``img`` in one of :data:`PLAIN_MODES`: palette and 1-bit pictures expanded (keeping
    transparency), 16-bit grey as ``I``, CMYK/YCbCr/LAB/HSV as RGB, premultiplied alpha undone."""
    mode = img.mode
    if mode in PLAIN_MODES:
        return img
    if mode == "1":
        return img.convert("L")
    if mode.startswith("I;16"):
        return img.convert("I")
    if mode == "P":
        return img.convert("RGBA" if "transparency" in img.info else "RGB")
    has_alpha = any(b in ("A", "a") for b in img.getbands())
    return img.convert("RGBA" if has_alpha else "RGB")


def _size_error(width: int, height: int, max_pixels: int, max_side: int | None) -> str | None:
    if width <= 0 or height <= 0:
        return f"the image is empty ({width}x{height} pixels)"
    if max_side is not None and (width > max_side or height > max_side):
        return f"{width}x{height} is too large (the limit is {max_side} pixels per side)"
    if width * height > max_pixels:
        return (f"{width}x{height} is too large ({width * height:,} pixels, the limit is "
                f"{max_pixels:,}); a decompression bomb?")
    return None


def _bomb(name: str, e: Exception, max_pixels: int) -> ImageInputError:
    m = _BOMB_SIZE.search(str(e))
    size = f"{int(m.group(1)):,} pixels" if m else "more pixels than Pillow allows"
    return _fail(name, f"too large to decode ({size}, the limit is {max_pixels:,}): "
                       "a decompression bomb?")


def _read_source(data: bytes | str | os.PathLike, name: str) -> bytes:
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
    else:
        path = Path(data)
        if path.is_dir():
            raise _fail(name, "a folder, not a picture (give a folder of pictures as --images FOLDER)")
        if not path.is_file():
            raise _fail(name, "no such file")
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise _fail(name, f"the file is {size:,} bytes; the limit is {MAX_FILE_BYTES:,}")
            raw = path.read_bytes()
        except OSError as e:
            raise _fail(name, f"cannot read ({e.strerror or e})") from None
    if not raw:
        raise _fail(name, "the file is empty (0 bytes)")
    return raw


def decode_picture(data: bytes | str | os.PathLike, name: str | None = None, *,
                   formats: Sequence[str] = READ_FORMATS, max_pixels: int = MAX_PIXELS,
                   max_side: int | None = None) -> Image.Image:
    """Decode one picture (a file path or its bytes) into a loaded PIL image in a plain mode,
    upright by its EXIF orientation. Any failure is one :class:`ImageInputError` line naming
    ``name`` (default: the path): unknown format, truncated or corrupt stream, empty image,
    too many pixels or a decompression bomb, a mode that will not convert."""
    name = name or (str(data) if not isinstance(data, bytes | bytearray | memoryview) else "image")
    raw = _read_source(data, name)
    what = _what(formats)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)  # palette transparency notes: handled below
            img = Image.open(io.BytesIO(raw), formats=list(formats))
            problem = _size_error(img.width, img.height, max_pixels, max_side)
            if problem:
                raise _fail(name, problem)
            img.load()
            img = ImageOps.exif_transpose(img) or img
            mode = img.mode
            try:
                img = plain_mode(img)
            except ValueError:
                raise _fail(name, f"its colour mode {mode} cannot be converted to RGB or grey") from None
            img.load()
    except ImageInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _bomb(name, e, max_pixels) from None
    except UnidentifiedImageError:
        raise _fail(name, f"not a readable {what} (unknown format; kangae reads "
                          f"{', '.join(formats)})") from None
    except MemoryError:
        raise _fail(name, f"not a readable {what} (out of memory while decoding it)") from None
    except Exception as e:  # noqa: BLE001 - any Pillow failure on a user's file is a bad file
        detail = str(e) or "corrupt data"
        raise _fail(name, f"not a readable {what} ({e.__class__.__name__}: {detail})") from None
    return img


def read_pictures(paths: Sequence[str | os.PathLike],
                  prepare: Callable[[Image.Image, str], T] | None = None, *,
                  formats: Sequence[str] = READ_FORMATS,
                  max_pixels: int = MAX_PIXELS) -> PictureBatch[T]:
    """Decode every file of ``paths`` and pass it through ``prepare(image, source)`` (for
    example MNIST preprocessing, or a model card's resize and crop). A file that fails to decode
    or to prepare (with a :class:`KangaeError`) becomes one :class:`PictureError`; the rest go
    on, in order."""
    batch: PictureBatch[T] = PictureBatch()
    for p in paths:
        source = str(p)
        try:
            img = decode_picture(p, source, formats=formats, max_pixels=max_pixels)
            item = prepare(img, source) if prepare is not None else img
        except KangaeError as e:
            msg = str(e)
            prefix = f"{source}: "
            batch.errors.append(PictureError(source, msg[len(prefix):] if msg.startswith(prefix) else msg))
            continue
        batch.items.append(item)
        batch.sources.append(source)
    return batch
