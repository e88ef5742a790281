"""kangae.open_model: every model source loads the same weights and gives the same logits;
pickles are refused."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from kangae import open_model
from kangae.errors import KangaeError
from kangae.models.card import CardError, imagenet_classes
from kangae.models.layers import get_layer
from kangae.models.open import PixelModel

FACTORY = textwrap.dedent("""
    from torch import nn

    def small():
        return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(6, 4))
""")
MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
CARD = {"size": 24, "mean": MEAN, "std": STD, "classes": ["cat", "dog", "fox", "owl"]}


@pytest.fixture()
def zoo(tmp_path: Path) -> dict:
    """One network saved every way kangae reads, and the logits it must give."""
    (tmp_path / "userlib.py").write_text(FACTORY)
    sys.path.insert(0, str(tmp_path))
    try:
        import importlib

        import userlib

        importlib.reload(userlib)
        torch.manual_seed(3)
        net = userlib.small().eval()
    finally:
        sys.path.remove(str(tmp_path))
    x = torch.rand(5, 3, 24, 24)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    expected = net((x - mean) / std).detach()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    torch.save(state, tmp_path / "weights.pt")
    save_file(state, str(tmp_path / "weights.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, tmp_path / "ddp.pth")
    torch.jit.save(torch.jit.trace(net, x), tmp_path / "model.ts")
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(net, (x,), dynamic_shapes=({0: batch},)), tmp_path / "model.pt2")
    (tmp_path / "card.json").write_text(json.dumps(CARD))
    return {"dir": tmp_path, "x": x, "expected": expected, "net": net}


def _logits(run, x):
    with torch.no_grad():
        return run.model(x)


@pytest.mark.parametrize("spec,weights", [
    ("userlib.py:small", "weights.safetensors"),
    ("userlib.py:small", "weights.pt"),
    ("userlib.py:small", "ddp.pth"),
    ("model.ts", None),
    ("model.pt2", None),
])
def test_every_source_gives_the_same_logits(zoo, spec, weights, monkeypatch):
    monkeypatch.chdir(zoo["dir"])
    run = open_model(spec, weights=weights)  # the card beside the files is found by itself
    assert isinstance(run.model, PixelModel)
    assert run.model.input_shape == (3, 24, 24)
    assert run.classes == CARD["classes"]
    torch.testing.assert_close(_logits(run, zoo["x"]), zoo["expected"], atol=1e-5, rtol=1e-4)
    assert all(t.device.type == "cpu" for t in run.model.state_dict().values())


def test_dotted_module_factory(zoo, monkeypatch):
    monkeypatch.syspath_prepend(str(zoo["dir"]))
    run = open_model("userlib:small", weights=zoo["dir"] / "weights.pt", card=CARD)
    torch.testing.assert_close(_logits(run, zoo["x"]), zoo["expected"], atol=1e-5, rtol=1e-4)


def test_layers_answer_to_the_users_names(zoo, monkeypatch):
    monkeypatch.chdir(zoo["dir"])
    run = open_model("userlib.py:small", weights="weights.pt")
    assert get_layer(run.model, "3") is get_layer(run.model, "net.3")
    assert isinstance(get_layer(run.model, "3"), nn.Conv2d)


def test_exported_graph_keeps_its_mode_and_gradients(zoo, monkeypatch):
    monkeypatch.chdir(zoo["dir"])
    run = open_model("model.pt2")
    run.model.train()  # the exported graph refuses .train(); the wrapper does not pass it on
    run.model.eval()
    x = zoo["x"].clone().requires_grad_(True)
    run.model(x)[:, 1].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_a_pickle_exploit_is_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "userlib2.py").write_text(FACTORY)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"weight": Exploit()}, tmp_path / "evil.pt")
    with pytest.raises(KangaeError, match="refused: loading it needs full unpickling"):
        open_model("userlib2.py:small", weights="evil.pt", card=CARD)
    assert not marker.exists()


def test_a_whole_pickled_module_is_refused_with_how_to_convert(zoo, monkeypatch):
    monkeypatch.chdir(zoo["dir"])
    torch.save(zoo["net"], "whole.pt")
    with pytest.raises(KangaeError, match=r"Sequential object.*state_dict\(\)"):
        open_model("userlib.py:small", weights="whole.pt")


def test_weights_that_do_not_fit_name_the_keys(zoo, monkeypatch):
    monkeypatch.chdir(zoo["dir"])
    save_file({"0.weight": torch.zeros(6, 3, 3, 3)}, "partial.safetensors")
    with pytest.raises(KangaeError, match=r"partial.safetensors: the weights do not fit the model \(missing"):
        open_model("userlib.py:small", weights="partial.safetensors")


@pytest.mark.parametrize("spec,message", [
    ("weights.pt", "weights alone do not say how to build the model"),
    ("nowhere.py:small", "no such Python file"),
    ("userlib.py:nothing", "has no 'nothing'"),
    ("no/such/thing", "no such run folder or model file"),
])
def test_bad_specs_get_one_line(zoo, monkeypatch, spec, message):
    monkeypatch.chdir(zoo["dir"])
    with pytest.raises(KangaeError, match=message) as info:
        open_model(spec, weights=None)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("card,message", [
    ({"mean": MEAN, "std": STD}, "'size' is missing"),
    ({"size": 24}, "give 'mean' and 'std'"),
    ({"size": 24, "mean": MEAN}, "'std' is missing"),
    ({"size": 24, "mean": [0.5, 0.5], "std": [0.2, 0.2], "channels": 3},
     "'mean' has 2 values for 3 channels"),
    ({"size": 24, "normalizes_itself": True, "mean": MEAN, "std": STD}, "say one or the other"),
    ({"size": 24, "mean": [124, 116, 104], "std": [58, 57, 57]}, "look like 0-255 values"),
    ({"size": 24, "normalizes_itself": True, "classes": ["a", "b"]},
     "'classes' has 2 names but the model has 4"),
    ({"size": 24, "normalizes_itself": True, "channels": 1}, "does not take a batch of \\[1, 24, 24\\]"),
    ({"size": 24, "normalizes_itself": True, "resize": 16}, "'resize' 16 is smaller than the crop"),
    ({"size": 24, "normalizes_itself": True, "colour": "rgb"}, "unknown field 'colour'"),
])
def test_a_bad_card_is_one_clear_line(zoo, monkeypatch, card, message):
    monkeypatch.chdir(zoo["dir"])
    (zoo["dir"] / "card.json").unlink()
    with pytest.raises(CardError, match=message) as info:
        open_model("userlib.py:small", weights="weights.pt", card=card)
    assert "\n" not in str(info.value)


def test_inferred_fields_are_said(zoo, monkeypatch):
    monkeypatch.chdir(zoo["dir"])
    (zoo["dir"] / "card.json").unlink()
    run = open_model("userlib.py:small", weights="weights.pt", card={"size": 24, "normalizes_itself": True})
    assert run.card.inferred == ("channels", "classes")
    assert run.classes == ["0", "1", "2", "3"]
    assert run.meta.dataset == ""
    with pytest.raises(KangaeError, match="--images"):
        run.dataset("test")


def test_a_linear_first_layer_gives_the_size(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlp.py").write_text(
        "from torch import nn\ndef mlp():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n")
    run = open_model("mlp.py:mlp", card={"normalizes_itself": True})
    assert run.model.input_shape == (1, 28, 28)


def test_a_flat_first_layer_and_a_given_size_give_the_channels(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlp.py").write_text(
        "from torch import nn\ndef mlp():\n    return nn.Sequential(nn.Flatten(), nn.Linear(384, 4))\n")
    run = open_model("mlp.py:mlp", card={"size": [16, 8], "mean": [0.5], "std": [0.25]})
    assert run.model.input_shape == (3, 16, 8) and "channels" in run.card.inferred


def test_the_card_beside_the_weights_goes_by_their_whole_name_first(tmp_path):
    from kangae.models.card import card_beside

    w = tmp_path / "w3.safetensors"
    w.write_bytes(b"")
    assert card_beside(w) is None
    for name in ("card.json", "w3.card.json", "w3.safetensors.card.json"):  # each beats the one before
        (tmp_path / name).write_text("{}")
        assert card_beside(w) == tmp_path / name


def test_a_model_without_weights_is_said_to_be_untrained(zoo, monkeypatch):
    from kangae.models.open import NoWeightsWarning

    monkeypatch.chdir(zoo["dir"])
    with pytest.warns(NoWeightsWarning, match=r"userlib.py:small without --weights"):
        open_model("userlib.py:small", card="card.json")
    with pytest.warns(NoWeightsWarning, match="zoo model mlp without --weights: its weights are random"):
        open_model("mlp")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", NoWeightsWarning)
        open_model("userlib.py:small", weights="weights.pt")


def test_card_file_with_class_file_and_imagenet_names(tmp_path):
    from kangae.models.card import read_card

    (tmp_path / "names.txt").write_text("ant\n\nbee\nwasp\n")
    (tmp_path / "a.json").write_text(json.dumps({"classes": "names.txt", "size": [20, 30]}))
    card = read_card(tmp_path / "a.json")
    assert card.classes == ("ant", "bee", "wasp") and card.size == (20, 30)
    names = imagenet_classes()
    assert len(names) == 1000 and names[0] == "tench" and names[207] == "golden_retriever"
    (tmp_path / "b.json").write_text("{not json")
    with pytest.raises(CardError, match="b.json: not valid JSON"):
        read_card(tmp_path / "b.json")


def test_a_kangae_run_opens_as_before(mlp_run):
    run = open_model(mlp_run)
    assert run.card.source == "run" and run.card.preprocess == "mnist"
    assert run.model.input_shape == (1, 28, 28)
    with pytest.raises(KangaeError, match="carries its own weights"):
        open_model(mlp_run, weights="x.safetensors")


# --- torchvision and timm, through stand-in packages of the same API -------------------------

TORCHVISION = textwrap.dedent("""
    import torch
    from torch import nn

    class _Preset:
        crop_size, resize_size = [32], [40]
        mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

    class _Weights:
        meta = {"categories": ["red", "green", "blue"]}
        def transforms(self):
            return _Preset()

    class _Enum:
        DEFAULT = _Weights()

    def get_model_weights(name):
        if name != "tinynet":
            raise ValueError(f"Unknown model {name}")
        return _Enum

    def get_model(name, weights=None):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
""")
TIMM = textwrap.dedent("""
    import torch
    from torch import nn

    def create_model(name, pretrained=False):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1000))
        net.pretrained_cfg = {"input_size": (3, 48, 48), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
                              "crop_pct": 0.9, "num_classes": 1000}
        return net
""")


@pytest.fixture()
def stand_ins(tmp_path, monkeypatch):
    (tmp_path / "torchvision" / "models").mkdir(parents=True)
    (tmp_path / "torchvision" / "__init__.py").write_text("")
    (tmp_path / "torchvision" / "models" / "__init__.py").write_text(TORCHVISION)
    (tmp_path / "timm").mkdir()
    (tmp_path / "timm" / "__init__.py").write_text(TIMM)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("torchvision", "torchvision.models", "timm"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return tmp_path


def test_torchvision_model_takes_its_card_from_the_weights(stand_ins):
    run = open_model("torchvision:tinynet")
    assert run.classes == ["red", "green", "blue"]
    assert run.model.input_shape == (3, 32, 32) and run.card.resize == 40
    assert run.meta.normalization["mean"] == pytest.approx([0.485, 0.456, 0.406])
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(_logits(run, x), run.model.net((x - mean) / std).detach())
    with pytest.raises(KangaeError, match="torchvision has no model 'nonet'"):
        open_model("torchvision:nonet")


def test_timm_model_and_imagenet_names(stand_ins):
    run = open_model("timm:tiny")
    assert run.model.input_shape == (3, 48, 48) and run.card.resize == round(48 / 0.9)
    assert run.classes[0] == "tench" and len(run.classes) == 1000


def test_missing_library_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(KangaeError, match="'timm:' models need the timm package"):
        open_model("timm:resnet18")


def test_onnx_needs_the_extra_or_loads_the_same_logits(zoo, monkeypatch):
    pytest.importorskip("onnx", reason="the onnx extra (pip install 'kangae[onnx]') is not installed")
    try:
        from kangae.models.open import _onnx2torch

        _onnx2torch()
    except KangaeError as e:
        pytest.skip(str(e))
    monkeypatch.chdir(zoo["dir"])
    torch.onnx.export(zoo["net"], (zoo["x"],), "model.onnx", dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}})
    run = open_model("model.onnx")
    torch.testing.assert_close(_logits(run, zoo["x"]), zoo["expected"], atol=1e-4, rtol=1e-4)


def test_the_trial_pass_leaves_batch_norm_statistics_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bn.py").write_text(
        "from torch import nn\ndef net():\n    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), "
        "nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))\n")
    state = {"0.weight": torch.randn(4, 3, 3, 3), "0.bias": torch.randn(4), "1.weight": torch.ones(4),
             "1.bias": torch.zeros(4), "1.running_mean": torch.full((4,), 5.0),
             "1.running_var": torch.ones(4), "1.num_batches_tracked": torch.tensor(7),
             "4.weight": torch.randn(2, 4), "4.bias": torch.zeros(2)}
    save_file(state, "bn.safetensors")
    run = open_model("bn.py:net", weights="bn.safetensors", card={"size": 8, "normalizes_itself": True})
    bn = get_layer(run.model, "1")
    assert torch.equal(bn.running_mean, state["1.running_mean"]) and int(bn.num_batches_tracked) == 7
    assert not run.model.training


def test_a_card_that_would_normalize_a_self_normalizing_zoo_model_twice_is_said(recwarn):
    """kangae's zoo models carry their Normalize layer: a card's mean and std on top would
    normalize twice. kangae says so, naming the layer's numbers; an explicit
    ``"normalizes_itself": false`` (the model really was trained that way) is taken quietly."""
    import warnings

    from kangae.models.card import CardWarning

    with pytest.warns(CardWarning, match=r"fast-cnn normalizes its input itself .*mean 0\.1307, std 0\.3081"):
        run = open_model("fast-cnn", card={"mean": [0.5], "std": [0.5]})
    assert run.card.mean == (0.5,) and not run.card.normalizes_itself  # said, not overruled
    with warnings.catch_warnings():
        warnings.simplefilter("error", CardWarning)
        open_model("fast-cnn", card={"mean": [0.5], "std": [0.5], "normalizes_itself": False})
        open_model("fast-cnn", card={"classes": [str(i) for i in range(10)]})
