import numpy as np
import pytest
import torch

from kangae.data import DATASETS, GeneratedSpec, load_dataset, where_is
from kangae.data.registry import SHAPE_CLASSES
from kangae.data.shapes import DISTRACTORS, _draw_params, _place_distractors, load_shapes, make_shapes

# area of each shape in units of its radius squared (see shapes._shape_masks)
AREA = {"circle": np.pi, "square": 1.4**2, "triangle": 3 * np.sqrt(3) / 4,
        "cross": 2 * 0.6 * 1.9 - 0.6**2, "ring": np.pi * (1 - 0.25), "diamond": 2.0}


@pytest.fixture(scope="module")
def shapes():
    return make_shapes(240, seed=5)


def test_balanced_rgb_uint8_with_known_classes(shapes):
    d = shapes.data
    assert d.images.shape == (240, 3, 64, 64) and d.images.dtype == torch.uint8
    assert d.classes == SHAPE_CLASSES and torch.bincount(d.labels).tolist() == [40] * 6
    assert shapes.masks.shape == (240, 64, 64) and shapes.boxes.shape == (240, 4)


def test_the_mask_is_the_class_shape_in_one_colour_and_the_box_bounds_it(shapes):
    p = _draw_params(240, 64, np.random.default_rng(5))  # the same draws make_shapes made
    imgs = shapes.data.images.permute(0, 2, 3, 1).numpy()
    for i in range(240):
        mask = shapes.masks[i].numpy()
        name = SHAPE_CLASSES[int(shapes.data.labels[i])]
        expected = AREA[name] * p["radius"][i] ** 2
        assert abs(mask.sum() - expected) < 0.12 * expected + 6, (i, name, mask.sum(), expected)
        colours = np.unique(imgs[i][mask], axis=0)
        assert len(colours) == 1  # painted in the shape's single colour
        left, top, right, bottom = shapes.boxes[i].tolist()
        ys, xs = np.nonzero(mask)
        assert (left, top, right, bottom) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        cy, cx = int(p["cy"][i]), int(p["cx"][i])
        assert mask[cy, cx] == (name != "ring")  # only the ring has a hole at its centre


def test_distractors_keep_clear_of_the_deciding_shape():
    p = _draw_params(500, 64, np.random.default_rng(1))
    reach = p["radius"] + 1.0
    outer = np.stack([p["cx"] - reach, p["cy"] - reach, p["cx"] + reach, p["cy"] + reach], 1)
    x, y, visible = _place_distractors(p, outer)
    r = np.where(p["d_kind"] == 0, p["d_len"] + p["d_width"], p["d_spot"])
    apart = ((x + r < outer[:, 0, None]) | (x - r > outer[:, 2, None])
             | (y + r < outer[:, 1, None]) | (y - r > outer[:, 3, None]))
    assert apart[visible].all() and visible.mean() > 0.9
    assert visible.shape == (500, DISTRACTORS)


def test_distractors_are_drawn_outside_the_box(shapes):
    imgs = shapes.data.images.float() / 255
    sat = imgs.max(1).values - imgs.min(1).values  # saturated pixels: shapes and distractors
    outside = sat > 0.55
    for i, (left, top, right, bottom) in enumerate(shapes.boxes.tolist()):
        outside[i, top:bottom, left:right] = False
    assert (outside.flatten(1).sum(1) >= 4).float().mean() > 0.9  # muted backgrounds stay below 0.55


def test_deterministic_from_the_seed_and_registered():
    a, b, c = make_shapes(20, seed=3), make_shapes(20, seed=3), make_shapes(20, seed=4)
    assert torch.equal(a.data.images, b.data.images) and torch.equal(a.boxes, b.boxes)
    assert not torch.equal(a.data.images, c.data.images)
    spec = DATASETS["shapes"]
    assert isinstance(spec, GeneratedSpec) and spec.shape == (3, 64, 64) and spec.made_from == ()
    test = load_dataset("shapes", "test")
    assert test is load_shapes("test").data and len(test) == 1000 and test.split == "test"
    assert where_is("shapes") == "generated (no files needed)"
