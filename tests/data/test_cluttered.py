import torch

from kangae.data.cluttered import load_cluttered, make_cluttered
from kangae.data.dataset import load_dataset


def test_digits_sit_in_their_boxes_and_clutter_stays_outside(blob_data):
    source = load_dataset("mnist", "test")
    c = make_cluttered(source, 50, size=56, fragments=6, seed=3)
    assert c.data.images.shape == (50, 1, 56, 56) and c.data.images.dtype == torch.uint8
    assert torch.equal(c.data.labels, source.labels[:50])
    for img, digit, (left, top, right, bottom) in zip(c.data.images[:, 0], source.images[:50, 0], c.boxes):
        inside = img[top:bottom, left:right]
        # the digit's ink is all there, and its ink total matches the source digit
        assert int(inside.sum()) == int(digit.sum())
        outside = img.clone()
        outside[top:bottom, left:right] = 0
        assert outside.sum() > 0  # clutter exists, away from the box


def test_generation_is_deterministic_and_loadable_by_name(blob_data):
    a = load_cluttered("test")
    b = make_cluttered(load_dataset("mnist", "test"), 2000, seed=2)
    assert torch.equal(a.data.images, b.data.images) and torch.equal(a.boxes, b.boxes)
    assert torch.equal(load_dataset("cluttered-mnist", "test").images, a.data.images)
