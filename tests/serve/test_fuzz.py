"""Fuzzing the JSON API with Hypothesis: random bytes, truncated PNG and JPEG streams, huge
declared image sizes, NaN and infinite arrays, deeply nested and random JSON. Every one gets a
4xx with a JSON ``error`` (or 200 when the input happens to be a usable picture), never a 500.
KANGAE_FUZZ_EXAMPLES=400 runs a longer search (25 examples a test by default)."""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import zlib
from datetime import timedelta

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

FUZZ = settings(max_examples=int(os.environ.get("KANGAE_FUZZ_EXAMPLES", 25)), deadline=timedelta(seconds=5),
                database=None, suppress_health_check=[HealthCheck.too_slow])
TOKENS = ["NaN", "Infinity", "-Infinity", "1e999"]  # json.loads reads 1e999 as infinity
MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"]  # what PNG stores


def _refused(r, *, ok_too: bool = False) -> None:
    allowed = {400, 413, 422} | ({200} if ok_too else set())
    assert r.status_code in allowed, (r.status_code, r.text[:300])
    if r.status_code != 200:
        assert r.json()["error"]


def _post_json(client, text: str, path: str = "/api/predict"):
    return client.post(path, content=text, headers={"content-type": "application/json"})


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@st.composite
def encoded_pictures(draw) -> bytes:
    """A small picture of any mode as PNG, or as JPEG where the mode allows it."""
    fmt = draw(st.sampled_from(["PNG", "JPEG"]))
    mode = draw(st.sampled_from(["L", "RGB", "CMYK"] if fmt == "JPEG" else MODES))
    w, h = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    img = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@FUZZ
@given(raw=st.binary(max_size=4096))
def test_random_bytes_get_400(client, raw: bytes) -> None:
    for image in (_b64(raw), "data:image/png;base64," + _b64(raw)):
        r = client.post("/api/predict", json={"image": image})
        _refused(r)


@FUZZ
@given(raw=encoded_pictures(), cut=st.floats(0.0, 1.0))
def test_truncated_png_and_jpeg_streams(client, raw: bytes, cut: float) -> None:
    part = raw[: int(len(raw) * cut)]
    _refused(client.post("/api/predict", json={"image": _b64(part)}), ok_too=True)
    _refused(client.post("/api/predict", json={"image": _b64(raw)}), ok_too=True)  # whole: any mode reads


@FUZZ
@given(w=st.integers(1, 2**31 - 1), h=st.integers(4097, 2**31 - 1), swap=st.booleans(),
       depth=st.sampled_from([1, 8, 16]), data=st.binary(max_size=64))
def test_huge_declared_png_sizes_get_400(client, w: int, h: int, swap: bool, depth: int, data: bytes) -> None:
    w, h = (h, w) if swap else (w, h)
    png = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, 0, 0, 0, 0))
           + _png_chunk(b"IDAT", zlib.compress(data)) + _png_chunk(b"IEND", b""))
    r = client.post("/api/predict", json={"image": _b64(png)})
    assert r.status_code == 400, r.text


@FUZZ
@given(w=st.integers(1, 65535), h=st.integers(4097, 65535), swap=st.booleans())
def test_huge_declared_jpeg_sizes_get_400(client, w: int, h: int, swap: bool) -> None:
    w, h = (h, w) if swap else (w, h)
    buf = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buf, format="JPEG")
    raw = buf.getvalue()
    sof = raw.index(b"\xff\xc0")  # baseline frame header: length, precision, height, width
    forged = raw[: sof + 5] + struct.pack(">HH", h, w) + raw[sof + 9:]
    r = client.post("/api/predict", json={"image": _b64(forged)})
    assert r.status_code == 400, r.text


@FUZZ
@given(seed=st.integers(0, 2**32 - 1),
       bad=st.lists(st.tuples(st.integers(0, 783), st.sampled_from(TOKENS)), min_size=1, max_size=8))
def test_nan_and_infinite_arrays_get_400(client, seed: int, bad: list[tuple[int, str]]) -> None:
    grid = np.random.default_rng(seed).uniform(-0.5, 1.5, (28, 28)).round(3).tolist()
    for where, token in bad:
        grid[where // 28][where % 28] = token  # written as the bare JSON token below
    text = json.dumps({"image": grid})
    for _, token in bad:
        text = text.replace(f'"{token}"', token)
    for path in ("/api/predict", "/api/explain", "/api/fix"):
        body = text if path != "/api/fix" else text[:-1] + ', "target": 1}'
        r = _post_json(client, body, path)
        assert r.status_code == 400, r.text
        assert "NaN or infinite" in r.json()["error"]


@FUZZ
@given(rows=st.lists(st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=40), max_size=40))
def test_arrays_of_any_shape_and_range(client, rows: list[list[float]]) -> None:
    _refused(client.post("/api/predict", json={"image": rows}), ok_too=True)


@FUZZ
@given(depth=st.integers(1, 200_000), opener=st.sampled_from(["[", '{"a": ']), top=st.booleans())
def test_deeply_nested_json_gets_4xx(client, depth: int, opener: str, top: bool) -> None:
    closer = "]" if opener == "[" else "}"
    nested = opener * depth + ("0" if opener == "[" else "1") + closer * depth
    text = nested if top else '{"image": ' + nested + "}"
    if len(text) > 1 << 20:
        return  # over the body limit: 413, tested elsewhere
    try:  # where Python's parser gives up depends on the stack, not on a fixed depth
        json.loads(text)
        too_deep = False
    except RecursionError:
        too_deep = True
    for path in ("/api/predict", "/api/explain", "/api/fix"):
        r = _post_json(client, text, path)
        _refused(r)
        if too_deep:
            assert "could not be parsed as JSON (nested too deeply?)" in r.json()["error"]


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner,
                                                                                max_size=5),
                    max_leaves=30)


@FUZZ
@given(body=st.dictionaries(st.sampled_from(["image", "target", "method", "max_edits", "threshold", "x"]),
                            JSON, max_size=5))
def test_random_json_bodies_get_4xx(client, body: dict) -> None:
    text = json.dumps(body)  # NaN and Infinity tokens included
    for path in ("/api/predict", "/api/explain", "/api/fix"):
        _refused(_post_json(client, text, path))


# -- the picture page (any other model): the same junk, the same one-line 4xx ------------------

@FUZZ
@given(raw=st.binary(max_size=4096), prepared=st.booleans())
def test_pictures_random_bytes_get_400(picture_client, raw: bytes, prepared: bool) -> None:
    for image in (_b64(raw), "data:image/jpeg;base64," + _b64(raw)):
        _refused(picture_client.post("/api/predict", json={"image": image, "prepared": prepared}))


@FUZZ
@given(raw=encoded_pictures(), cut=st.floats(0.0, 1.0))
def test_pictures_truncated_streams(picture_client, raw: bytes, cut: float) -> None:
    part = raw[: int(len(raw) * cut)]
    _refused(picture_client.post("/api/predict", json={"image": _b64(part)}), ok_too=True)
    r = picture_client.post("/api/predict", json={"image": _b64(raw)})
    assert r.status_code == 200, r.text  # whole, any mode reads: prepared to the model's 32x32
    assert r.json()["size"] == [32, 32]


@FUZZ
@given(w=st.integers(1, 2**31 - 1), h=st.integers(8193, 2**31 - 1), swap=st.booleans(),
       data=st.binary(max_size=64))
def test_pictures_huge_declared_sizes_get_400(picture_client, w: int, h: int, swap: bool,
                                              data: bytes) -> None:
    w, h = (h, w) if swap else (w, h)
    png = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + _png_chunk(b"IDAT", zlib.compress(data)) + _png_chunk(b"IEND", b""))
    r = picture_client.post("/api/predict", json={"image": _b64(png)})
    assert r.status_code == 400 and "too large" in r.json()["error"], r.text


@FUZZ
@given(body=st.dictionaries(st.sampled_from(["image", "prepared", "target", "method", "x"]), JSON,
                            max_size=5))
def test_pictures_random_json_bodies_get_4xx(picture_client, body: dict) -> None:
    text = json.dumps(body)
    for path in ("/api/predict", "/api/explain"):
        _refused(_post_json(picture_client, text, path))
