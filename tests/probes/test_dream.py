"""Deep Dream of the user's pictures (post 004's next step)."""

import random

import numpy as np
import pytest
import torch

from kangae.models import create_model
from kangae.models.layers import capture
from kangae.probes import deep_dream
from kangae.probes.inputs import ProbeInputError


def _small_vgg():
    torch.manual_seed(0)
    return create_model("vgg16", widths=(8, 16, 16, 16, 16), hidden=16, image_size=64).eval()


def _norm(model, layer, x, channel=None):
    with torch.no_grad(), capture(model, [layer]) as out:
        model(x)
    a = out[layer] if channel is None else out[layer][:, channel]
    return a.flatten(1).norm(dim=1)


def test_dream_raises_the_layers_activation_norm_and_leaves_model_and_rng_as_found():
    model = _small_vgg().train()
    model.features[0].weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    photos = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(7)
    random.seed(7)
    np.random.seed(7)
    rng = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    r = deep_dream(model, photos, layer="features.8")
    assert torch.equal(torch.get_rng_state(), rng[0]) and random.getstate() == rng[1]
    assert np.array_equal(np.random.get_state()[1], rng[2])
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
    model.eval()
    before, after = _norm(model, "features.8", photos), _norm(model, "features.8", r.images)
    assert (after > 1.3 * before).all()
    torch.testing.assert_close(r.scores, after, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.tensor(r.metrics["start_norm"]), before, rtol=1e-4, atol=1e-4)
    assert r.images.shape == photos.shape and 0 <= r.images.min() and r.images.max() <= 1
    assert r.metrics["octaves"] == [[33, 33], [46, 46], [64, 64]] and r.frames.shape == (4, 2, 3, 64, 64)
    assert torch.equal(r.frames[0], photos) and r.target.tolist() == [-1, -1]
    assert (r.images - photos).abs().mean() < 0.25  # still the pictures, dreamed on


def test_dream_of_one_channel_raises_that_channel():
    model = _small_vgg()
    photos = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    r = deep_dream(model, photos, layer="features.8", target=[2, 5], octaves=1, steps=15)
    assert r.target.tolist() == [2, 5]
    for i, c in enumerate((2, 5)):
        assert _norm(model, "features.8", r.images[i : i + 1], c) > 1.3 * _norm(model, "features.8",
                                                                                photos[i : i + 1], c)


def test_dream_skips_octaves_a_flat_first_layer_cannot_take():
    torch.manual_seed(0)
    mlp = create_model("mlp", hidden=32).eval()
    r = deep_dream(mlp, torch.rand(1, 1, 28, 28), layer="hidden", steps=5)
    assert r.metrics["octaves"] == [[28, 28]] and r.metrics["skipped_octaves"] == [[14, 14], [20, 20]]
    assert r.scores[0] > r.metrics["start_norm"][0]
    with pytest.raises(KeyError, match="unknown layer 'hiden'"):
        deep_dream(mlp, torch.rand(1, 1, 28, 28), layer="hiden")
    with pytest.raises(ProbeInputError, match="octaves >= 1"):
        deep_dream(mlp, torch.rand(1, 1, 28, 28), layer="hidden", octaves=0)
