"""--images folders: labels from class folders, the card's resize and crop, bad files named and skipped."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from kangae.data.folder import UNLABELLED, match_class, prepare_picture, read_image_folder
from kangae.errors import KangaeError
from kangae.models.card import ModelCard

CARD = ModelCard(channels=3, size=(8, 8), resize=10, classes=("red fox", "Owl"), normalizes_itself=True)


def test_centre_crop_follows_torchvision_rule():
    # a 20x40 picture whose left, middle and right thirds differ: shorter side 20 -> 10, so 10x20,
    # then the centre 8x8 sees only the middle columns 6..13 of the resized picture
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, 12:28] = (0, 255, 0)
    out = prepare_picture(Image.fromarray(a), CARD)
    assert out.shape == (3, 8, 8) and out.dtype == torch.uint8
    assert (out[1] > 200).all() and (out[0] == 0).all()


def test_stretch_grey_and_transparency():
    card = ModelCard(channels=1, size=(4, 6), preprocess="stretch", normalizes_itself=True)
    rgba = np.zeros((10, 10, 4), np.uint8)  # fully transparent: laid on white
    out = prepare_picture(Image.fromarray(rgba, "RGBA"), card)
    assert out.shape == (1, 4, 6) and (out == 255).all()


def test_mnist_preprocessing_for_digit_models():
    card = ModelCard(channels=1, size=(28, 28), preprocess="mnist", normalizes_itself=True)
    a = np.full((50, 40), 255, np.uint8)
    a[10:40, 18:22] = 0  # a dark stroke on white: inverted, cropped, centred
    out = prepare_picture(Image.fromarray(a), card)
    assert out.shape == (1, 28, 28) and out[0, 14, 14] > 200 and out[0, 0, 0] == 0


def test_class_folders_give_labels_and_bad_files_are_named(tmp_path):
    for name, colour in (("red_fox", (255, 0, 0)), ("owl", (0, 0, 255))):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.new("RGB", (12 + i, 16), colour).save(tmp_path / name / f"{i}.png")
    (tmp_path / "owl" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    Image.new("RGB", (9, 9)).save(tmp_path / "stray.png")
    got = read_image_folder(tmp_path, CARD)
    assert got.labelled and got.images.labels.tolist() == [1, 1, 0, 0]
    assert got.images.images[2, 0].float().mean() > 250  # red_fox -> class 0 "red fox", red
    assert sorted(e.source.rsplit("/", 1)[-1] for e in got.errors) == ["broken.jpg", "stray.png"]
    assert "not in a class folder" in str(next(e for e in got.errors if "stray" in e.source))


def test_flat_folder_is_unlabelled_and_subsets(tmp_path):
    for i in range(5):
        Image.new("RGB", (10, 10), (i * 40, 0, 0)).save(tmp_path / f"{i}.png")
    got = read_image_folder(tmp_path, CARD)
    assert not got.labelled and (got.images.labels == UNLABELLED).all()
    assert len(got.images.subset(3)) == 3


def test_unknown_class_folder_and_empty_folder(tmp_path):
    (tmp_path / "ostrich").mkdir()
    Image.new("RGB", (10, 10)).save(tmp_path / "ostrich" / "a.png")
    with pytest.raises(KangaeError, match="unknown class folder 'ostrich'"):
        read_image_folder(tmp_path, CARD)
    (tmp_path / "empty").mkdir()
    with pytest.raises(KangaeError, match="no pictures here"):
        read_image_folder(tmp_path / "empty", CARD)


def test_match_class_rules():
    assert match_class("Owl", ("red fox", "Owl")) == 1
    assert match_class("RED-FOX", ("red fox", "Owl")) == 0
    assert match_class("1", ("a", "b")) == 1
