import pytest
import torch
from torch import nn

from kangae.models import create_model
from kangae.probes import Regularizers, activation_maximization
from tests.probes.models import random_linear


def _hooks(model):
    return sum(len(m._forward_hooks) for m in model.modules())


def test_logit_prototype_of_a_linear_model_follows_the_weight_signs():
    torch.manual_seed(0)
    model = random_linear()
    result = activation_maximization(model, list(range(10)), steps=300, lr=0.1,
                                     regularizers=Regularizers(jitter=0))
    w = model.logits.weight.detach()
    strong = w.abs() > w.abs().quantile(0.5, dim=1, keepdim=True)
    on = result.images.view(10, -1) > 0.5
    agree = (on == (w > 0))[strong].float().mean()
    assert agree > 0.99
    assert result.images.shape == (10, 1, 28, 28) and result.frames.shape[1] == 10


def test_channel_objective_finds_the_pattern_a_unit_detects():
    # layer "feat" unit j computes <pattern_j, x>; its maximizer lights pattern_j's pixels
    torch.manual_seed(0)
    patterns = (torch.rand(4, 784) > 0.5).float() * 2 - 1
    model = nn.Sequential()
    model.add_module("flatten", nn.Flatten())
    model.add_module("feat", nn.Linear(784, 4, bias=False))
    model.add_module("out", nn.Linear(4, 2))
    model.feat.weight.data = patterns
    result = activation_maximization(model, [0, 1, 2, 3], objective="channel", layer="feat",
                                     steps=150, lr=0.2, regularizers=Regularizers(jitter=0))
    on = result.images.view(4, -1) > 0.5
    assert torch.equal(on, patterns > 0)


def test_conv_channels_and_neurons_batch_and_fourier():
    torch.manual_seed(0)
    model = create_model("vgg-small").eval()
    for objective in ("channel", "neuron"):
        r = activation_maximization(model, list(range(16)), objective=objective, layer="block1.relu2",
                                    steps=50, lr=0.2, param="fourier", frames=0,
                                    regularizers=Regularizers(jitter=0))
        assert r.images.shape == (16, 1, 28, 28) and r.frames is None
        assert 0 <= r.images.min() and r.images.max() <= 1
        curve = torch.tensor(r.metrics["objective_curve"])
        alive = curve[:, 0] > 0  # a ReLU unit that is dead at the start has no gradient
        assert alive.sum() >= 4 and (curve[alive, -1] > curve[alive, 0]).all()


def test_optimization_raises_the_objective_with_every_regularizer():
    torch.manual_seed(0)
    model = create_model("mlp", hidden=32).eval()
    reg = Regularizers(lp=0.1, l1=0.1, tv=0.1, blur_every=4, jitter=1)
    r = activation_maximization(model, [2, 5], steps=60, optimizer="rmsprop", lr=0.05,
                                regularizers=reg)
    curve = torch.tensor(r.metrics["objective_curve"])
    assert (curve[:, -1] > curve[:, 0]).all()


def test_diversity_makes_prototypes_of_one_target_differ():
    torch.manual_seed(0)
    model = create_model("mlp", hidden=32).eval()

    def spread(div):
        r = activation_maximization(model, [3], per_target=3, steps=80, diversity=div, seed=1)
        f = (r.images - r.images.mean()).flatten(1)
        f = torch.nn.functional.normalize(f, dim=1)
        return (f @ f.T)[~torch.eye(3, dtype=torch.bool)].mean()

    assert spread(5.0) < spread(0.0)


def test_mode_grad_flags_and_hooks_restored_even_on_error():
    model = create_model("cnn").train()
    model.hidden.weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    activation_maximization(model, [1], objective="channel", layer="block1.conv2", steps=3)
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert _hooks(model) == 0
    with pytest.raises(ValueError, match="target must lie in 0..31"):
        activation_maximization(model, [40], objective="channel", layer="block1.conv2", steps=3)
    assert model.training and _hooks(model) == 0
    assert all(p.grad is None for p in model.parameters())


def test_bad_objective_and_layer():
    model = create_model("mlp")
    with pytest.raises(ValueError, match="needs a layer"):
        activation_maximization(model, [0], objective="channel")
    with pytest.raises(KeyError, match="unknown layer 'hiden'"):
        activation_maximization(model, [0], objective="channel", layer="hiden")
