"""The VGG16 layout: torchvision's module names, so its state dicts load as they are."""

import pytest
import torch
import torch.nn.functional as F

from kangae.models import create_model
from kangae.models.zoo import IMAGENET_MEAN, IMAGENET_STD, VGG16_KERAS_NAMES

# configuration D of Simonyan & Zisserman (2014): "M" is a 2x2 max-pool
CONFIG_D = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def _torchvision_conv_indices() -> list[int]:
    """Where torchvision's ``make_layers`` puts each conv in ``features`` (conv, ReLU; or pool)."""
    out, i = [], 0
    for v in CONFIG_D:
        if v == "M":
            i += 1
        else:
            out.append(i)
            i += 2
    return out


def _keras_style_weights(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random weights named as post 004's Keras VGG16 names them (block1_conv1, fc1, ...)."""
    weights, cin, block, conv = {}, 3, 1, 0
    for v in CONFIG_D:
        if v == "M":
            block, conv = block + 1, 0
            continue
        conv += 1
        weights[f"block{block}_conv{conv}_W"] = torch.randn(v, cin, 3, 3, generator=generator) * 0.05
        weights[f"block{block}_conv{conv}_b"] = torch.randn(v, generator=generator) * 0.05
        cin = v
    dense = {"fc1": (512 * 49, 4096), "fc2": (4096, 4096), "predictions": (4096, 1000)}
    for name, (fin, fout) in dense.items():
        weights[f"{name}_W"] = torch.randn(fout, fin, generator=generator) * 0.01
        weights[f"{name}_b"] = torch.randn(fout, generator=generator) * 0.01
    return weights


def _rename_to_torchvision(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    convs = [k[:-2] for k in weights if k.startswith("block") and k.endswith("_W")]
    names = {c: f"features.{i}" for c, i in zip(convs, _torchvision_conv_indices())}
    names.update(fc1="classifier.0", fc2="classifier.3", predictions="classifier.6")
    return {f"{names[k[:-2]]}.{'weight' if k.endswith('_W') else 'bias'}": v for k, v in weights.items()}


def _reference_forward(w: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """VGG16 written out with torch.nn.functional, from the Keras-named weights."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    h, block, conv = (x - mean) / std, 1, 0
    for v in CONFIG_D:
        if v == "M":
            h, block, conv = F.max_pool2d(h, 2), block + 1, 0
            continue
        conv += 1
        h = F.relu(F.conv2d(h, w[f"block{block}_conv{conv}_W"], w[f"block{block}_conv{conv}_b"], padding=1))
    h = F.adaptive_avg_pool2d(h, 7).flatten(1)
    h = F.relu(F.linear(h, w["fc1_W"], w["fc1_b"]))
    h = F.relu(F.linear(h, w["fc2_W"], w["fc2_b"]))
    return F.linear(h, w["predictions_W"], w["predictions_b"])


def test_vgg16_loads_a_torchvision_named_state_dict_and_computes_vgg16():
    weights = _keras_style_weights(torch.Generator().manual_seed(0))
    state = _rename_to_torchvision(weights)
    model = create_model("vgg16").eval()
    assert model.input_shape == (3, 224, 224)
    assert set(state) == {k for k in model.state_dict() if not k.startswith("normalize.")}
    model.load_state_dict(state)  # strict: every key torchvision has, and only those
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [v for v in CONFIG_D if v != "M"]
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.features) == 5
    with torch.no_grad():
        x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(model(x), _reference_forward(weights, x), rtol=1e-4, atol=1e-5)
        big = model(torch.rand(1, 3, 224, 224))  # the one forward at full size
    assert big.shape == (1, 1000) and torch.isfinite(big).all()
    assert VGG16_KERAS_NAMES["block5_conv3"] == "features.29"
    assert isinstance(model.features[29], torch.nn.ReLU) and model.features[28] is convs[-1]


def test_vgg16_keeps_its_mean_and_std_and_refuses_small_or_wrong_weights():
    model = create_model("vgg16", widths=(4, 8, 8, 16, 16), hidden=32, num_classes=5, image_size=64)
    state = model.state_dict()
    assert "normalize.mean" in state  # a kangae checkpoint saves them ...
    other = {k: v for k, v in state.items() if not k.startswith("normalize.")}
    model.load_state_dict(other)  # ... and another library's state dict need not have them
    assert model.normalize.mean.flatten().tolist() == pytest.approx(IMAGENET_MEAN)
    other["features.0.weight"] = other["features.0.weight"][:2]
    with pytest.raises(RuntimeError, match="size mismatch for features.0.weight"):
        model.load_state_dict(other)
    with pytest.raises(ValueError, match="at least 32 px"):
        create_model("vgg16", image_size=28)
