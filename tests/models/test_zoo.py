import inspect

import pytest
import torch
import torch.nn.functional as F

from kangae.errors import UnknownNameError
from kangae.models import MODELS, Normalize, create_model
from kangae.models.layers import layer_names
from kangae.models.zoo import SameConv2d

# ImageNet-sized layouts at a small width, so the test takes milliseconds
SMALL = {"vgg16": {"widths": (4, 8, 8, 16, 16), "hidden": 32, "image_size": 32}}
TORCHVISION_NAMED = {"vgg16"}  # named as torchvision names them: features.N, classifier.N


@pytest.mark.parametrize("name", list(MODELS))
def test_models_map_images_to_logits_and_carry_their_input_shape(name):
    model = create_model(name, num_classes=10, in_channels=1, **SMALL.get(name, {})).eval()
    default = inspect.signature(MODELS[name].build).parameters["image_size"].default
    size = SMALL.get(name, {}).get("image_size", default)
    assert model.input_shape == (1, size, size)
    assert model(torch.rand(3, *model.input_shape)).shape == (3, 10)
    wide = create_model(name, num_classes=47, in_channels=3, **SMALL.get(name, {})).eval()
    assert wide.input_shape[0] == 3 and wide(torch.rand(2, *wide.input_shape)).shape == (2, 47)


def test_input_shape_follows_the_arguments_and_the_defaults():
    assert create_model("cnn").input_shape == (1, 28, 28)
    assert create_model("global-cnn", in_channels=3, image_size=56).input_shape == (3, 56, 56)
    assert create_model("mlp", image_size=16).hidden.in_features == 256
    small = create_model("vgg16", **{k: v for k, v in SMALL["vgg16"].items() if k != "image_size"})
    assert small.input_shape == (3, 224, 224) and small.classifier[6].out_features == 1000


@pytest.mark.parametrize("name", list(MODELS))
def test_models_normalize_first_and_name_hidden_and_logits(name):
    model = create_model(name, **SMALL.get(name, {}))
    names = layer_names(model)
    assert names[0] == "normalize" and isinstance(model.normalize, Normalize)
    if name in TORCHVISION_NAMED:
        assert {"features", "avgpool", "classifier"} <= set(names)
        return
    assert "logits" in names
    if name != "softmax":
        assert "hidden" in names


def test_seed_cnn_architecture_matches_seed_003():
    model = create_model("cnn")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 32, (2, 2)), (32, 32, (2, 2)), (32, 32, (2, 2)), (32, 32, (2, 2))]
    assert model.hidden.out_features == 512 and model.block1.dropout.p == 0.2
    assert "block2.conv1" in layer_names(model)


def test_same_conv_pads_bottom_right_like_keras():
    conv = SameConv2d(1, 1, 2)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.zero_()
    x = torch.arange(9.0).view(1, 1, 3, 3)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), torch.ones(1, 1, 2, 2))
    assert torch.equal(conv(x), expected)
    assert conv(x)[0, 0, 2, 2] == 8.0  # bottom-right sees only itself


def test_normalize_is_per_channel_affine():
    norm = Normalize((0.5,), (0.25,))
    assert torch.allclose(norm(torch.full((1, 1, 2, 2), 0.75)), torch.ones(1, 1, 2, 2))


def test_unknown_model_suggests_closest():
    with pytest.raises(UnknownNameError, match="Did you mean 'fast-cnn'"):
        create_model("fastcnn")


def test_resnet_has_the_cifar_layout_of_he_et_al():
    from torch import nn

    for blocks, depth in ((1, 8), (3, 20)):  # ResNet-(6n+2)
        model = create_model("resnet", num_classes=6, in_channels=3, image_size=64, blocks=blocks)
        weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert len(weighted) == depth
        widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert sorted(set(widths)) == [16, 32, 64]
        assert model.input_shape == (3, 64, 64)
        from kangae.models.layers import capture

        with capture(model, ["stage1", "stage2", "stage3"]) as seen:
            assert model.eval()(torch.rand(2, 3, 64, 64)).shape == (2, 6)
        shapes = {n: o.shape for n, o in seen.items()}
        # 64 px: the stem strides by 2, so the stages see 32, 16 and 8 px as on CIFAR
        assert [tuple(shapes[n][1:]) for n in ("stage1", "stage2", "stage3")] == [(16, 32, 32), (32, 16, 16),
                                                                                   (64, 8, 8)]
    cifar = create_model("resnet", in_channels=3, image_size=32)
    assert cifar.stem.conv.stride == (1, 1) and cifar.input_shape == (3, 32, 32)


def test_resnet_shortcut_is_option_a_subsample_and_zero_channels():
    from kangae.models.zoo import BasicBlock

    block = BasicBlock(2, 4, stride=2).eval()
    with torch.no_grad():
        block.conv2.weight.zero_()  # the residual branch gives 0: only the shortcut is left
    x = torch.randn(1, 2, 6, 6)
    out = block(x)
    assert out.shape == (1, 4, 3, 3)
    assert torch.equal(out[:, :2], x[:, :, ::2, ::2].relu())
    assert torch.equal(out[:, 2:], torch.zeros(1, 2, 3, 3))
