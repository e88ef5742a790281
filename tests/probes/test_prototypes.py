import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kangae.models import Normalize, create_model
from kangae.probes import search_prototypes
from kangae.probes.prototypes import reference_search
from tests.probes.models import random_linear


def _linear_model(seed=0):
    torch.manual_seed(seed)
    return random_linear()


def _small_mlp(seed=0):
    torch.manual_seed(seed)
    return create_model("mlp", hidden=48).eval()


def test_greedy_finds_the_exact_optimum_of_a_linear_logit():
    model = _linear_model()
    result = search_prototypes(model, list(range(10)))
    w = model.logits.weight.detach() / model.normalize.std.item()  # pixel-space weights
    expected = (w > 0).float().view(10, 1, 28, 28)
    assert torch.equal(result.images, expected)
    assert result.metrics["sweeps"] == [2] * 10  # one sweep to set, one to confirm
    assert result.metrics["incremental"]


@pytest.mark.parametrize("method,kw", [
    ("greedy", {}),
    ("greedy", {"levels": (0.0, 0.5, 1.0)}),
    ("greedy", {"init": "random", "restarts": 2}),
    ("greedy", {"score": "prob"}),
    ("mc", {"steps": 400, "restarts": 2}),
])
def test_batched_search_gives_the_same_images_as_the_sequential_reference(method, kw):
    model = _small_mlp()
    targets = [0, 3, 7]
    fast = search_prototypes(model, targets, method=method, max_sweeps=4, **kw)
    ref = reference_search(model, targets, method=method, max_sweeps=4, **kw)
    restarts = kw.get("restarts", 1)
    best = torch.tensor(fast.metrics["restart_scores"]).argmax(1)
    ref_best = ref.view(len(targets), restarts, *ref.shape[1:])[torch.arange(len(targets)), best]
    assert torch.equal(fast.images, ref_best)
    assert sum(fast.metrics["changes"]) > 0


def test_same_images_without_the_incremental_path_and_for_convolutions():
    model = _small_mlp()
    plain = search_prototypes(model, [2, 5], incremental=False, max_sweeps=3)
    assert not plain.metrics["incremental"]
    assert torch.equal(plain.images, reference_search(model, [2, 5], max_sweeps=3))
    torch.manual_seed(1)
    conv = create_model("cnn", channels=4, hidden=16).eval()
    fast = search_prototypes(conv, [1, 8], max_sweeps=2)
    assert fast.metrics["incremental"]  # the first conv, nested in block1, is found
    assert torch.equal(fast.images, reference_search(conv, [1, 8], max_sweeps=2))


def test_black_box_search_works_on_a_non_sequential_model():
    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = _small_mlp()

        def forward(self, x):
            return self.inner(x) * 2.0

    model = Wrapped().eval()
    fast = search_prototypes(model, [4], max_sweeps=2)
    assert not fast.metrics["incremental"]
    assert torch.equal(fast.images, reference_search(model, [4], max_sweeps=2))


def test_block_mode_ends_at_a_local_optimum():
    model = _small_mlp()
    result = search_prototypes(model, [6], method="block", steps=5000)
    x = result.images.view(1, -1).double()
    net = model.double()
    with torch.no_grad():
        base = net(x.view(1, 1, 28, 28))[0, 6]
        flips = x.repeat(784, 1)
        flips[torch.arange(784), torch.arange(784)] = 1 - flips[torch.arange(784), torch.arange(784)]
        scores = net(flips.view(-1, 1, 28, 28))[:, 6]
    assert (scores <= base + 1e-9 * abs(base)).all(), "no single flip may improve the result"
    linear = _linear_model()
    assert torch.equal(search_prototypes(linear, [3], method="block", steps=5000).images,
                       search_prototypes(linear, [3]).images)


def test_frames_replay_the_search_and_the_callers_model_is_untouched():
    model = _small_mlp().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = search_prototypes(model, [1, 2], frames=12)
    assert result.frames.shape == (12, 2, 1, 28, 28)
    assert result.frames[0].sum() == 0  # starts blank
    assert torch.equal(result.frames[-1], result.images)
    assert model.training and next(model.parameters()).dtype == torch.float32
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_arguments():
    model = _linear_model()
    with pytest.raises(ValueError, match="target must lie in 0..9"):
        search_prototypes(model, [10])
    with pytest.raises(ValueError, match="unknown search method"):
        search_prototypes(model, [1], method="anneal")
    with pytest.raises(ValueError, match="unknown score"):
        search_prototypes(model, [1], score="margin")


def test_normalize_is_folded_into_the_affine_prefix():
    model = nn.Sequential(Normalize((0.5,), (0.25,)), nn.Flatten(), nn.Linear(784, 10)).eval()
    result = search_prototypes(model, [0])
    assert result.metrics["incremental"]
    assert torch.equal(result.images.flatten(), (model[2].weight[0] > 0).float())


def test_block_mode_frames_end_at_the_result():
    result = search_prototypes(_small_mlp(), [2], method="block", steps=300, frames=6)
    assert torch.equal(result.frames[-1], result.images)
    with pytest.raises(ValueError, match="not 'block'"):
        reference_search(_small_mlp(), [2], method="block")


@pytest.mark.parametrize("incremental", [True, False])
def test_window_size_never_changes_the_result(incremental):
    # each window size makes different predictions and verifies them at different places;
    # the accepted changes must still be the sequential ones (non-dyadic levels: the prefix
    # sums are inexact, the tolerance must absorb it)
    model = _small_mlp(3)
    kw = {"levels": (0.0, 0.3, 0.7, 1.0), "init": "random", "max_sweeps": 2, "incremental": incremental}
    ref = reference_search(model, [1, 6], levels=kw["levels"], init="random", max_sweeps=2)
    for window in (1, 5, 200):
        fast = search_prototypes(model, [1, 6], max_window=window, **kw)
        assert torch.equal(fast.images, ref), window
        assert sum(fast.metrics["changes"]) > 0


@pytest.mark.parametrize("incremental", [True, False])
def test_mc_revisits_a_pixel_within_a_window(incremental):
    # 300 random proposals over 16 pixels: windows hold the same pixel several times, so
    # the prefix (images or first-layer sums) must take each pixel's latest predicted value
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    torch.manual_seed(0)
    for p in model.parameters():
        nn.init.normal_(p)
    kw = {"method": "mc", "steps": 300, "restarts": 3, "levels": (0.0, 0.5, 1.0), "input_shape": (1, 4, 4)}
    fast = search_prototypes(model, [0, 2], max_window=32, incremental=incremental, **kw)
    assert fast.metrics["incremental"] == incremental
    ref = reference_search(model, [0, 2], **kw).view(2, 3, 1, 4, 4)
    best = torch.tensor(fast.metrics["restart_scores"]).argmax(1)
    assert torch.equal(fast.images, ref[torch.arange(2), best])
    assert min(fast.metrics["changes"]) >= 3


def test_first_layer_columns_read_off_the_weights_match_an_identity_batch():
    from kangae.probes.prototypes import _affine_prefix, _linear_columns

    net = _small_mlp().double()
    prefix, _ = _affine_prefix(net)
    with torch.no_grad():
        eye = torch.eye(784, dtype=torch.float64).view(-1, 1, 28, 28)
        expected = prefix(eye) - prefix(torch.zeros(1, 1, 28, 28, dtype=torch.float64))
    assert torch.allclose(_linear_columns(prefix, (1, 28, 28)), expected, rtol=0, atol=1e-12)
    conv = create_model("cnn", channels=4, hidden=16).double()
    assert _linear_columns(_affine_prefix(conv)[0], (1, 28, 28)) is None


def _rgb_linear(side=32, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * side * side, 4)).eval()
    model.input_shape = (3, side, side)
    return model


def test_rgb_greedy_finds_the_weight_template_channel_by_channel_and_patch_by_patch():
    model = _rgb_linear()
    w = model[1].weight.detach().view(4, 3, 32, 32)
    pixels = search_prototypes(model, "all", frames=0)
    assert pixels.metrics["patch"] == 1 and pixels.metrics["units"] == 3 * 32 * 32
    assert torch.equal(pixels.images, (w > 0).float())
    patches = search_prototypes(model, "all", patch=8, frames=3)
    assert patches.metrics["units"] == 3 * 16
    # the best image constant on each 8x8 patch of each channel: on where the patch's weights sum > 0
    on = F.avg_pool2d(w, 8) > 0
    assert torch.equal(patches.images, on.float().repeat_interleave(8, 2).repeat_interleave(8, 3))
    assert patches.frames.shape == (3, 4, 3, 32, 32) and torch.equal(patches.frames[-1], patches.images)


@pytest.mark.parametrize("kw", [
    {"patch": 4},
    {"patch": 4, "init": "random", "levels": (0.0, 0.5, 1.0), "incremental": False},
    {"patch": 5, "method": "mc", "steps": 300, "restarts": 2},
    {"patch": 4, "method": "mc", "steps": 200, "init": "given"},
])
def test_patch_search_gives_the_same_images_as_the_sequential_reference(kw):
    torch.manual_seed(0)
    model = create_model("mlp", in_channels=3, image_size=32, hidden=16).eval()
    if kw.get("init") == "given":
        kw = {**kw, "init": torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))}
    fast = search_prototypes(model, [0, 2], max_sweeps=3, frames=0, **kw)
    ref = reference_search(model, [0, 2], max_sweeps=3, **{k: v for k, v in kw.items() if k != "incremental"})
    restarts = kw.get("restarts", 1)
    best = torch.tensor(fast.metrics["restart_scores"]).argmax(1)
    ref = ref.view(2, restarts, *ref.shape[1:])[torch.arange(2), best]
    assert torch.equal(fast.images, ref) and sum(fast.metrics["changes"]) > 0
    assert fast.metrics["incremental"] == kw.get("incremental", True)


def test_patches_of_a_conv_net_and_segments_of_a_label_map_match_the_reference():
    torch.manual_seed(1)
    conv = create_model("cnn", in_channels=3, image_size=16, channels=4, hidden=8).eval()
    fast = search_prototypes(conv, [1, 3], patch=4, max_sweeps=2, frames=0)
    assert fast.metrics["incremental"]  # the first conv's columns, one per patch of a channel
    assert torch.equal(fast.images, reference_search(conv, [1, 3], patch=4, max_sweeps=2))
    labels = (torch.arange(16)[:, None] // 3 + torch.arange(16)[None, :] // 5 * 7) % 9 + 100  # 9 odd segments
    seg = search_prototypes(conv, [1], patch=labels, max_sweeps=2, frames=0)
    assert seg.metrics["units"] == 27 and seg.metrics["patch"] is None
    assert torch.equal(seg.images, reference_search(conv, [1], patch=labels, max_sweeps=2))
    for value in torch.unique(labels):  # constant on each segment of each channel
        inside = seg.images[0][:, labels == value]
        assert (inside == inside[:, :1]).all()


def test_block_mode_over_patches_ends_at_a_local_optimum():
    model = _rgb_linear(16, seed=2)
    result = search_prototypes(model, [1], method="block", patch=4, steps=500, frames=0)
    assert torch.equal(result.images, search_prototypes(model, [1], patch=4, frames=0).images)


def test_large_images_are_searched_in_patches_and_the_cost_is_said_first():
    from kangae.probes.prototypes import auto_patch, estimate_search

    assert auto_patch((1, 28, 28)) == 1 and auto_patch((3, 64, 64)) == 1 and auto_patch((3, 224, 224)) == 8
    mlp = create_model("mlp", hidden=16).eval()
    cost = estimate_search(mlp, "all")
    assert cost.trials == (2 * 784 * 10, 10 * 784 * 10) and cost.incremental
    assert cost.line().startswith("search cost: 784 pixel values, 15,680-78,400 forward passes at ")
    vgg = create_model("vgg16", widths=(4, 4, 4, 4, 4), hidden=8, num_classes=20).eval()
    cost = estimate_search(vgg, list(range(8)), method="mc", steps=100, restarts=2)
    assert cost.units == 3 * 28 * 28 and cost.trials == (1600, 1600) and not cost.incremental
    assert "2,352 units (3 channels x 784 patches of 8x8 px), 1,600 forward passes" in cost.line()
    with pytest.raises(ValueError, match="patch labels are \\(4, 4\\)"):
        search_prototypes(mlp, [0], patch=torch.zeros(4, 4))
