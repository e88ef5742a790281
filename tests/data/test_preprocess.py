import numpy as np
import pytest
import torch
from PIL import Image

from kangae.data.preprocess import ImageInputError, load_picture, load_pictures, preprocess


def _stroke(h: int = 300, w: int = 200) -> np.ndarray:
    """A thick vertical bar with a foot, off centre on a large black canvas: white ink."""
    a = np.zeros((h, w))
    a[40:220, 120:150] = 1.0
    a[190:220, 60:150] = 1.0
    return a


def _centre_of_mass(img: torch.Tensor) -> tuple[float, float]:
    a = img[0].numpy()
    ys, xs = np.indices(a.shape)
    return (ys * a).sum() / a.sum(), (xs * a).sum() / a.sum()


def test_white_ink_is_cropped_scaled_to_20_and_centred_by_mass():
    p = preprocess(_stroke())
    assert not p.inverted
    assert p.image.shape == (1, 28, 28)
    assert p.ink_box == (60, 40, 150, 220)
    ink = p.image[0] > 0.1
    rows = np.flatnonzero(ink.any(1).numpy())
    assert 19 <= rows[-1] - rows[0] + 1 <= 21  # the longest side becomes 20
    cy, cx = _centre_of_mass(p.image)
    assert abs(cy - 14) < 0.75 and abs(cx - 14) < 0.75


def test_dark_ink_on_light_background_is_inverted(tmp_path):
    a = _stroke()
    path = tmp_path / "drawing.png"
    Image.fromarray(((1 - a) * 255).astype(np.uint8), "L").save(path)
    p = load_picture(path)
    assert p.inverted and "inverted" in p.describe()
    assert torch.allclose(p.image, preprocess(a).image, atol=1e-5)


@pytest.mark.parametrize("mode", ["P", "RGBA", "LA", "I;16", "CMYK", "RGB", "1"])
def test_every_image_mode_gives_the_same_digit(tmp_path, mode):
    a = _stroke()
    expected = preprocess(a).image
    gray = Image.fromarray((a * 255).astype(np.uint8), "L")
    if mode == "RGBA":  # black strokes on a transparent canvas, as a browser canvas exports
        rgba = np.zeros((*a.shape, 4), np.uint8)
        rgba[..., 3] = (a * 255).astype(np.uint8)
        img = Image.fromarray(rgba, "RGBA")
    elif mode == "LA":
        img = Image.merge("LA", [gray, Image.new("L", gray.size, 255)])
    elif mode == "I;16":
        img = Image.fromarray((a * 65535).astype(np.uint16))
        assert img.mode.startswith("I")
    elif mode == "CMYK":
        img = gray.convert("RGB").convert("CMYK")
    else:
        img = gray.convert(mode)
    path = tmp_path / f"x.{'jpg' if mode == 'CMYK' else 'png'}"
    img.save(path)
    got = load_picture(path).image
    assert (got - expected).abs().max() < 0.08


def test_blank_and_junk_files_name_the_file_and_the_rest_survive(tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("L", (50, 50), 255).save(blank)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    good = tmp_path / "good.png"
    Image.fromarray((_stroke() * 255).astype(np.uint8), "L").save(good)
    with pytest.raises(ImageInputError, match="blank.png: no digit"):
        load_picture(blank)
    with pytest.raises(ImageInputError, match="junk.png: not a readable image"):
        load_picture(junk)
    with pytest.raises(ImageInputError, match="no such file"):
        load_picture(tmp_path / "missing.png")
    ok, errors = load_pictures([blank, good, junk])
    assert [p.source for p in ok] == [str(good)] and len(errors) == 2


def test_arrays_with_nan_or_wrong_shape_are_refused():
    with pytest.raises(ImageInputError, match="NaN"):
        preprocess(np.full((28, 28), np.nan))
    with pytest.raises(ImageInputError, match="2-D"):
        preprocess(np.zeros((3, 28, 28)))


def test_an_mnist_digit_survives_the_round_trip(real_mnist):
    """Upscaled, inverted and saved, a test digit comes back close to the original."""
    from kangae.data.dataset import load_dataset

    test = load_dataset("mnist", "test")
    hits = 0
    for i in range(20):
        x = test.images[i, 0].float().numpy() / 255
        big = np.kron(1 - x, np.ones((10, 10)))
        back = preprocess(big).image[0].numpy()
        hits += np.corrcoef(back.ravel(), x.ravel())[0, 1] > 0.8
    assert hits >= 18
