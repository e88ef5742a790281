import torch

from kangae.probes.attribution import explain
from kangae.probes.rise import rise_masks, rise_reference, rise_saliency

from .explain_models import REGION, region_images, region_model


def test_rise_peaks_on_the_pixels_the_logit_sums():
    """Class 1's logit is the ink inside REGION: RISE's saliency there beats the decoy's."""
    model, x = region_model(), region_images(2)
    e = explain(model, x, method="rise", n_masks=600, seed=3)
    a = e.attribution[:, 0]
    ink, decoy = a[:, 8:12, 8:12].mean((1, 2)), a[:, 20:24, 20:24].mean((1, 2))
    assert (ink > decoy + 0.1).all()
    peak = a.flatten(1).argmax(1)
    rows, cols = peak // 28, peak % 28
    assert ((rows >= REGION[0].start) & (rows < REGION[0].stop)
            & (cols >= REGION[1].start) & (cols < REGION[1].stop)).all()


def test_masks_are_fixed_by_the_seed_and_not_by_the_chunking():
    a, b = rise_masks(50, (28, 28), seed=1), rise_masks(50, (28, 28), seed=1)
    c = rise_masks(50, (28, 28), seed=2)
    assert torch.equal(a.grids, b.grids) and torch.equal(a.shifts, b.shifts)
    assert not torch.equal(a.grids, c.grids)
    assert torch.equal(a.masks(0, 50), torch.cat([a.masks(0, 7), a.masks(7, 50)]))
    m = a.masks(0, 50)
    assert m.shape == (50, 1, 28, 28) and 0 <= float(m.min()) and float(m.max()) <= 1
    model, x = region_model(), region_images(2)
    rng = torch.get_rng_state()
    one = explain(model, x, method="rise", n_masks=64, seed=1, batch_size=5)
    two = explain(model, x, method="rise", n_masks=64, seed=1)
    assert torch.allclose(one.attribution, two.attribution, atol=1e-6)
    assert torch.equal(torch.get_rng_state(), rng)


def test_batched_rise_equals_one_mask_per_forward():
    model, x = region_model(), region_images(2) * torch.rand(2, 1, 28, 28)
    t = torch.tensor([1, 0])
    masks = rise_masks(40, (28, 28), cells=5, keep=0.4, seed=0)
    fast = rise_saliency(model, x, t, masks, batch_size=16)
    assert torch.allclose(fast, rise_reference(model, x, t, masks), atol=1e-6)
