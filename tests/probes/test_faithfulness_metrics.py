"""Known answers for the faithfulness metrics: hand-computed values on a 4-pixel image, a
linear model whose exact attribution is w * x, and a model that ignores half the image."""

import math

import pytest
import torch

from kangae.probes.faithfulness import (
    cascading_randomization,
    centre_map,
    complexity,
    degenerate,
    deletion_insertion,
    difficult,
    impute,
    impute_reference,
    infidelity,
    map_similarity,
    max_sensitivity,
    pointing_hits,
    random_logit,
    road,
    sanity_check,
    sparseness,
    spearman,
    ssim,
)

from .explain_models import HalfBlind, linear_model

W4 = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]])  # (1, 2, 2): a 4-pixel image's weights
X4 = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64)  # (1, 1, 2, 2)
sig = lambda v: 1 / (1 + math.exp(-v))


def test_deletion_on_four_pixels_by_hand():
    x = torch.ones(1, 1, 2, 2)
    a = W4[None]  # the order 4, 3, 2, 1: pixels (0,0), (0,1), (1,0), (1,1)
    model = linear_model(W4)
    r = deletion_insertion(model, x, a, torch.tensor([1]), steps=4)
    # logit after deleting the top k pixels: 10, 6, 3, 1, 0
    curve = [sig(v) for v in (10, 6, 3, 1, 0)]
    expected = torch.tensor(curve, dtype=torch.float64)
    assert torch.allclose(r["deletion_curve"][0].double(), expected, atol=1e-6)
    auc = (sum(curve) - 0.5 * (curve[0] + curve[-1])) / 4
    assert abs(float(r["deletion"][0]) - auc) < 1e-6


@pytest.mark.parametrize("solver", ["cg", "direct"])
def test_road_imputation_on_four_pixels_by_hand(solver):
    removed = torch.tensor([[[[True, False], [False, False]]]])
    # (0,0) = (2/6 + 3/6 + 4/12) / (1/6 + 1/6 + 1/12) = 14/5
    assert abs(float(impute(X4, removed, solver=solver)[0, 0, 0, 0]) - 2.8) < 1e-9
    removed = torch.tensor([[[[True, True], [False, False]]]])
    # 5 u0 - 2 u1 = 10 and -2 u0 + 5 u1 = 11 (times 12): u0 = 72/21, u1 = 75/21
    out = impute(X4, removed, solver=solver)[0, 0]
    assert abs(float(out[0, 0]) - 72 / 21) < 1e-9 and abs(float(out[0, 1]) - 75 / 21) < 1e-9
    assert float(out[1, 0]) == 3.0 and float(out[1, 1]) == 4.0  # kept pixels untouched


@pytest.mark.parametrize("solver", ["cg", "direct"])
def test_batched_imputation_equals_the_sparse_direct_solve(solver):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 9, 7, generator=g)
    removed = torch.rand(3, 1, 9, 7, generator=g) < torch.tensor([0.2, 0.6, 0.9]).view(3, 1, 1, 1)
    fast = impute(x.double(), removed, solver=solver)
    for i in range(3):
        assert torch.allclose(fast[i], impute_reference(x[i].double(), removed[i]), atol=1e-6)
    noisy = impute(x, removed, noise=0.01, generator=torch.Generator().manual_seed(1), solver=solver)
    assert torch.equal(noisy[~removed.expand_as(x)], x[~removed.expand_as(x)])


def test_imputation_in_several_factorizations_and_of_a_blank_mask(monkeypatch):
    """Masks beyond one factorization's size limit go in further ones, with the same answer;
    a mask that removes everything has nothing to interpolate from and is filled with 0; above
    32 px ``auto`` is the direct solve, and conjugate gradients agree with it."""
    import kangae.probes.faithfulness as faithfulness

    g = torch.Generator().manual_seed(2)
    x = torch.rand(4, 3, 12, 10, generator=g).double()
    removed = torch.rand(4, 1, 12, 10, generator=g) < 0.7
    removed[2] = True
    one = impute(x, removed, solver="direct")
    monkeypatch.setattr(faithfulness, "_SOLVE_UNKNOWNS", 100)  # about one mask per solve
    torch.testing.assert_close(impute(x, removed, solver="direct"), one, atol=1e-12, rtol=0)
    assert torch.equal(one[2], torch.zeros(3, 12, 10))
    assert torch.equal(impute(x, removed, solver="cg")[2], one[2])
    torch.testing.assert_close(one[3], impute_reference(x[3], removed[3]), atol=1e-9, rtol=0)
    big = torch.rand(2, 3, 40, 36, generator=g).double()
    holes = torch.rand(2, 1, 40, 36, generator=g) < 0.5
    monkeypatch.setattr(faithfulness, "_solve_cg", None)  # auto must not take it at 40 px
    direct = impute(big, holes)
    monkeypatch.undo()
    torch.testing.assert_close(impute(big, holes, solver="cg"), direct, atol=1e-5, rtol=0)


def test_sparseness_and_complexity_on_four_pixels_by_hand():
    a = torch.tensor([[[[0.0, 0.0], [1.0, -3.0]]]])
    # Gini of sorted |a| = 0, 0, 1, 3: sum((2i - n - 1) a_i) / (n sum a) = (1 + 9) / 16
    assert abs(float(sparseness(a)[0]) - 0.625) < 1e-12
    assert abs(float(complexity(a)[0]) - -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))) < 1e-12
    flat = torch.ones(1, 1, 2, 2)
    assert math.isnan(float(sparseness(flat)[0])) and math.isnan(float(complexity(0 * flat)[0]))


def _linear_case(n: int = 6):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1, 28, 28, generator=g) * 0.3
    x = torch.rand(n, 1, 28, 28, generator=g)
    truth = w[None] * x
    return linear_model(w), x, truth, torch.rand(n, 1, 28, 28, generator=g)


def test_deletion_and_road_rank_the_exact_attribution_first():
    model, x, truth, noise = _linear_case()
    t = torch.ones(len(x), dtype=torch.long)
    dele = {k: deletion_insertion(model, x, a, t)["deletion"].mean() for k, a in
            (("truth", truth), ("negation", -truth), ("random", noise))}
    assert dele["truth"] < dele["random"] < dele["negation"]
    scores = {k: road(model, x, a, t, fractions=(0.1, 0.3, 0.5)) for k, a in
              (("truth", truth), ("negation", -truth), ("random", noise))}
    morf = {k: float(v["morf_mean"].mean()) for k, v in scores.items()}
    lerf = {k: float(v["lerf_mean"].mean()) for k, v in scores.items()}
    assert morf["truth"] < morf["random"] < morf["negation"]
    assert lerf["truth"] > lerf["random"] > lerf["negation"]


def test_infidelity_is_zero_for_the_exact_attribution_of_a_linear_model():
    model, x, truth, noise = _linear_case(4)
    t = torch.ones(4, dtype=torch.long)
    # f(x) - f(x - I) = w . I exactly, and the attribution w * x / x = w per unit of input
    exact = infidelity(model, x, truth / x, t)
    wrong = infidelity(model, x, noise, t)
    assert (exact.abs() < 1e-4 * wrong).all() and (wrong > 0.01).all(), (exact, wrong)


def test_max_sensitivity_of_an_input_independent_map_is_zero():
    model, x, truth, _ = _linear_case(3)
    t = torch.ones(3, dtype=torch.long)
    const_w = lambda m, im, tg: m[1].weight[1].view(1, 1, 28, 28).expand(len(im), -1, -1, -1)
    times_x = lambda m, im, tg: m[1].weight[1].view(1, 1, 28, 28) * im
    assert (max_sensitivity(const_w, model, x, t) < 1e-6).all()
    assert (max_sensitivity(times_x, model, x, t, radius=0.05) > 1e-3).all()


def _saliency(m, im, tg):
    im = im.clone().float().requires_grad_(True)
    m(im).gather(1, tg.view(-1, 1)).sum().backward()
    return im.grad.detach()


def test_cascade_changes_the_explanation_once_the_deciding_layer_is_randomized():
    model = HalfBlind()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    t = torch.ones(3, dtype=torch.long)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = cascading_randomization(_saliency, model, x, t, seed=0)
    assert res.layers == ["head", "decide"]  # top down
    # step 1 (head random): the map is still decide's left half, scaled: ranks unchanged
    assert torch.allclose(res.spearman[0], torch.ones(3, dtype=torch.float64), atol=1e-9)
    # step 2 (decide random, the full randomization): the map now covers the right half
    assert (res.spearman[1] < 0.5).all() and (res.ssim[1] < res.ssim[0]).all()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    full = sanity_check(_saliency, model, x, t, seed=0)
    assert torch.allclose(full, res.spearman[-1])  # the last step is today's full randomization


def test_a_cascade_summarizes_draws_and_saves_itself(tmp_path):
    import json

    from kangae.probes.faithfulness import CascadeResult

    rho = torch.tensor([[1.0, 0.8, float("nan")], [0.1, 0.3, 0.2]], dtype=torch.float64)
    res = CascadeResult(["head", "decide"], rho, rho / 2, torch.isnan(rho), {"method": "saliency"})
    s = res.summary()
    assert s["spearman"][0] == pytest.approx([0.9, 0.1])  # NaN left out: std 0.1414 / sqrt(2)
    assert s["spearman"][1][0] == pytest.approx(0.2) and s["degenerate"] == [1, 0]
    assert s["ssim"][0][0] == pytest.approx(0.45)
    assert res._repr_png_()[:4] == b"\x89PNG"
    res.save(tmp_path)
    names = sorted(f.name for f in tmp_path.iterdir())
    assert names == ["cascade.png", "metrics.json", "tensors.safetensors"]
    meta = json.loads((tmp_path / "metrics.json").read_text())
    assert meta["method"] == "saliency" and meta["layers"] == ["head", "decide"]


def test_degenerate_maps_are_nan_never_a_pass():
    a = torch.rand(3, 1, 6, 6)
    a[1] = 0.0
    a[2] = 0.5
    assert degenerate(a).tolist() == [False, True, True]
    rho = spearman(a, a)
    assert float(rho[0]) == pytest.approx(1.0) and torch.isnan(rho[1:]).all()
    model = linear_model(torch.ones(1, 6, 6))
    r = deletion_insertion(model, torch.rand(3, 1, 6, 6), a, torch.ones(3, dtype=torch.long), steps=4)
    assert not torch.isnan(r["deletion"][0]) and torch.isnan(r["deletion"][1:]).all()
    sim = map_similarity(a, a)
    assert torch.isnan(sim["ssim"][1:]).all() and float(sim["ssim"][0]) == pytest.approx(1.0)


def test_ssim_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 1, 20, 17, generator=g), torch.rand(2, 1, 20, 17, generator=g)
    ours = ssim(a.double(), b.double())
    for i in range(2):
        ref = metrics.structural_similarity(a[i, 0].double().numpy(), b[i, 0].double().numpy(),
                                            data_range=1.0)
        assert abs(float(ours[i]) - ref) < 1e-9


def test_random_logit_tells_a_class_blind_map_from_a_class_specific_one():
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(10, 784, generator=g))
    x = torch.rand(4, 1, 28, 28, generator=g)
    t = torch.zeros(4, dtype=torch.long)
    specific = random_logit(_saliency, model, x, t, 10)
    blind = random_logit(lambda m, im, tg: im, model, x, t, 10)  # edges: ignores the class
    assert (specific["other"] != t).all()
    assert (specific["ssim"] < 0.5).all()
    assert torch.allclose(blind["ssim"], torch.ones(4, dtype=torch.float64))


def test_pointing_centre_baseline_and_difficult_subset():
    images = torch.zeros(2, 1, 10, 10)
    boxes = torch.tensor([[3, 3, 7, 7], [0, 0, 2, 2]])
    images[1, 0, 2, 0] = 1.0  # clutter touching the second box (1 px below it)
    images[0, 0, 9, 9] = 1.0  # clutter far from the first box
    c = centre_map(2, (10, 10))
    assert pointing_hits(c, boxes).tolist() == [True, False]
    assert difficult(images, boxes, tolerance=1).tolist() == [False, True]
    assert difficult(images, boxes, tolerance=1, area=0.01).tolist() == [False, False]
