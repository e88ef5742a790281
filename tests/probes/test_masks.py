import pytest
import torch
import torch.nn.functional as F

from kangae.data import random_shift
from kangae.probes.masks import (
    _draw_offsets,
    _index_of,
    _shift,
    _top_weights,
    extremal_perturbation,
    gaussian_blur,
    meaningful_perturbation,
    perturbed_copy,
    smooth_mask,
    total_variation,
)

from .explain_models import in_region_share, region_images, region_model


def test_deletion_game_deletes_the_evidence_and_only_it():
    model, x = region_model(), region_images(3)
    e = meaningful_perturbation(model, x, steps=150)
    assert (e.target == 1).all() and (e.prob > 0.99).all()
    assert (e.prob_after < 0.05).all()
    assert (in_region_share(e.attribution) > 0.9).all()  # the decoy block is never blamed
    assert (e.area < 0.1).all()
    assert "deleting" in e.summary(0) and e.summary(0).startswith("1: p=100.0% -> ")


def test_preservation_game_keeps_the_evidence():
    model, x = region_model(bias0=4.0), region_images(2)
    e = meaningful_perturbation(model, x, game="preservation", steps=150)
    assert (e.prob_after > 0.9).all()
    assert (in_region_share(e.attribution) > 0.9).all()
    assert "keeping only" in e.summary(0)


def test_a_preservation_mask_saves_though_its_attribution_is_the_mask(tmp_path):
    """The kept part is the mask itself, one tensor under two names: saving must still write
    both (safetensors refuses tensors that share memory)."""
    from safetensors.torch import load_file

    model, x = region_model(bias0=4.0), region_images(2)
    e = meaningful_perturbation(model, x, game="preservation", steps=3)
    e.inputs = x
    e.save(tmp_path)
    saved = load_file(str(tmp_path / "tensors.safetensors"))
    assert torch.equal(saved["mask"], e.mask) and torch.equal(saved["attribution"], e.attribution)


@pytest.mark.parametrize("chunk", [None, 2])  # 2: groups of 2 images, then 1
def test_batched_masks_equal_one_at_a_time(chunk, monkeypatch):
    model, x = region_model(), region_images(3)
    x[1, 0, 8:12, 8:12] = 0.6  # images differ so the batch is not trivially the same
    whole = meaningful_perturbation(model, x, steps=20, perturbation="noise")  # jitter 1
    if chunk is not None:
        import kangae.probes.masks as masks

        monkeypatch.setattr(masks, "chunk_size", lambda *args: chunk)
    grouped = meaningful_perturbation(model, x, steps=20, perturbation="noise")
    assert torch.allclose(grouped.mask, whole.mask, atol=1e-6)  # groups draw as one batch
    together = meaningful_perturbation(model, x, steps=40, jitter=0)
    assert together.loss_curve.shape == (40, 3)
    for i in range(3):
        alone = meaningful_perturbation(model, x[i : i + 1], steps=40, jitter=0)
        assert torch.allclose(alone.mask[0], together.mask[i], atol=1e-5)
        assert torch.allclose(alone.loss_curve[:, 0], together.loss_curve[:, i], atol=1e-4)


def test_extremal_masks_have_the_asked_areas_and_find_the_evidence():
    model, x = region_model(), region_images(2)
    e = extremal_perturbation(model, x, areas=(0.02, 0.05, 0.1), steps=200)
    assert e.mask.shape == (2, 3, 1, 28, 28) and e.prob_after.shape == (2, 3)
    assert torch.allclose(e.area, torch.tensor([0.02, 0.05, 0.1]).expand(2, 3), atol=0.02)
    assert (in_region_share(e.mask[:, 0]) > 0.8).all()
    assert (e.prob_after[:, 0] > 0.9).all()  # 2% of the pixels keep the decision


@pytest.mark.parametrize("chunk", [None, 4])  # 4: groups of 2 images (2 areas each), then 1
def test_batched_extremal_masks_equal_one_at_a_time(chunk, monkeypatch):
    model, x = region_model(), region_images(3)
    x[1, 0, 8:12, 8:12] = 0.6
    whole = extremal_perturbation(model, x, areas=(0.02, 0.1), steps=20, perturbation="noise")
    if chunk is not None:
        import kangae.probes.masks as masks

        monkeypatch.setattr(masks, "chunk_size", lambda *args: chunk)
    grouped = extremal_perturbation(model, x, areas=(0.02, 0.1), steps=20, perturbation="noise")
    assert torch.allclose(grouped.mask, whole.mask, atol=1e-6)  # jitter and noise as one batch
    model, x = region_model(), region_images(3)
    x[1, 0, 8:12, 8:12] = 0.6
    x[2, 0, 5:9, 10:14] = 1.0
    together = extremal_perturbation(model, x, areas=(0.02, 0.1), steps=30, jitter=0)
    for i in range(3):
        alone = extremal_perturbation(model, x[i : i + 1], areas=(0.02, 0.1), steps=30, jitter=0)
        assert torch.allclose(alone.mask[0], together.mask[i], atol=1e-5)
        assert torch.allclose(alone.loss_curve[:, 0], together.loss_curve[:, i], atol=1e-4)


def test_smooth_mask_is_upsampling_then_blur():
    p = torch.rand(3, 1, 7, 10)
    for sigma in (0.0, 0.5, 2.0):
        conv = gaussian_blur(F.interpolate(p, size=(28, 20), mode="bilinear", align_corners=False), sigma)
        assert torch.allclose(smooth_mask(p, (28, 20), sigma), conv.clamp(0, 1), atol=1e-6)


def test_shift_by_gather_is_random_shift():
    x = torch.rand(6, 2, 9, 7)
    index = _index_of(_draw_offsets(1, 6, 2, torch.Generator().manual_seed(5))[0], 2, 9, 7, x.device)
    assert torch.equal(_shift(x, index, 2), random_shift(x, 2, torch.Generator().manual_seed(5)))


def test_top_weights_sum_the_k_largest_and_share_ties():
    m = torch.rand(4, 2, 50)
    m[1, 1, :30] = 0.9  # 30 ties at the 10th largest value
    w = _top_weights(m.view(8, 50), (5, 10)).view(4, 2, 50)
    top = torch.stack([m[:, 0].sort(1).values[:, -5:].sum(1), m[:, 1].sort(1).values[:, -10:].sum(1)], 1)
    assert torch.allclose((w * m).sum(2), top, atol=1e-5)
    assert torch.allclose(w.sum(2), torch.tensor([5.0, 10.0]).expand(4, 2))
    tie = w[1, 1, :30]
    assert torch.allclose(tie, tie[0].expand(30)) and 0 < tie[0] < 1  # shared evenly


def test_model_is_left_as_it_was():
    model = region_model()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    extremal_perturbation(model, region_images(1), areas=(0.1,), steps=3)
    meaningful_perturbation(model, region_images(1), steps=3)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_building_blocks():
    x = torch.rand(2, 1, 10, 10)
    assert torch.allclose(gaussian_blur(x, 1.0).mean(), x.mean(), atol=0.05)
    assert torch.equal(gaussian_blur(x, 0), x)
    assert torch.equal(perturbed_copy(x, "constant", 0.25), torch.full_like(x, 0.25))
    flat = torch.ones(1, 1, 5, 5)
    assert total_variation(flat).item() == 0
    step = torch.zeros(1, 1, 4, 4)
    step[..., 2:] = 1  # one jump of 1 in each of 4 rows, over 4 x 3 horizontal pairs
    assert total_variation(step).item() == pytest.approx(4 / 12)
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturbed_copy(x, "fog")
    with pytest.raises(ValueError, match="areas"):
        extremal_perturbation(region_model(), region_images(1), areas=(1.5,))


def test_a_mask_that_cannot_move_says_why():
    """p(class 1) on a blank image is 0.03%, already under the deletion game's 1% line."""
    from kangae.probes.attribution import explain

    model = region_model()
    x = torch.cat([region_images(1), torch.zeros(1, 1, 28, 28)])
    e = explain(model, x, target=1, method="mask", steps=20)
    assert e.attribution[1].abs().max() == 0 and e.attribution[0].abs().max() > 0
    assert e.warning(0) is None
    assert "already under the deletion game's line" in e.warning(1)
    assert [w["image"] for w in e.metrics["warnings"]] == [1]
    e = explain(model, x, target=0, method="saliency")  # logit 0 is a constant: no gradient
    assert "constant (0 everywhere)" in e.warning(0) and e.warning(1)
