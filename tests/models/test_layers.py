import pytest
import torch

from kangae.errors import UnknownNameError
from kangae.models import create_model
from kangae.models.layers import capture, describe_layers, forward_hooks, get_layer


def _hook_count(model):
    return sum(len(m._forward_hooks) for m in model.modules())


def test_describe_layers_shapes_and_params():
    rows = {r.name: r for r in describe_layers(create_model("cnn"))}
    assert rows["block1"].output_shape == (32, 14, 14)
    assert rows["block2.pool"].output_shape == (32, 7, 7)
    assert rows["hidden"].output_shape == (512,) and rows["hidden"].params == 32 * 49 * 512 + 512


def test_capture_records_and_removes_hooks():
    model = create_model("mlp").eval()
    with capture(model, ["hidden", "logits"]) as out:
        y = model(torch.rand(2, 1, 28, 28))
    assert out["hidden"].shape == (2, 784) and torch.equal(out["logits"], y)
    assert _hook_count(model) == 0


def test_hooks_are_removed_when_the_forward_raises():
    model = create_model("mlp")

    def boom(*a):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError), forward_hooks(model, {"hidden": boom}):
        model(torch.rand(1, 1, 28, 28))
    assert _hook_count(model) == 0


def test_unknown_layer_lists_valid_names():
    with pytest.raises(UnknownNameError, match="Did you mean 'hidden'.*block1.conv1"):
        get_layer(create_model("cnn"), "hiden")


def test_describe_layers_uses_the_models_own_input_shape():
    """A 3x224 VGG16 layout (narrow, for time) and a 3x64 ResNet, no shape given."""
    vgg = {r.name: r for r in describe_layers(create_model("vgg16", num_classes=5, widths=(4, 8, 8, 16, 16),
                                                           hidden=32))}
    assert vgg["features.0"].output_shape == (4, 224, 224)
    assert vgg["features.30"].output_shape == (16, 7, 7)  # five halvings: 224 -> 7
    assert vgg["classifier.6"].output_shape == (5,) and vgg["classifier.0"].params == 16 * 49 * 32 + 32
    res = {r.name: r for r in describe_layers(create_model("resnet", num_classes=6, in_channels=3,
                                                           image_size=64))}
    assert res["stem.conv"].output_shape == (16, 32, 32)  # the stem strides by 2 above 32 px
    assert res["stage3"].output_shape == (64, 8, 8) and res["logits"].output_shape == (6,)
    assert res["stem.conv"].params == 3 * 16 * 9
