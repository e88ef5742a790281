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


def _files(folder):
    return sorted(f.name for f in folder.iterdir())


def test_an_attack_saves_the_files_kangae_fool_writes(results, tmp_path):
    r = results["attack"]
    r.save(tmp_path, classes=[f"c{k}" for k in range(10)])
    assert _files(tmp_path) == ["adversarials.png", "differences.png", "fool.json", "originals.png",
                                "tensors.safetensors"]
    meta = json.loads((tmp_path / "fool.json").read_text())
    assert meta["attack"] == "fgsm" and meta["eps"] == 0.1 and meta["metrics"]["n"] == 6
    assert meta["per_image"]["pred_after"] == r.pred_after.tolist()
    assert meta["files"] == ["originals.png", "adversarials.png", "differences.png"]
    tensors = load_file(str(tmp_path / "tensors.safetensors"))
    torch.testing.assert_close(tensors["images"], r.images)
    torch.testing.assert_close(tensors["target"], r.target)
    # the differences grid is the signed change: an unchanged image would be uniform grey
    diff = np.asarray(Image.open(tmp_path / "differences.png").convert("L"), dtype=np.float32)
    assert diff.std() > 5


def test_edits_template_and_curve_save_their_fool_files(results, tmp_path):
    results["edits"].save(tmp_path / "edits")
    assert _files(tmp_path / "edits") == ["adversarials.png", "differences.png", "fool.json", "originals.png",
                                          "saliency-after.png", "saliency-before.png", "tensors.safetensors"]
    edits = json.loads((tmp_path / "edits" / "fool.json").read_text())
    assert [e["pixels_changed"] for e in edits["per_image"]] == results["edits"].n_changed.tolist()
    results["template"].save(tmp_path / "template")
    assert _files(tmp_path / "template") == ["adversarials.png", "curve.png", "differences.png", "fool.json",
                                             "originals.png", "template.png", "tensors.safetensors"]
    tpl = json.loads((tmp_path / "template" / "fool.json").read_text())
    assert tpl["share_target"] == results["template"].share_target and tpl["target"] == 3
    results["curve"].save(tmp_path / "curve")
    assert _files(tmp_path / "curve") == ["curve.png", "fool.json"]
    assert json.loads((tmp_path / "curve" / "fool.json").read_text())["accuracy"] == results["curve"].accuracy


def test_a_template_draws_the_smallest_alpha_that_fools_half():
    from kangae.probes.attacks.template import TemplateResult

    r = TemplateResult([0, 0.1, 0.2, 0.3], 3, torch.zeros(1, 2, 2), [0.0, 0.4, 0.6, 0.9], [0.1] * 4,
                       None, torch.zeros(4, 1, 1, 2, 2), torch.zeros(1, 1, 2, 2),
                       torch.zeros(4, 1, dtype=torch.long))
    assert r.shown_alpha == 2
    r.share_target = [0.0, 0.1, 0.2, 0.3]
    assert r.shown_alpha == 3  # none reaches half: the largest


def test_an_explanation_saves_the_files_kangae_explain_writes(results, tmp_path):
    e = results["explanation"]
    e.save(tmp_path, classes=[f"c{k}" for k in range(10)], sources=["a.png", "b/b.png"])
    names = _files(tmp_path)
    assert names[:4] == ["00-a-panel.png", "00-a-seen.png", "01-b-panel.png", "01-b-seen.png"]
    assert "explanations.json" in names and "tensors.safetensors" in names and len(names) == 2 * 6 + 2
    meta = json.loads((tmp_path / "explanations.json").read_text())
    assert [m["target"] for m in meta["images"]] == e.target.tolist()
    assert meta["images"][0]["class"] == f"c{int(e.target[0])}" and meta["method"] == "mask"
    assert meta["images"][2]["source"] == "" and meta["images"][2]["files"][0] == "02-image2-panel.png"
    seen = np.asarray(Image.open(tmp_path / "00-a-seen.png").convert("L"), dtype=np.float32)
    assert np.abs(seen - e.inputs[0, 0].numpy() * 255).max() <= 1  # the input itself, at 1x
    tensors = load_file(str(tmp_path / "tensors.safetensors"))
    torch.testing.assert_close(tensors["attribution"], e.attribution)
    torch.testing.assert_close(tensors["inputs"], e.inputs)


def test_an_explanation_without_inputs_says_what_is_missing(results, tmp_path):
    import dataclasses

    e = dataclasses.replace(results["explanation"], inputs=None)
    with pytest.raises(ValueError, match="no inputs"):
        e.save(tmp_path)


def test_confusion_and_calibration_save_what_their_commands_write(results, tmp_path):
    x = torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    results["confusion"].save(tmp_path / "c", images=x)
    assert _files(tmp_path / "c") == ["confused-pairs.png", "confusion.json", "confusion.png"]
    c = json.loads((tmp_path / "c" / "confusion.json").read_text())
    assert c["matrix"] == results["confusion"].matrix.tolist() and c["classes"][3] == "3"
    assert c["accuracy"] == pytest.approx(float(results["confusion"].matrix.diagonal().sum()) / 40)
    results["calibration"].save(tmp_path / "k")
    assert _files(tmp_path / "k") == ["calibration.json", "reliability.png", "tensors.safetensors"]
    k = json.loads((tmp_path / "k" / "calibration.json").read_text())
    assert k["ece"] == results["calibration"].metrics["ece"] and len(k["bin_count"]) == 5
    logits = torch.randn(40, 10, generator=torch.Generator().manual_seed(3))
    scaled = p.temperature_scaling(logits, torch.arange(40) % 10, bins=5)
    assert scaled["temperature"] == scaled.temperature  # the former dict access still works
    scaled.save(tmp_path / "t", extra={"split": "test"})
    assert _files(tmp_path / "t") == ["calibration.json", "reliability.png"]
    t = json.loads((tmp_path / "t" / "calibration.json").read_text())
    assert t["split"] == "test" and t["temperature"] == scaled.temperature
    assert t["before"]["ece"] == scaled.before.metrics["ece"] and t["after"]["n"] == 20


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
