import copy

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


def _shifted(x, shifts):
    """Each image moved by its (dy, dx) in [0, 2] (1 px of zero padding), as random_shift
    moves them, written as a gather."""
    padded = torch.nn.functional.pad(x, (1,) * 4)
    dy, dx = torch.tensor(shifts).T
    rows = (dy[:, None] + torch.arange(28))[:, :, None]
    cols = (dx[:, None] + torch.arange(28))[:, None, :]
    return padded[torch.arange(len(x))[:, None, None], :, rows, cols].permute(0, 3, 1, 2).contiguous()


def _plain_loop(model, targets, steps, lr=0.05, seed=0):
    """Activation maximization of digits as kangae did it before size-dependent defaults:
    sigmoid pixels, Adam, a random shift of up to 1 px each step (zeros fill); each image's
    start and shifts drawn, image by image, from its own generator (the seed and its class)."""
    from kangae.utils.rng import row_seed

    gens = [torch.Generator().manual_seed(row_seed(seed, k, 0)) for k in targets]
    raw = torch.nn.Parameter(torch.stack([torch.randn(1, 28, 28, generator=g) for g in gens]) * 0.01)
    opt = torch.optim.Adam([raw], lr=lr)
    t = torch.tensor(targets)
    for p in model.parameters():
        p.requires_grad_(False)
    for _ in range(steps):
        shifts = [[int(torch.randint(0, 3, (), generator=g)) for _ in range(2)] for g in gens]
        logits = model(_shifted(torch.sigmoid(raw), shifts))
        opt.zero_grad()
        (-logits[torch.arange(len(t)), t]).sum().backward()
        opt.step()
    return torch.sigmoid(raw).detach()


def test_digits_keep_their_defaults_and_results():
    torch.manual_seed(0)
    model = create_model("cnn", channels=4, hidden=16).eval()
    r = activation_maximization(model, [1, 3, 5], steps=25, frames=0)
    assert r.metrics["param"] == "pixel" and r.metrics["regularizers"]["transforms"] == "shift"
    assert r.metrics["regularizers"]["jitter"] == 1
    assert torch.equal(r.images, _plain_loop(copy.deepcopy(model), [1, 3, 5], 25))


def test_a_class_gets_the_same_prototype_whichever_classes_share_its_batch():
    """The web app batches whatever classes are asked at the time: class 3's picture must not
    depend on that (its start and transforms come from its own generator)."""
    torch.manual_seed(0)
    model = create_model("mlp").eval()
    for shape in ((1, 28, 28), (3, 64, 64)):  # pixel + shifts, and Fourier + standard transforms
        kwargs = dict(steps=6, frames=0, seed=4, input_shape=shape)
        net = model if shape[0] == 1 else nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 10))
        alone = activation_maximization(net, [3], **kwargs).images[0]
        among = activation_maximization(net, [1, 3, 5], **kwargs).images[1]
        again = activation_maximization(net, [3, 7], **kwargs).images[0]
        assert torch.allclose(alone, among, atol=1e-5) and torch.allclose(alone, again, atol=1e-5), shape
        other = activation_maximization(net, [3], **{**kwargs, "seed": 5}).images[0]
        assert (other - alone).abs().max() > 1e-3  # the seed still matters


def test_standard_transforms_are_exact_integer_shifts_without_scale_or_rotation():
    from kangae.probes import standard_transforms

    x = torch.arange(4 * 3 * 32 * 32, dtype=torch.float32).view(4, 3, 32, 32) / (4 * 3 * 32 * 32)
    out = standard_transforms(x, jitter=8, scale=0.0, rotate=0, generator=torch.Generator().manual_seed(2))
    padded = torch.nn.functional.pad(x, (8,) * 4, value=0.5)
    shifts = []
    for b in range(4):  # each image is its input moved by a whole number of px, grey outside
        found = [(dy, dx) for dy in range(-8, 9) for dx in range(-8, 9)
                 if torch.allclose(out[b], padded[b, :, 8 + dy : 40 + dy, 8 + dx : 40 + dx], atol=1e-5)]
        assert len(found) == 1, b
        shifts.append(found[0])
    assert len(set(shifts)) > 1  # each image draws its own
    same = standard_transforms(x, 1, 0.0, 0, torch.Generator())
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)  # jitter 1: no move at all


def test_standard_transforms_scale_and_rotate_about_the_centre():
    from kangae.probes import standard_transforms

    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    blob = (((yy - 31.5) ** 2 + (xx - 31.5) ** 2) < 10**2).float().expand(16, 3, 64, 64) * 0.5 + 0.5
    out = standard_transforms(blob, 1, 0.1, 10, torch.Generator().manual_seed(0)) - 0.5
    mass = out.sum((1, 2, 3))
    assert ((mass / (blob - 0.5).sum((1, 2, 3)) - 1).abs() < 0.25).all()  # scaled by 0.9-1.1, squared
    assert len(set(mass.round(decimals=1).tolist())) > 2  # different scales per image
    cy = (out[:, 0] * yy).sum((1, 2)) / out[:, 0].sum((1, 2))
    cx = (out[:, 0] * xx).sum((1, 2)) / out[:, 0].sum((1, 2))
    assert (cy - 31.5).abs().max() < 0.5 and (cx - 31.5).abs().max() < 0.5


def _rgb_linear(side: int = 64):
    """Class k scores <W_k, x>: W_k likes colour k in a disc and dislikes it elsewhere, so its
    best input in [0, 1] is W_k > 0 (the template's positive part)."""
    yy, xx = torch.meshgrid(torch.arange(float(side)), torch.arange(float(side)), indexing="ij")
    colours = torch.tensor([[1, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1]]).float()
    w = torch.zeros(4, 3, side, side)
    for k, (cy, cx) in enumerate([(0.3, 0.3), (0.3, 0.7), (0.7, 0.3), (0.7, 0.7)]):
        disc = ((yy - cy * side) ** 2 + (xx - cx * side) ** 2 < (side / 5) ** 2).float() * 2 - 1
        w[k] = colours[k][:, None, None] * disc
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * side * side, 4, bias=False))
    model[1].weight.data = w.flatten(1) / w[0].numel()
    return model, w


def test_rgb_activation_maximization_finds_the_weight_template():
    model, w = _rgb_linear()
    assert activation_maximization(model, [0], steps=1, frames=0).images.shape == (1, 3, 64, 64)
    plain = activation_maximization(model, "all", steps=150, lr=0.1, param="pixel", frames=0,
                                    regularizers=Regularizers(transforms="none"))
    assert torch.equal(plain.images > 0.5, w > 0)
    lucid = activation_maximization(model, "all", steps=150, lr=0.1, frames=0)  # the 64 px defaults
    assert lucid.metrics["param"] == "fourier" and lucid.metrics["regularizers"]["transforms"] == "standard"
    agree = ((lucid.images > 0.5) == (w > 0)).float().mean((1, 2, 3))
    assert (agree > 0.65).all() and agree.mean() > 0.8


def test_rgb_conv_channels_at_64_px_stop_the_forward_at_the_layer():
    torch.manual_seed(0)
    model = create_model("vgg16", widths=(4, 8, 8, 8, 8), hidden=8, image_size=64).eval()
    calls = []
    model.classifier.register_forward_pre_hook(lambda m, i: calls.append(1))
    r = activation_maximization(model, [0, 1, 2], objective="channel", layer="features.3", steps=30,
                                frames=3)
    assert r.images.shape == (3, 3, 64, 64) and r.frames.shape == (3, 3, 3, 64, 64)
    assert not calls  # nothing after features.3 ran
    curve = torch.tensor(r.metrics["objective_curve"])
    assert (curve[:, -1] > curve[:, 0]).all()
    assert _hooks(model) == 0


def test_filter_grid_makes_post_004s_4x4_grid_of_a_layer():
    from kangae.probes import filter_grid

    torch.manual_seed(0)
    model = create_model("vgg-small", widths=(20, 8, 8)).eval()
    r = filter_grid(model, "block1.relu2", steps=20)
    assert r.images.shape == (16, 1, 28, 28) and r.metrics["objective"] == "channel"
    assert r.target.tolist() == sorted(r.target.tolist()) and len(set(r.target.tolist())) == 16
    assert r.target.max() < 20 and r.target.tolist() != list(range(16))  # drawn, as the post does
    assert torch.equal(filter_grid(model, "block1.relu2", steps=20).images, r.images)
    picture = r.picture()
    assert picture.width == picture.height  # 4 x 4
    ones = filter_grid(model, "block1.relu2", target=[3, 5], steps=5)
    assert ones.target.tolist() == [3, 5]


class _Viewing(nn.Module):
    """A conv net that flattens with ``view``, which refuses channels-last strides."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 16 * 16, 5)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.fc(h.view(len(h), -1))


def test_the_fast_layout_gives_the_same_prototypes_and_steps_aside_for_a_view():
    import kangae.probes.actmax as actmax

    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16 * 16, 5))
    kwargs = dict(steps=5, input_shape=(3, 16, 16), seed=1)
    fast = activation_maximization(conv, [0, 3], **kwargs)
    with pytest.MonkeyPatch.context() as mp:  # the plain layout, as the model would be called
        mp.setattr(actmax._FastLayout, "__call__", lambda self, x: x)
        plain = activation_maximization(conv, [0, 3], **kwargs)
    torch.testing.assert_close(fast.images, plain.images, atol=1e-5, rtol=0)
    layout = actmax._FastLayout(conv)
    assert layout(torch.rand(2, 3, 16, 16)).is_contiguous(memory_format=torch.channels_last)
    viewing = _Viewing()
    layout = actmax._FastLayout(viewing)
    x = torch.rand(2, 3, 16, 16)
    assert layout(x) is x and layout.ok is False  # found out once, on one image
    res = activation_maximization(viewing, [1], **kwargs)
    assert res.images.shape == (1, 3, 16, 16) and torch.isfinite(res.images).all()
