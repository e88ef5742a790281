"""Attacks with known answers: closed forms on linear models, ART as a reference for FGSM/PGD."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kangae.probes.attacks import (
    fewest_pixel_edits,
    fgsm,
    pgd,
    robustness_curve,
    saliency,
    template_attack,
)
from kangae.probes.templates import weight_templates

from .models import random_linear


def small_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.Tanh(), nn.Linear(32, 10)).eval()


def images(n: int, seed: int = 0, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(n, 1, 28, 28, generator=g)


def test_fgsm_step_is_eps_sign_of_the_closed_form_gradient():
    model = random_linear()
    with torch.no_grad():
        model.normalize.mean.fill_(0.13)
        model.normalize.std.fill_(0.31)
    x = images(16, lo=0.3, hi=0.7)  # interior: no clipping at eps 0.1
    y = torch.arange(16) % 10
    w = weight_templates(model).images.flatten(1)  # pixel-space W (normalization folded in)
    with torch.no_grad():
        p = F.softmax(model(x), 1)
    grad = (p - F.one_hot(y, 10).float()) @ w  # d CE / d x = W^T (p - y)
    res = fgsm(model, x, y, 0.1)
    torch.testing.assert_close(res.images - x, 0.1 * grad.sign().view_as(x), atol=1e-6, rtol=0)
    targeted = fgsm(model, x, y, 0.1, targeted=True)
    torch.testing.assert_close(targeted.images - x, -0.1 * grad.sign().view_as(x), atol=1e-6, rtol=0)


def art_classifier(model: nn.Module):
    art = pytest.importorskip("art.estimators.classification")
    return art.PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28),
                                 nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")


@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_matches_art(targeted):
    evasion = pytest.importorskip("art.attacks.evasion")
    model = small_mlp()
    x = images(32, seed=1)
    y = (torch.arange(32) * 3) % 10
    ref = evasion.FastGradientMethod(art_classifier(model), norm=np.inf, eps=0.2, targeted=targeted,
                                     batch_size=32).generate(x.numpy(), y=np.eye(10)[y.numpy()])
    ours = fgsm(model, x, y, 0.2, targeted=targeted)
    np.testing.assert_allclose(ours.images.numpy(), ref, atol=1e-6)


def test_pgd_without_random_start_matches_art():
    evasion = pytest.importorskip("art.attacks.evasion")
    model = small_mlp(1)
    x = images(16, seed=2)
    y = torch.arange(16) % 10
    ref = evasion.ProjectedGradientDescent(art_classifier(model), norm=np.inf, eps=0.1, eps_step=0.02,
                                           max_iter=10, num_random_init=0, batch_size=16,
                                           verbose=False).generate(x.numpy(), y=np.eye(10)[y.numpy()])
    ours = pgd(model, x, y, 0.1, steps=10, alpha=0.02, random_start=False, keep_best=False)
    np.testing.assert_allclose(ours.images.numpy(), ref, atol=1e-5)


@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_stays_in_the_eps_ball_and_the_valid_range(targeted):
    model = small_mlp()
    x = images(64, seed=3)
    y = torch.arange(64) % 10
    for eps in (0.0, 0.05, 0.3):
        res = pgd(model, x, y, eps, steps=8, targeted=targeted, seed=4)
        assert (res.images - x).abs().max() <= eps + 1e-6
        assert res.images.min() >= 0 and res.images.max() <= 1
        assert res.metrics["max_linf"] <= eps + 1e-6
    again = pgd(model, x, y, 0.3, steps=8, targeted=targeted, seed=4)
    torch.testing.assert_close(again.images, res.images)  # seeded: reproducible
    if targeted:
        assert res.success.float().mean() > 0.9  # eps 0.3 reaches almost any target of a tiny MLP


def test_pgd_is_at_least_as_strong_as_fgsm_and_one_step_pgd_is_fgsm():
    model = small_mlp()
    x = images(128, seed=5)
    y = torch.arange(128) % 10
    one = pgd(model, x, y, 0.05, steps=1, alpha=0.05, random_start=False, keep_best=False)
    torch.testing.assert_close(one.images, fgsm(model, x, y, 0.05).images)
    f = fgsm(model, x, y, 0.03)
    p = pgd(model, x, y, 0.03, steps=20)
    assert p.success.sum() >= f.success.sum()
    assert p.success.sum() > 0


class Threshold(nn.Module):
    """Class 0 when pixel (0, 0) is above 0.5, else class 1."""

    def forward(self, x):
        z = 10 * (x[:, 0, 0, 0] - 0.5)
        return torch.stack([z, -z], dim=1)


@pytest.mark.parametrize("keep_best", [True, False])
def test_pgd_restarts_attack_the_survivors_again(keep_best):
    # From 0.6 with eps 0.2, one step of 0.01 crosses 0.5 only from a random start below 0.51:
    # P = 0.275 per start, so 10 starts fool 1 - 0.725 ** 10 = 96% of the images.
    x = torch.zeros(400, 1, 2, 2)
    x[:, 0, 0, 0] = 0.6
    y = torch.zeros(400, dtype=torch.long)
    once = pgd(Threshold(), x, y, 0.2, steps=1, alpha=0.01, keep_best=keep_best, seed=1)
    many = pgd(Threshold(), x, y, 0.2, steps=1, alpha=0.01, keep_best=keep_best, seed=1, restarts=10)
    assert 0.2 < once.success.float().mean() < 0.35
    assert many.success.float().mean() > 0.9 and many.metrics["restarts"] == 10
    hit = once.success
    torch.testing.assert_close(many.images[hit], once.images[hit])  # the first run is the same
    assert (many.images - x).abs().max() <= 0.2 + 1e-6
    chunked = pgd(Threshold(), x, y, 0.2, steps=1, alpha=0.01, keep_best=keep_best, seed=1, restarts=10,
                  batch_size=7)
    torch.testing.assert_close(chunked.images, many.images)  # the chunk size changes nothing
    with pytest.raises(ValueError, match="restarts"):
        pgd(Threshold(), x, y, 0.2, restarts=0)


def test_attacks_leave_model_and_inputs_alone():
    model = small_mlp().train()
    model[1].weight.requires_grad_(False)
    before = [p.clone() for p in model.parameters()]
    x = images(8, seed=6)
    x_copy = x.clone()
    pgd(model, x, 0, 0.1, steps=3)
    fewest_pixel_edits(model, x[:2], 3, max_edits=2)
    template_attack(model, x, 3, alphas=(0, 0.5), labels=torch.arange(8))
    assert model.training and not model[1].weight.requires_grad and model[3].weight.requires_grad
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert torch.equal(x, x_copy) and not x.requires_grad


def test_uint8_images_are_read_as_pixel_values():
    model = small_mlp()
    x8 = (images(4, seed=7) * 255).to(torch.uint8)
    a = fgsm(model, x8, 1, 0.1)
    b = fgsm(model, x8.float() / 255, 1, 0.1)
    torch.testing.assert_close(a.images, b.images)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fgsm(model, x8.float(), 1, 0.1)
    with pytest.raises(ValueError, match="eps"):
        fgsm(model, x8, 1, 1.5)
    with pytest.raises(ValueError, match="class indices"):
        fgsm(model, x8, 10, 0.1)


def test_robustness_curve_starts_at_clean_accuracy_and_falls():
    model = small_mlp()
    x = images(100, seed=8)
    with torch.no_grad():
        y = model(x).argmax(1)  # all correct at eps 0
    y[:10] = (y[:10] + 1) % 10  # ... but these ten
    curve = robustness_curve(model, x, y, eps_list=(0, 0.02, 0.1), steps=5)
    assert curve.accuracy["fgsm"][0] == curve.accuracy["pgd"][0] == pytest.approx(0.9)
    assert curve.accuracy["pgd"][2] <= curve.accuracy["pgd"][1] <= 0.9
    assert curve.accuracy["pgd"][2] <= curve.accuracy["fgsm"][2]


def test_template_attack_at_alpha_zero_changes_nothing_and_uses_the_weight_row():
    model = random_linear(0.1)
    x = images(40, seed=9, hi=0.5)
    y = torch.arange(40) % 10
    res = template_attack(model, x, 7, alphas=(0.0, 0.5, 2.0), labels=y)
    assert torch.equal(res.images[0], res.original)
    with torch.no_grad():
        clean = model(x).argmax(1)
    assert torch.equal(res.predictions[0], clean)
    w7 = weight_templates(model).images[7]
    torch.testing.assert_close(res.template, w7 / w7.abs().max())
    # at alpha 2 the image is (nearly) the template's positive part: the logit of 7 dominates
    expected = ((x + 2.0 * res.template).clamp(0, 1))
    with torch.no_grad():
        torch.testing.assert_close(res.predictions[2], model(expected).argmax(1))
    assert res.share_target[2] > res.share_target[0]
    assert res.metrics["counted"] == 36  # images labelled 7 are not counted


def two_class_linear(weights: torch.Tensor, bias: float) -> nn.Module:
    """logit_1 - logit_0 = <weights, x> + bias: target 1's log-odds are a sum over pixels."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 2))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[1] = weights.flatten()
        model[1].bias.copy_(torch.tensor([0.0, bias]))
    return model.eval()


def test_edit_search_finds_the_known_minimal_set_on_a_linear_model():
    w = torch.zeros(784)
    w[[10, 20, 30, 40]] = torch.tensor([1.5, 1.2, 0.9, 0.3])  # gains of switching these on
    w[[50, 60]] = torch.tensor([-1.4, -0.2])  # ... and of switching these (lit) pixels off
    x = torch.zeros(1, 1, 28, 28)
    x.view(-1)[[50, 60]] = 1.0
    # margin now -1.4 - 0.2 - 1.0 = -2.6; p >= 0.9 needs margin >= ln 9 = 2.197: +4.8 at least
    model = two_class_linear(w, -1.0)
    res = fewest_pixel_edits(model, x, 1, levels=(0.0, 1.0), threshold=0.9)
    assert res.success.all() and res.n_changed.tolist() == [4]
    assert set(res.changed.view(-1).nonzero().flatten().tolist()) == {10, 20, 30, 50}
    assert res.edit_order[0, :4].tolist() == [10, 50, 20, 30]  # largest gain first
    gains = torch.tensor([1.5, 1.4, 1.2, 0.9, 0.3, 0.2])
    for k in range(1, 4):  # brute force: no set of 3 changes is enough
        assert max(sum(c) for c in itertools.combinations(gains.tolist(), k)) - 2.6 < np.log(9)
    assert res.prob_after.item() == pytest.approx(torch.sigmoid(torch.tensor(-2.6 + 5.0)).item(), abs=1e-5)
    torch.testing.assert_close(res.difference.view(-1)[[10, 20, 30, 50]], torch.tensor([1.0, 1.0, 1.0, -1.0]))
    assert res.saliency_before is not None and res.saliency_after is not None


def test_edit_search_gray_levels_batches_and_failures():
    w = torch.zeros(784)
    w[[1, 2, 3]] = torch.tensor([4.0, 3.0, -6.0])
    model = two_class_linear(w, -2.0)
    x = torch.zeros(3, 1, 28, 28)
    x[1].view(-1)[[1, 2, 3]] = 1.0  # margin -1; switching pixel 3 off gains 6: one edit
    res = fewest_pixel_edits(model, x, torch.tensor([1, 1, 0]), levels=(0.0, 0.5, 1.0), max_edits=3)
    # image 0: pixel 1 to 1.0 gives margin 2.0 < ln 9, then pixel 2 to 1.0: two edits at level 1
    assert res.n_changed.tolist()[:2] == [2, 1]
    assert res.images[0].view(-1)[[1, 2]].tolist() == [1.0, 1.0]
    # image 2 already reads 0 at p = sigmoid(2) = 0.88 < 0.9: one edit (pixel 3 to 1) fixes it
    assert res.n_changed[2] == 1 and res.images[2].view(-1)[3] == 1.0
    assert res.success.all()
    alone = fewest_pixel_edits(model, x[1:2], 1, levels=(0.0, 0.5, 1.0), max_edits=3)
    torch.testing.assert_close(alone.images[0], res.images[1])
    stuck = fewest_pixel_edits(model, x, torch.tensor([1, 1, 0]), levels=(0.0, 0.5, 1.0), max_edits=1)
    assert stuck.success.tolist() == [False, True, True]  # one failure does not lose the others
    assert stuck.n_changed.tolist() == [1, 1, 1]


def test_edit_search_on_an_mlp_reaches_the_threshold_with_few_pixels():
    model = small_mlp(2)
    with torch.no_grad():
        model[3].weight.mul_(20)  # confident logits, as a trained model has
    x = images(3, seed=10, hi=0.2)
    res = fewest_pixel_edits(model, x, 4, max_edits=40)
    assert res.success.all() and (res.prob_after >= 0.9).all()
    assert (res.n_changed == res.changed.flatten(1).sum(1)).all()
    assert ((res.difference.abs() > 0) == res.changed).all()
    assert (res.prob_trace[:, 0] == res.prob_before).all()


def test_saliency_of_a_linear_model_is_its_weight_row():
    model = random_linear()
    x = images(5, seed=11)
    g = saliency(model, x, torch.tensor([0, 1, 2, 3, 4]))
    w = weight_templates(model).images
    torch.testing.assert_close(g, w[:5], atol=1e-5, rtol=1e-5)


def test_edit_search_first_layer_shortcut_gives_the_generic_answer():
    model = small_mlp(3)
    with torch.no_grad():
        model[3].weight.mul_(20)
    x = images(2, seed=12, hi=0.3)
    fast = fewest_pixel_edits(model, x, 5, levels=(0.0, 0.5, 1.0), max_edits=15, with_saliency=False)
    slow = fewest_pixel_edits(model, x, 5, levels=(0.0, 0.5, 1.0), max_edits=15, with_saliency=False,
                              fast=False)
    assert fast.metrics["first_layer_shortcut"] and not slow.metrics["first_layer_shortcut"]
    assert torch.equal(fast.edit_order, slow.edit_order)
    torch.testing.assert_close(fast.prob_trace, slow.prob_trace, equal_nan=True)


def test_chunking_does_not_change_deterministic_attacks():
    model = small_mlp()
    x = images(300, seed=9)
    y = torch.arange(300) % 10
    whole = fgsm(model, x, y, 0.1, batch_size=300)
    torch.testing.assert_close(fgsm(model, x, y, 0.1, batch_size=7).images, whole.images)
    torch.testing.assert_close(fgsm(model, x, y, 0.1).images, whole.images)  # 128 on a CPU
    no_start = pgd(model, x, y, 0.1, steps=5, random_start=False, batch_size=300)
    torch.testing.assert_close(pgd(model, x, y, 0.1, steps=5, random_start=False).images, no_start.images)
    torch.testing.assert_close(saliency(model, x, y, batch_size=11), saliency(model, x, y))
    with pytest.raises(ValueError, match="batch_size"):
        fgsm(model, x, y, 0.1, batch_size=0)


def _reference_pgd_run(model, xc, yc, start, *, eps, alpha, steps, targeted, keep_best, check):
    """The first PGD step loop, kept as the oracle: a new tensor every step, autograd through
    loss_gradient, projection on the ball and then on [0, 1]."""
    from kangae.probes.attacks._common import loss_gradient
    from kangae.probes.attacks.gradient import _record

    sign = -1.0 if targeted else 1.0
    adv = xc.clone() if start is None else (xc + eps * start).clamp(0, 1)
    best = xc.clone()
    done = torch.zeros(len(xc), dtype=torch.bool, device=xc.device)
    for i in range(steps if eps > 0 else 0):
        grad, logits = loss_gradient(model, adv, yc)
        if keep_best and i > 0:
            _record(best, done, adv, logits, yc, targeted)
        adv = adv + sign * alpha * grad.sign()
        adv = torch.minimum(torch.maximum(adv, xc - eps), xc + eps).clamp(0, 1)
    if (keep_best or check) and steps > 0 and eps > 0:
        with torch.no_grad():
            _record(best, done, adv, model(adv).float(), yc, targeted)
        if keep_best:
            adv = torch.where(done.view(-1, 1, 1, 1), best, adv)
    return adv.detach(), done


def _bn_cnn(channels: int, seed: int) -> nn.Module:
    """A fast-cnn-like net (conv, eval batch norm, ReLU, max pool) with non-trivial statistics."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(channels, 8, 5, padding=2, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 7 * 7, 10))
    for bn in (model[1], model[5]):
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize(("net", "targeted", "keep_best", "restarts"), [
    ("cnn", False, True, 1), ("cnn", True, True, 2), ("cnn", False, False, 1), ("rgb-cnn", False, True, 1),
    ("mlp", True, False, 3)])
def test_pgd_gives_the_images_of_the_reference_loop(monkeypatch, net, targeted, keep_best, restarts):
    """The in-place, channels-last step loop makes the same adversarial images, bit for bit,
    as the first implementation (the oracle above), for the same seed."""
    import kangae.probes.attacks.gradient as gradient

    channels = 3 if net == "rgb-cnn" else 1
    model = small_mlp(2) if net == "mlp" else _bn_cnn(channels, seed=3)
    g = torch.Generator().manual_seed(11)
    x = torch.rand(40, channels, 28, 28, generator=g)
    x[:20] = (x[:20] > 0.7).float()  # MNIST-like saturated pixels: projection hits 0 and 1
    y = torch.arange(40) % 10
    kwargs = dict(steps=12, targeted=targeted, keep_best=keep_best, restarts=restarts, seed=5, batch_size=16)
    ours = pgd(model, x, y, 0.2, **kwargs)
    monkeypatch.setattr(gradient, "_pgd_run", _reference_pgd_run)
    ref = pgd(model, x, y, 0.2, **kwargs)
    assert torch.equal(ours.images, ref.images)
    assert torch.equal(ours.success, ref.success)
    assert ours.images.is_contiguous()
    assert 0 < float(ours.success.float().mean())  # the attack did something
