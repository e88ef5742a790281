import io
import json
import struct
import zlib

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from kangae.data.pictures import (
    MAX_PIXELS,
    PLAIN_MODES,
    ImageInputError,
    decode_picture,
    read_pictures,
)
from kangae.data.preprocess import preprocess
from kangae.errors import KangaeError


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A 60-byte PNG whose header declares ``width`` x ``height`` pixels (900 megapixels by
    default): Pillow refuses it in ``Image.open`` with DecompressionBombError."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"")
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _digit(mode: str = "L") -> Image.Image:
    a = np.zeros((60, 40), np.uint8)
    a[10:50, 16:24] = 255
    return Image.fromarray(a, "L").convert(mode)


def test_a_bomb_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png())
    with pytest.raises(ImageInputError) as e:
        decode_picture(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: too large to decode (900,000,000 pixels")
    assert "decompression bomb" in msg and "\n" not in msg


def test_over_kangaes_own_limit_but_under_pillows_is_refused_before_decoding():
    side = int(MAX_PIXELS**0.5) + 10  # ~40 Mpx: Pillow would open it without a warning
    with pytest.raises(ImageInputError, match=f"big.png: {side}x{side} is too large"):
        decode_picture(bomb_png(side, side), "big.png")


def test_each_failure_gets_its_own_reason(tmp_path):
    png = _encoded(_digit(), "PNG")
    jpeg = _encoded(_digit("RGB"), "JPEG")
    cases = {
        "cut.png": (png[: len(png) // 2], "not a readable image"),
        "cut.jpg": (jpeg[: len(jpeg) // 3], "not a readable image"),
        "text.png": (b"hello, I am not a picture", "unknown format"),
        "empty.png": (b"", "empty (0 bytes)"),
        "zero.png": (bomb_png(0, 5), "not a readable image"),
    }
    for name, (data, _) in cases.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "adir.png").mkdir()
    batch = read_pictures([tmp_path / n for n in cases] + [tmp_path / "missing.png", tmp_path / "adir.png"])
    assert batch.items == [] and batch.failed
    got = {e.source.rsplit("/", 1)[-1]: e.reason for e in batch.errors}
    for name, (_, reason) in cases.items():
        assert reason in got[name], (name, got[name])
    assert got["missing.png"] == "no such file"
    assert got["adir.png"].startswith("a folder, not a picture")
    assert all(str(e).startswith(e.source + ": ") and "\n" not in str(e) for e in batch.errors)


def test_the_app_keeps_its_formats_and_side_limit():
    gif = _encoded(_digit(), "GIF")
    assert decode_picture(gif, "x.gif").size == (40, 60)  # the CLI reads GIF
    with pytest.raises(ImageInputError, match="not a readable PNG or JPEG image"):
        decode_picture(gif, "x.gif", formats=("PNG", "JPEG"))
    with pytest.raises(ImageInputError, match="5000x10 is too large .*4096 pixels per side"):
        decode_picture(_encoded(Image.new("L", (5000, 10)), "PNG"), "wide", max_side=4096)


@pytest.mark.parametrize("mode", ["1", "L", "P", "LA", "PA", "RGB", "RGBA", "CMYK", "I;16", "I", "F"])
def test_odd_modes_decode_to_a_plain_mode_and_keep_the_digit(tmp_path, mode):
    img = _digit("L")
    if mode == "I;16":
        img = Image.fromarray(np.asarray(img).astype(np.uint16) * 257)
    elif mode == "F":
        img = Image.fromarray(np.asarray(img).astype(np.float32) / 255)
    else:
        img = img.convert(mode)
    fmt = "TIFF" if mode in ("CMYK", "I", "F", "PA") else "PNG"
    path = tmp_path / f"digit.{fmt.lower()}"
    if mode == "PA":
        img = img.convert("RGBA")
    img.save(path, format=fmt)
    got = decode_picture(path)
    assert got.mode in PLAIN_MODES and got.size == (40, 60)
    p = preprocess(got, source=str(path))
    assert not p.inverted and p.ink_box == (16, 10, 24, 50)


def test_palette_with_transparency_keeps_strokes_on_a_clear_canvas():
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[5:35, 18:22] = (20, 20, 20, 255)  # dark strokes, the rest fully transparent
    img = Image.fromarray(rgba, "RGBA").quantize(colors=4)  # P with a transparent index
    img.info["transparency"] = int(np.asarray(img)[0, 0])
    got = decode_picture(_encoded(img, "PNG", transparency=img.info["transparency"]), "clear.png")
    assert got.mode == "RGBA"
    p = preprocess(got, source="clear.png")
    assert p.inverted and p.ink_box == (18, 5, 22, 35)


def test_read_pictures_keeps_order_and_reports_prepare_failures(tmp_path):
    good1, blank, bomb, good2 = (tmp_path / n for n in ("a.png", "blank.png", "bomb.png", "c.png"))
    _digit().save(good1)
    Image.new("L", (30, 30)).save(blank)
    bomb.write_bytes(bomb_png())
    _digit().transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(good2)
    batch = read_pictures([good1, blank, bomb, good2], lambda img, src: preprocess(img, src))
    assert batch.sources == [str(good1), str(good2)]
    assert [e.source for e in batch.errors] == [str(blank), str(bomb)]
    assert "no digit found" in batch.errors[0].reason
    assert "decompression bomb" in batch.errors[1].reason


# --- fuzzing: every input gives a decoded picture or one KangaeError line, nothing else ---

_PNG = _encoded(_digit(), "PNG")
_JPEG = _encoded(_digit("RGB"), "JPEG", quality=80)
_SAMPLES = {
    mode: _encoded(_digit("L").convert(mode), "PNG") for mode in ("1", "P", "LA", "RGBA")
} | {"I;16": _encoded(Image.fromarray(np.full((20, 20), 4000, np.uint16)), "PNG"),
     "CMYK": _encoded(_digit("CMYK"), "TIFF"), "JPEG": _JPEG, "PNG": _PNG}


def _check(data: bytes) -> None:
    try:
        img = decode_picture(data, "fuzz.bin")
    except KangaeError as e:
        msg = str(e)
        assert msg.startswith("fuzz.bin: ") and "\n" not in msg
        return
    assert img.mode in PLAIN_MODES and img.width * img.height <= MAX_PIXELS
    try:
        preprocess(img, source="fuzz.bin")
    except KangaeError as e:
        assert "\n" not in str(e)


_FUZZ = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes(data):
    _check(data)


@_FUZZ
@given(st.sampled_from(sorted(_SAMPLES)), st.floats(0, 1), st.binary(max_size=16))
def test_fuzz_truncated_and_spliced_streams(kind, cut, tail):
    data = _SAMPLES[kind]
    _check(data[: int(len(data) * cut)] + tail)


@_FUZZ
@given(st.sampled_from(sorted(_SAMPLES)), st.integers(0, 4000), st.integers(0, 255))
def test_fuzz_flipped_bytes(kind, at, value):
    data = bytearray(_SAMPLES[kind])
    data[at % len(data)] = value
    _check(bytes(data))


@_FUZZ
@given(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1), st.sampled_from([0, 2, 3, 4, 6]),
       st.sampled_from([1, 2, 4, 8, 16]))
def test_fuzz_declared_sizes_and_modes(width, height, color_type, depth):
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    raw = zlib.compress(b"\x00" * 64)
    _check(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", raw) + _chunk(b"IEND", b""))


# --- the CLI: a bomb among good pictures ---

def test_explain_batch_with_a_bomb_explains_every_other_picture(mlp_run, tmp_path):
    from kangae.cli import cli

    files = []
    for i in range(4):
        path = tmp_path / f"good{i}.png"
        img = _digit()
        img.transpose(Image.Transpose.ROTATE_90).save(path) if i % 2 else img.save(path)
        files.append(path)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png())
    files.insert(2, bomb)
    out = tmp_path / "ex"
    r = CliRunner().invoke(cli, ["explain", str(mlp_run), *map(str, files), "--method", "saliency",
                                 "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    assert f"error: {bomb}: too large to decode (900,000,000 pixels" in r.output
    res = json.loads((out / "explanations.json").read_text())
    assert [e["source"] for e in res["images"]] == [str(f) for f in files if f != bomb]
    for entry in res["images"]:
        assert all((out / name).is_file() for name in entry["files"])


def test_fool_batch_with_a_bomb_writes_the_good_pictures_then_exits_2(mlp_run, tmp_path):
    from kangae.cli import cli

    good, bomb = tmp_path / "good.png", tmp_path / "bomb.png"
    _digit().save(good)
    bomb.write_bytes(bomb_png())
    out = tmp_path / "fool"
    r = CliRunner().invoke(cli, ["fool", str(mlp_run), "--attack", "fgsm", "--eps", "0.1",
                                 "--image", str(bomb), "--image", str(good), "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert f"error: {bomb}: too large to decode" in r.output and "Traceback" not in r.output
    res = json.loads((out / "fool.json").read_text())
    assert "good.png" in json.dumps(res) and "bomb.png" not in json.dumps(res)
