"""The app's picture path gives the model the same input as the first, all-float implementation.

``_reference_preprocess`` and ``_reference_frame`` are the first versions of
``kangae.data.preprocess.preprocess`` and ``kangae.serve.inputs.frame_of``, kept here as the
oracle: every step in float32 on the whole picture, the frame from torch. The fast path (8-bit
grey pictures through a 256-level lookup table, the ink box found on the bytes) must give the
same 28x28 image bit for bit, the same box, inversion and frame.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from kangae.data.preprocess import INK_THRESHOLD, ImageInputError, preprocess, to_gray
from kangae.serve.inputs import frame_of, read_image


def _reference_resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    out = Image.fromarray(a.astype(np.float32), mode="F").resize(size, Image.Resampling.LANCZOS)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def _reference_preprocess(picture: Image.Image | np.ndarray):
    """(image (1, 28, 28), inverted, source size, ink box), as the first implementation made them."""
    gray = to_gray(picture) if isinstance(picture, Image.Image) else np.asarray(picture, dtype=np.float32)
    gray = np.clip(gray, 0.0, 1.0)
    h, w = gray.shape
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    inverted = background > 0.5
    ink = 1.0 - gray if inverted else gray
    bg = 1.0 - background if inverted else background
    peak = float(ink.max())
    if peak - bg < INK_THRESHOLD:
        raise ImageInputError("blank")
    ink = np.clip((ink - bg) / (peak - bg), 0.0, 1.0)
    rows = np.flatnonzero((ink > INK_THRESHOLD).any(1))
    cols = np.flatnonzero((ink > INK_THRESHOLD).any(0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = ink[top:bottom, left:right]
    ch, cw = crop.shape
    scale = 20.0 / max(ch, cw)
    nw, nh = max(1, round(cw * scale)), max(1, round(ch * scale))
    box = _reference_resize(crop, (nw, nh))
    mass = box.sum()
    ys, xs = np.indices(box.shape)
    cy, cx = (ys * box).sum() / mass, (xs * box).sum() / mass
    oy, ox = int(round(14 - cy)), int(round(14 - cx))
    canvas = np.zeros((28, 28), dtype=np.float32)
    y0, x0 = max(oy, 0), max(ox, 0)
    y1, x1 = min(oy + nh, 28), min(ox + nw, 28)
    canvas[y0:y1, x0:x1] = box[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
    image = torch.from_numpy(canvas).float().unsqueeze(0)
    return image, inverted, (w, h), (int(left), int(top), int(right), int(bottom))


def _reference_frame(image: torch.Tensor, ink_box: tuple[int, int, int, int]):
    left, top, right, bottom = ink_box
    cw, ch = right - left, bottom - top
    longest = max(cw, ch)
    sx, sy = max(1, round(cw * 20 / longest)) / cw, max(1, round(ch * 20 / longest)) / ch
    ink = image[0] > 0
    cols, rows = ink.any(0).nonzero(), ink.any(1).nonzero()
    if len(cols) == 0:
        return None
    ox, oy = int(cols[0]), int(rows[0])
    side = image.shape[-1]
    return (left - ox / sx, top - oy / sy, side / sx, side / sy)


def _strokes(seed: int, size: tuple[int, int], ink: int, paper: int, width: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = Image.new("L", size, paper)
    w, h = size
    pts = [(float(rng.uniform(0.1, 0.9) * w), float(rng.uniform(0.1, 0.9) * h)) for _ in range(3 + seed % 5)]
    ImageDraw.Draw(img).line(pts, fill=ink, width=width, joint="curve")
    return img


def _pictures() -> list[tuple[str, Image.Image]]:
    """8-bit grey pictures of every kind the fast path sees: canvases (black on white and white on
    black), faint and grey-on-grey ink, antialiased and noisy ones, thin and tiny, ink on the border."""
    out = []
    for seed in range(12):
        out.append((f"canvas {seed}", _strokes(seed, (280, 280), 0, 255, 20)))
        out.append((f"white on black {seed}", _strokes(seed, (200, 120), 255, 0, 9)))
    out.append(("faint", _strokes(3, (90, 90), 100, 128, 5)))
    out.append(("grey on grey", _strokes(4, (64, 100), 160, 120, 3)))
    out.append(("too faint", _strokes(4, (64, 100), 140, 120, 3)))
    out.append(("thin", _strokes(5, (300, 40), 0, 255, 1)))
    smooth = _strokes(6, (280, 280), 0, 255, 24).resize((97, 97), Image.Resampling.LANCZOS)
    out.append(("antialiased", smooth))
    rng = np.random.default_rng(0)
    for k in range(6):  # noise of every contrast: many grey levels near the ink threshold
        base = rng.integers(0, 256, (40 + k, 33)).astype(np.float64)
        lo, hi = sorted(rng.integers(0, 256, 2))
        noisy = (lo + (hi - lo + 1) * base / 256).astype(np.uint8)
        noisy[5:9, 5:30] = 255 - noisy[5:9, 5:30] // 4
        out.append((f"noise {k}", Image.fromarray(noisy, mode="L")))
    edge = np.full((50, 50), 255, np.uint8)
    edge[:, :3] = 0  # ink along the border, the rest paper
    edge[20:30, 20:25] = 0
    out.append(("ink on the border", Image.fromarray(edge, mode="L")))
    for paper, top in ((0, 255), (0, 180), (255, 0), (230, 60), (40, 200)):
        ramp = np.full((60, 300), paper, np.uint8)  # every grey level from paper to ``top``, one a column:
        ramp[25:35, 20:276] = np.linspace(paper, top, 256).round().astype(np.uint8)  # the box edge is
        out.append((f"ramp {paper}-{top}", Image.fromarray(ramp, mode="L")))  # the threshold level
        out.append((f"ramp {paper}-{top} upright", Image.fromarray(np.ascontiguousarray(ramp.T), mode="L")))
    dot = np.zeros((30, 30), np.uint8)
    dot[12, 17] = 200
    out.append(("one pixel", Image.fromarray(dot, mode="L")))
    return out


@pytest.mark.parametrize(("name", "picture"), _pictures(), ids=[n for n, _ in _pictures()])
def test_grey_pictures_give_the_reference_input(name: str, picture: Image.Image) -> None:
    try:
        want, inverted, size, box = _reference_preprocess(picture)
    except ImageInputError:  # too faint for the reference: blank for the fast path too
        with pytest.raises(ImageInputError, match="blank"):
            preprocess(picture)
        return
    got = preprocess(picture)
    assert torch.equal(got.image, want), name
    assert (got.inverted, got.source_size, got.ink_box) == (inverted, size, box)
    assert frame_of(got) == _reference_frame(want, box)
    assert got.image.sum() > 0


def _png(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_the_app_path_gives_the_reference_input_for_every_mode() -> None:
    """What /api/predict decodes: grey, opaque RGB(A) (made grey by Pillow first, as before),
    transparent RGBA and 16-bit pictures (the float path), each against the reference."""
    grey = _strokes(7, (280, 280), 0, 255, 18)
    opaque = Image.merge("RGBA", [grey, grey, grey, Image.new("L", grey.size, 255)])
    alpha = Image.eval(grey, lambda v: 255 - v)
    transparent = Image.merge("RGBA", [Image.new("L", grey.size, 0)] * 3 + [alpha])
    deep = Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)
    for name, img, as_model_sees in (("grey", grey, grey), ("opaque RGBA", opaque, opaque.convert("L")),
                                     ("RGB", grey.convert("RGB"), grey.convert("RGB").convert("L")),
                                     ("transparent", transparent, transparent),
                                     ("16-bit", deep, deep.convert("I"))):
        want, inverted, _, box = _reference_preprocess(as_model_sees)
        seen = read_image(_png(img))
        assert torch.equal(seen.image, want), name
        assert seen.inverted == inverted
        assert seen.frame == _reference_frame(want, box)
        assert seen.rows == np.round(want[0].double().numpy(), 3).tolist()


def test_arrays_and_blank_pictures_are_unchanged() -> None:
    a = np.zeros((40, 40), np.float32)
    a[10:30, 18:22] = 0.8
    want, inverted, _, box = _reference_preprocess(a)
    got = preprocess(a)
    assert torch.equal(got.image, want) and got.ink_box == box and not got.inverted
    for flat in (Image.new("L", (30, 30), 200), np.full((30, 30), 0.5, np.float32)):
        with pytest.raises(ImageInputError, match="blank"):
            preprocess(flat)
