"""Attacks on colour models: eps is in pixel units whatever normalization the model has."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kangae.models.zoo import Normalize
from kangae.probes.attacks import fewest_pixel_edits, fgsm, pgd, template_attack

from .rgb_models import small_resnet

MEAN = (0.48, 0.46, 0.41)


def twin(std: float, seed: int = 0) -> nn.Module:
    """The same function of the pixels for any ``std``: the first conv's weights are scaled
    by ``std`` to undo the Normalize in front of it (a model with std 0.2 inside and one
    with std 1 answer alike, so an attack in pixel space must move them alike)."""
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    head = nn.Linear(8 * 8 * 8, 6)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.3 * std)
        conv.bias.copy_(torch.randn(8, generator=g) * 0.1)
        head.weight.copy_(torch.randn(head.weight.shape, generator=g) * 0.05)
        head.bias.zero_()
    model = nn.Sequential(Normalize(MEAN, (std,) * 3), conv, nn.ReLU(), nn.AdaptiveAvgPool2d(8),
                          nn.Flatten(), head).eval()
    model.input_shape = (3, 64, 64)
    return model


def pictures(n: int = 6, seed: int = 1, side: int = 64) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(seed)) * 0.8 + 0.1


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_eps_means_the_same_pixels_whatever_the_models_normalization(attack):
    x = pictures()
    narrow, plain = twin(0.2), twin(1.0)
    y = plain(x).argmax(1)
    assert torch.allclose(narrow(x), plain(x), atol=1e-4)  # one function of the pixels
    eps = 8 / 255
    run = (lambda m: fgsm(m, x, y, eps)) if attack == "fgsm" else (lambda m: pgd(m, x, y, eps, steps=5))
    a, b = run(narrow), run(plain)
    for r in (a, b):
        linf = (r.images - x).flatten(1).abs().amax(1)
        assert torch.allclose(linf, torch.full_like(linf, eps), atol=1e-6)  # 8/255 of a pixel, not of a std
        assert r.metrics["max_linf"] == pytest.approx(eps, abs=1e-6) and r.metrics["eps"] == eps
    # the same steps in pixel space: the two models' perturbations agree (but for the odd
    # pixel whose gradient is so near 0 that its sign differs in float rounding)
    same = ((a.images - b.images).abs() < 1e-6).float().mean()
    assert same > 0.999


def test_gradient_attacks_fool_a_64px_colour_resnet():
    model = small_resnet()
    x = pictures(4)
    y = model(x).argmax(1)
    r = pgd(model, x, y, eps=8 / 255, steps=10)
    assert r.images.shape == (4, 3, 64, 64)
    assert (r.images - x).abs().max() <= 8 / 255 + 1e-6
    assert r.success.all()  # an untrained net has no margin at 8/255
    f = fgsm(model, x, y, eps=8 / 255)
    assert f.images.shape == x.shape and f.picture().size[0] > 0


def test_template_and_edits_run_on_colour_pictures():
    model = twin(0.5)  # its pooling takes any size: 16 px keeps the edit search's candidates few
    x = pictures(3, side=16)
    t = template_attack(model, x, target=2, alphas=(0, 0.2), labels=model(x).argmax(1))
    assert t.template.shape == (3, 16, 16) and t.images.shape == (2, 3, 3, 16, 16)
    assert t.metrics["units"] == "pixels on the [0, 1] scale"
    e = fewest_pixel_edits(model, x[:1], target=2, max_edits=2, with_saliency=False)
    assert e.changed.shape == (1, 3, 16, 16) and int(e.n_changed[0]) <= 2
    assert e.metrics["units"] == "pixels on the [0, 1] scale"
    assert e.prob_trace[0, 1] >= e.prob_trace[0, 0]  # the best single change raises p(target)
