"""The scoring copy behind deletion, insertion, ROAD and RISE: the same logits as the model
(its batch norms folded, ReLU after max-pool, channels_last), and each metric's batched
numbers equal to a sequential oracle that scores one image and one step per forward pass."""

import torch
import torch.nn.functional as F
from torch import nn

from kangae.models import create_model
from kangae.probes._inference import FlatLinear, PoolReLU, Scorer, scoring_chunk, scoring_copy
from kangae.probes.faithfulness import _ranks, deletion_insertion, impute_reference, road
from kangae.probes.masks import gaussian_blur
from kangae.probes.rise import rise_masks, rise_reference, rise_saliency


def bn_cnn() -> nn.Module:
    """fast-cnn with random weights and batch-norm statistics far from the identity."""
    torch.manual_seed(0)
    model = create_model("fast-cnn")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.2, 3.0)
                m.weight.normal_(0, 1.0)  # negative scales too: no shortcut through max-pool
                m.bias.normal_(0, 0.3)
    return model.eval()


class Viewing(nn.Module):
    """Not a Sequential, and ``.view`` fails on a channels_last activation: the scorer must
    fall back to the plain copy and still give the model's numbers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 28 * 28, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).relu().view(len(x), -1))


def images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_scoring_copy_folds_and_reorders_yet_gives_the_same_logits():
    model = bn_cnn().train()  # the caller's mode is left as it was
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = images(6)
    fast = scoring_copy(model, x[:4])
    kinds = [type(m) for m in fast.modules()]
    assert nn.BatchNorm2d not in kinds  # folded into the convs
    # each conv's ReLU and 2 x 2 max-pool are one PoolReLU (the pool first); Flatten + Linear
    # read the channels-last activation as it lies
    assert [type(m).__name__ for m in fast] == ["Normalize", "Conv2d", "PoolReLU", "Conv2d", "PoolReLU",
                                                "FlatLinear", "ReLU", "Linear"]
    assert all(m.relu for m in fast if isinstance(m, PoolReLU))
    assert fast[1].weight.is_contiguous(memory_format=torch.channels_last)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        want = model.eval()(x)
        got = fast(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(got, want, atol=1e-5)


def test_the_scoring_copy_is_made_once_and_remade_when_the_weights_change():
    """Pieces of one probe call, and later calls, share one copy; an optimizer step, a loaded
    state dict or another kind of image makes a new one, whose logits are the model's."""
    model, x = bn_cnn(), images(6)
    fast = scoring_copy(model, x[:4])
    assert scoring_copy(model, x[4:]) is fast
    assert scoring_copy(model, x[:4].double()) is not fast  # another dtype: another copy
    fast = scoring_copy(model, x[:4])
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    F.cross_entropy(model(x), torch.arange(6)).backward()
    opt.step()
    model.eval()
    stepped = scoring_copy(model, x[:4])
    assert stepped is not fast
    with torch.no_grad():
        assert torch.allclose(stepped(x.contiguous(memory_format=torch.channels_last)), model(x), atol=1e-5)
    model.load_state_dict(bn_cnn().state_dict())
    assert scoring_copy(model, x[:4]) is not stepped
    with torch.inference_mode():  # weights without a version counter: a new copy each call
        frozen = bn_cnn()
    assert scoring_copy(frozen, x[:4]) is not scoring_copy(frozen, x[:4])


def test_pool_relu_and_flat_linear_equal_the_layers_they_replace_in_every_layout():
    torch.manual_seed(0)
    linear = nn.Linear(3 * 4 * 6, 5)
    flat = FlatLinear(linear)
    for shape in ((7, 3, 8, 12), (7, 3, 9, 13), (7, 1, 8, 12), (7, 3, 2, 2)):
        h = torch.randn(shape)
        for layout in (torch.contiguous_format, torch.channels_last):
            hl = h.contiguous(memory_format=layout)
            want = F.relu(F.max_pool2d(h, 2))
            assert torch.equal(PoolReLU(relu=True)(hl.clone()), want), (shape, layout)
            assert torch.equal(PoolReLU(relu=False)(hl.clone()), F.max_pool2d(h, 2))
    for shape in ((5, 3, 4, 6), (5, 72, 1, 1)):
        h = torch.randn(shape)
        lin = linear if shape[1] == 3 else nn.Linear(72, 5)
        for layout in (torch.contiguous_format, torch.channels_last):
            got = (flat if lin is linear else FlatLinear(lin))(h.contiguous(memory_format=layout))
            assert torch.allclose(got, lin(h.flatten(1)), atol=1e-6), (shape, layout)


def test_forward_passes_hold_more_images_with_more_threads():
    """The chunk keeps the largest activation (fast-cnn: 16 x 28 x 28 floats) near 8 MiB per
    torch thread: 128 images on one thread, 256 on two."""
    model, x = scoring_copy(bn_cnn(), images(4)), images(4)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert scoring_chunk(model, x, None) == 128
        torch.set_num_threads(2)
        assert scoring_chunk(model, x, None) == 256
        assert scoring_chunk(model, x, 10) == 10
    finally:
        torch.set_num_threads(threads)


def test_scorer_falls_back_for_a_model_it_cannot_rewrite():
    torch.manual_seed(0)
    model = Viewing().eval()
    x = images(5)
    score = Scorer(model, x, batch_size=2)
    assert not isinstance(score.model, nn.Sequential)
    t = torch.arange(5) % 10
    with torch.no_grad():
        want = F.softmax(model(x), 1)[torch.arange(5), t]
    assert torch.allclose(score(x, t), want, atol=1e-6)


@torch.no_grad()
def deletion_oracle(model, x, a, t, kind, baseline, steps):
    """One image and one step per forward pass."""
    n, c, h, w = x.shape
    base = torch.zeros_like(x) if baseline == "zero" else gaussian_blur(x, max(h, w) / 28 * 3)
    rank = _ranks(a.reshape(n, -1), 0)
    counts = torch.round(torch.linspace(0, h * w, steps + 1)).long().tolist()
    out = torch.empty(n, steps + 1)
    for i in range(n):
        for k, count in enumerate(counts):
            m = (rank[i] < count).float().view(1, 1, h, w)
            img = x[i] * (1 - m) + base[i] * m if kind == "deletion" else base[i] * (1 - m) + x[i] * m
            out[i, k] = F.softmax(model(img), 1)[0, t[i]]
    return out


def test_deletion_and_insertion_equal_one_step_per_forward():
    x = images(5)
    a = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0, 3, 5, 7, 9])
    for model in (bn_cnn(), Viewing().eval()):
        for baseline in ("zero", "blur"):
            r = deletion_insertion(model, x, a, t, steps=7, baseline=baseline, batch_size=3)
            for kind in ("deletion", "insertion"):
                want = deletion_oracle(model, x, a, t, kind, baseline, steps=7)
                assert torch.allclose(r[f"{kind}_curve"], want, atol=1e-5), (type(model), baseline, kind)


def test_steps_that_move_only_background_pixels_are_not_scored_again_and_change_nothing():
    g = torch.Generator().manual_seed(4)
    x = torch.zeros(4, 1, 28, 28)
    x[:, :, 8:20, 10:18] = torch.rand(4, 1, 12, 8, generator=g)  # ink on 96 of 784 pixels
    ink = (x > 0).float()
    # the ink ranks first, then the background: after 4 of 28 steps nothing changes any more
    a = ink * 10 + torch.rand(4, 1, 28, 28, generator=g)
    t = torch.tensor([1, 2, 3, 4])
    model = bn_cnn()
    r = deletion_insertion(model, x, a, t, steps=28, baseline="zero", batch_size=5)
    for kind in ("deletion", "insertion"):
        want = deletion_oracle(model, x, a, t, kind, "zero", steps=28)
        assert torch.allclose(r[f"{kind}_curve"], want, atol=1e-5), kind
    assert r["steps_scored"] <= 2 * 4 * 6  # step 0 and the 4-5 steps that hold ink, per image
    blurred = deletion_insertion(model, x, a, t, steps=28, baseline="blur")
    assert blurred["steps_scored"] > 2 * 4 * 20  # the blur moves background pixels too


def test_road_equals_one_imputation_and_forward_per_fraction():
    model, x = bn_cnn(), images(2)
    a = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([1, 4])
    fractions = (0.2, 0.5)
    r = road(model, x, a, t, fractions=fractions, noise=0.0)
    rank = _ranks(a.reshape(2, -1), 0)
    with torch.no_grad():
        for order in ("morf", "lerf"):
            ranked = rank if order == "morf" else 28 * 28 - 1 - rank
            for i in range(2):
                for k, f in enumerate(fractions):
                    removed = (ranked[i] < round(f * 784)).view(1, 28, 28)
                    img = impute_reference(x[i], removed).clamp(0, 1)
                    p = F.softmax(model(img[None]), 1)[0, t[i]]
                    assert abs(float(r[order][i, k]) - float(p)) < 1e-5


def test_rise_through_the_scoring_copy_equals_one_mask_per_forward():
    model, x = bn_cnn(), images(2)
    t = torch.tensor([2, 6])
    masks = rise_masks(30, (28, 28), cells=4, seed=5)
    fast = rise_saliency(model, x, t, masks, batch_size=7)
    assert torch.allclose(fast, rise_reference(model, x, t, masks), atol=1e-6)
