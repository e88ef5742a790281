import pytest
import torch

from kangae.models import create_model
from kangae.probes import is_linear, weight_templates
from tests.probes.models import random_linear


def test_linear_templates_are_weight_rows_in_pixel_space():
    torch.manual_seed(0)
    model = random_linear()
    model.normalize.std.fill_(0.5)
    r = weight_templates(model)
    assert r.signed and r.metrics["kind"] == "weights"
    assert torch.allclose(r.images.view(10, -1), model.logits.weight.detach() / 0.5)
    # the defining property: logit differences are inner products with the template
    x, y = torch.rand(1, 1, 28, 28), torch.rand(1, 1, 28, 28)
    with torch.no_grad():
        diff = model(x) - model(y)
    assert torch.allclose(diff[0], (r.images.view(10, -1) @ (x - y).flatten()), atol=1e-4)


def test_mean_gradient_of_a_linear_model_equals_its_template():
    torch.manual_seed(0)
    model = random_linear()
    images, labels = torch.rand(50, 1, 28, 28), torch.arange(50) % 10
    wrapped = torch.nn.Sequential(model, torch.nn.Identity(), torch.nn.ReLU(), torch.nn.Identity())
    assert not is_linear(wrapped) and is_linear(model)
    # ReLU after the logits is the identity where logits are positive; shift them up
    model.logits.bias.data += 100
    grad = weight_templates(wrapped, images, labels)
    assert grad.metrics["kind"] == "mean-gradient"
    assert torch.allclose(grad.images, weight_templates(model).images, atol=1e-5)


def test_mean_gradient_needs_data():
    with pytest.raises(ValueError, match="need images and labels"):
        weight_templates(create_model("mlp"))
