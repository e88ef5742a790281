import torch

from kangae.probes.faithfulness import (
    deletion_insertion,
    pointing_hits,
    randomized_copy,
    sanity_check,
    spearman,
)

from .explain_models import REGION, region_images, region_model


def test_deletion_and_insertion_reward_the_true_ranking():
    model, x = region_model(), region_images(2)
    truth = torch.zeros(2, 1, 28, 28)
    truth[:, 0][:, REGION[0], REGION[1]] = 1.0
    truth = truth * x  # the inked pixels of the region first
    good = deletion_insertion(model, x, truth, torch.ones(2, dtype=torch.long))
    bad = deletion_insertion(model, x, -truth, torch.ones(2, dtype=torch.long))
    assert (good["deletion"] < 0.1).all() and (bad["deletion"] > 0.5).all()
    assert (good["insertion"] > 0.9).all() and (bad["insertion"] < 0.5).all()
    curve = good["deletion_curve"]
    assert curve.shape == (2, 29) and torch.allclose(curve[:, 0], torch.ones(2), atol=1e-3)


def test_auc_of_a_constant_curve_is_that_constant():
    model = region_model(weight=0.0, bias0=0.0)  # p = 0.5 whatever the pixels
    x = region_images(1)
    r = deletion_insertion(model, x, torch.rand(1, 1, 28, 28), torch.ones(1, dtype=torch.long))
    assert abs(float(r["deletion"]) - 0.5) < 1e-6 and abs(float(r["insertion"]) - 0.5) < 1e-6


def test_pointing_hits_use_the_box_and_tolerance():
    a = torch.zeros(3, 1, 10, 10)
    a[0, 0, 2, 3] = 1  # inside (left 3, top 2)
    a[1, 0, 2, 6] = 1  # one pixel right of the box: a hit only with tolerance
    a[2, 0, 9, 9] = 1  # far away
    boxes = torch.tensor([[3, 2, 6, 5]] * 3)
    assert pointing_hits(a, boxes, tolerance=0).tolist() == [True, False, False]
    assert pointing_hits(a, boxes, tolerance=1).tolist() == [True, True, False]


def test_spearman_and_randomization():
    a = torch.arange(10.0).view(1, 10)
    assert torch.allclose(spearman(a, a), torch.ones(1, dtype=torch.float64))
    assert torch.allclose(spearman(a, -a), -torch.ones(1, dtype=torch.float64))
    ties = torch.tensor([[0.0, 0, 0, 0, 1]])  # ties share a rank: no spurious agreement
    assert abs(float(spearman(ties, torch.tensor([[0.0, 0, 0, 0, 1]]))) - 1.0) < 1e-9
    model = region_model()
    rand = randomized_copy(model)
    assert not torch.equal(rand[1].weight, model[1].weight)
    assert torch.equal(region_model()[1].weight, model[1].weight)


def test_sanity_check_tells_a_model_dependent_method_from_an_input_detector():
    model, x = region_model(), region_images(2)
    x = x + 0.05 * torch.rand_like(x)
    t = torch.ones(2, dtype=torch.long)

    def grad(m, im, tg):
        im = im.clone().requires_grad_(True)
        m(im).gather(1, tg[:, None]).sum().backward()
        return im.grad

    def edges(m, im, tg):  # ignores the model entirely
        return im

    assert (sanity_check(grad, model, x, t) < 0.5).all()
    assert (sanity_check(edges, model, x, t) > 0.99).all()
