"""Results show themselves (``_repr_png_``, ``show``) and save themselves."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import kangae.probes as p
from kangae.probes.display import Shows

from .models import random_linear


@pytest.fixture(scope="module")
def results():
    torch.manual_seed(0)
    model = random_linear(0.1)
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    y = torch.arange(6) % 10
    logits = torch.randn(40, 10, generator=torch.Generator().manual_seed(3))
    labels = torch.arange(40) % 10
    return {
        "prototypes": p.search_prototypes(model, target=[1, 2, 3], max_sweeps=1, frames=3),
        "attack": p.fgsm(model, x, target=y, eps=0.1),
        "edits": p.fewest_pixel_edits(model, x[:2], target=3, max_edits=2),
        "template": p.template_attack(model, x, target=3, alphas=(0, 0.5)),
        "curve": p.robustness_curve(model, x, target=y, eps_list=(0, 0.1), steps=2),
        "calibration": p.calibration(logits, labels, bins=5),
        "confusion": p.confusion(logits, labels),
        "explanation": p.explain(model, x, target=y, method="mask", steps=5),
    }


@pytest.mark.parametrize("name", ["prototypes", "attack", "edits", "template", "curve", "calibration",
                                  "confusion", "explanation"])
def test_every_result_draws_itself_as_a_png(results, name):
    r = results[name]
    assert isinstance(r, Shows)
    png = r._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    im = Image.open(io.BytesIO(png))
    assert im.width >= 100 and im.height >= 50


def test_a_before_after_sheet_has_three_rows_of_the_images(results):
    r = results["attack"]
    im = r.picture()
    # 6 images in a row at 8x (28 -> 224 px, 2 px padding), three rows: original, changed, change
    assert im.size == (6 * 226 + 2, 3 * 228)
    gray = np.asarray(im.crop((2, 2, 226, 226)).convert("L"), dtype=np.float32)
    top_left = torch.from_numpy(gray.copy()).flatten()
    expected = (r.original[0, 0] * 255).round().repeat_interleave(8, 0).repeat_interleave(8, 1).flatten()
    assert (top_left - expected).abs().max() <= 1


def test_the_default_save_writes_picture_json_and_tensors(results, tmp_path):
    r = results["attack"]
    r.save(tmp_path)
    assert (tmp_path / "result.png").is_file()
    meta = json.loads((tmp_path / "metrics.json").read_text())
    assert meta["method"] == "fgsm" and meta["eps"] == 0.1 and meta["metrics"]["n"] == 6
    tensors = load_file(str(tmp_path / "tensors.safetensors"))
    torch.testing.assert_close(tensors["images"], r.images)
    torch.testing.assert_close(tensors["target"], r.target)


def test_prototypes_save_the_files_kangae_ideas_writes(results, tmp_path):
    r = results["prototypes"]
    r.save(tmp_path, names=["one", "two", "three"])
    names = sorted(f.name for f in tmp_path.iterdir())
    assert names == ["grid.png", "metrics.json", "prototypes.safetensors", "search.gif",
                     "target-00-one.png", "target-01-two.png", "target-02-three.png"]
    saved = load_file(str(tmp_path / "prototypes.safetensors"))
    assert torch.equal(saved["images"], r.images) and saved["targets"].tolist() == [1, 2, 3]


def test_show_outside_a_notebook_opens_the_picture(results, monkeypatch):
    shown = []
    monkeypatch.setattr(Image.Image, "show", lambda self, *a, **k: shown.append(self.size))
    results["confusion"].show()
    assert len(shown) == 1


@pytest.mark.parametrize("side, png, tile", [(28, 224, 84), (224, 224, 224)])
def test_prototype_files_are_enlarged_only_below_photo_size(tmp_path, side, png, tile):
    """Digits are shown 8x (the search 3x); a 224-px prototype is saved at its own size."""
    from kangae.probes.result import PrototypeResult

    images = torch.rand(2, 3, side, side)
    r = PrototypeResult(images=images, target=torch.tensor([0, 1]), scores=torch.zeros(2),
                        method="gradient", frames=torch.rand(3, 2, 3, side, side))
    r.save(tmp_path)
    assert Image.open(tmp_path / "target-00-0.png").size == (png, png)
    assert Image.open(tmp_path / "search.gif").size == (2 * (tile + 2) + 2, tile + 4)
