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


def test_cluttered_mnist_is_registered_like_any_dataset(blob_data):
    from kangae.data import DATASETS, GeneratedSpec, where_is

    spec = DATASETS["cluttered-mnist"]
    assert isinstance(spec, GeneratedSpec) and spec.made_from == ("mnist",) and spec.num_classes == 10
    data = load_dataset("cluttered-mnist", "test")
    assert data.name == "cluttered-mnist" and tuple(data.images.shape[1:]) == spec.shape
    assert where_is("cluttered-mnist") == "generated from mnist"


def test_cluttered_mnist_says_when_its_source_is_missing(tmp_path):
    from kangae.data import where_is

    assert where_is("cluttered-mnist", tmp_path) == "generated from mnist (needs mnist)"


def test_no_import_circle_between_dataset_and_cluttered():
    import ast
    from pathlib import Path

    import kangae.data.dataset as dataset

    tree = ast.parse(Path(dataset.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "cluttered" not in imported and "shapes" not in imported
