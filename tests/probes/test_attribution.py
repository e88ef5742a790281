import pytest
import torch
from torch import nn

from kangae.errors import KangaeError, UnknownNameError
from kangae.probes.attribution import METHODS, default_cam_layer, explain

from .explain_models import in_region_share, region_images, region_model


def _conv_region_model() -> nn.Module:
    """A conv net whose class-1 logit is the ink in REGION, through a conv feature map."""
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = 1.0  # identity
    head = region_model()
    return nn.Sequential(conv, nn.ReLU(), head)


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


def _ink_contrast(a: torch.Tensor) -> torch.Tensor:
    """Mean attribution on the class-1 ink minus that on the decoy ink, per image."""
    return a[:, 0, 8:12, 8:12].flatten(1).mean(1) - a[:, 0, 20:24, 20:24].flatten(1).mean(1)


# Grad-CAM (and guided Grad-CAM) average the gradient over the map, so on this model they
# light the decoy as much as the evidence (see the next test); random is the baseline; RISE
# has its own known-answer test (its map is a mean score, offset by the score of the decoy).
POINTING = [m for m in METHODS if m not in ("random", "gradcam", "guided-gradcam", "rise")]
FAST = {"mask": {"steps": 60}, "extremal": {"steps": 60}, "rise": {"n_masks": 500},
        "kernelshap": {"n_samples": 100}, "lime": {"n_samples": 100}}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_points_at_the_evidence_and_leaves_the_model_alone(method):
    model = _conv_region_model()
    model.train()
    model[0].weight.requires_grad_(False)  # a frozen layer must stay frozen
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = _hook_count(model)
    x = region_images(2)
    rng = torch.get_rng_state()
    e = explain(model, x, method=method, **FAST.get(method, {}))
    assert torch.equal(torch.get_rng_state(), rng), "the global RNG moved"
    assert e.attribution.shape == (2, 1, 28, 28) and e.method == method
    assert (e.target == 1).all() and (e.prob > 0.99).all()
    if method in POINTING:
        assert (_ink_contrast(e.attribution) > 0.5 * e.attribution.amax((1, 2, 3))).all(), method
    assert model.training and _hook_count(model) == hooks
    assert [p.requires_grad for p in model.parameters()] == [False, True, True]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(hasattr(m, "rule") for m in model.modules())  # LRP's rules stay on its copy


def test_gradcam_is_relu_of_mean_gradient_times_activation():
    """Grad-CAM weighs each channel by its spatially averaged gradient, so on this model it
    lights up the decoy as much as the evidence: a known blind spot, shown exactly."""
    model, x = _conv_region_model(), region_images(2)
    e = explain(model, x, method="gradcam", layer="1")
    alpha = 144 / 784  # mean of the class-1 weights over the 28 x 28 map
    assert torch.allclose(e.attribution, alpha * x, atol=1e-6)
    assert e.metrics["layer"] == "1"


def test_saliency_is_the_input_gradient_in_closed_form():
    model, x = region_model(), region_images(1)
    e = explain(model, x, target=0, method="saliency")  # logit 0 is a constant: no gradient
    assert e.attribution.abs().sum() == 0
    e = explain(model, x, target=1, method="inputxgrad")
    assert torch.equal(e.attribution, x * model[1].weight[1].view(1, 1, 28, 28))
    assert (in_region_share(e.attribution) == 1).all()


def test_targets_and_errors():
    model, x = region_model(), region_images(3)
    e = explain(model, x, target=[0, 1, 0], method="saliency")
    assert e.target.tolist() == [0, 1, 0]
    with pytest.raises(UnknownNameError, match="Did you mean 'saliency'"):
        explain(model, x, method="salency")
    with pytest.raises(KangaeError, match="0..1"):
        explain(model, x, target=5, method="saliency")
    with pytest.raises(KangaeError, match="no convolutional layer|has none"):
        explain(model, x, method="gradcam")


def test_gradcam_defaults_to_the_last_conv_block():
    from kangae.models.zoo import create_model

    assert default_cam_layer(create_model("fast-cnn"), (1, 28, 28)) == "block2"
    assert default_cam_layer(create_model("cnn"), (1, 28, 28)) == "block2"
