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
