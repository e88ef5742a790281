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


def test_gradcam_on_a_layer_without_a_spatial_output_is_a_clear_error():
    from kangae.models.zoo import create_model

    model = create_model("fast-cnn").eval()
    last = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    with pytest.raises(KangaeError, match=rf"spatial .*'{last}' has no height and width"):
        explain(model, torch.rand(2, 1, 28, 28), method="gradcam", layer=last)


def _smoothgrad_oracle(model, x, t, seed, samples, sigma):
    """SmoothGrad one noisy image per backward pass, each image's noise from its own seed."""
    out = torch.zeros_like(x)
    for j in range(len(x)):
        noise = torch.randn((samples, *x.shape[1:]), generator=torch.Generator().manual_seed(seed + j))
        for s in range(samples):
            xi = (x[j] + sigma * noise[s]).unsqueeze(0).requires_grad_(True)
            (g,) = torch.autograd.grad(model(xi)[0, t[j]], xi)
            out[j] += g[0].abs() / samples
    return out


def test_smoothgrad_is_mean_absolute_gradient_under_per_image_noise_whatever_the_grouping():
    """Each image's noise comes from the seed plus its index, so batch size and pieces change
    nothing; on a linear model every noisy gradient is the weight, so the map is |w| exactly."""
    from kangae.utils.threads import set_workers

    model, x = _conv_region_model(), region_images(5)
    x[:, 0, 0:3, 0:3] = torch.rand(5, 3, 3, generator=torch.Generator().manual_seed(1))  # some ReLU cuts
    t = torch.tensor([1, 0, 1, 1, 0])
    want = _smoothgrad_oracle(model, x, t, 3, 4, 0.15)
    assert want.std() > 0
    options = {"method": "smoothgrad", "seed": 3, "nt_samples": 4}
    for batch_size in (1, 2, 5):
        got = explain(model, x, t, batch_size=batch_size, **options).attribution
        assert torch.allclose(got, want, atol=1e-6), batch_size
    got = explain(model, x, t, nt_samples_batch_size=3, **options).attribution  # 3 + 1 noisy copies
    assert torch.allclose(got, want, atol=1e-6)
    threads, workers = torch.get_num_threads(), set_workers(2)
    torch.set_num_threads(1)
    try:
        got = explain(model, x, t, batch_size=2, **options).attribution
    finally:
        torch.set_num_threads(threads)
        set_workers(workers)
    assert torch.allclose(got, want, atol=1e-6)
    linear = region_model()
    e = explain(linear, x, target=1, method="smoothgrad")
    assert torch.allclose(e.attribution, linear[1].weight[1].abs().view(1, 1, 28, 28).expand(5, 1, 28, 28))


@pytest.mark.parametrize("method", ["saliency", "inputxgrad", "ig", "smoothgrad", "occlusion"])
def test_pieced_methods_run_side_by_side_on_a_busy_machine_and_agree(method):
    """With one intra-op thread and two workers (kangae's choice beside a busy program), the
    methods registered with ``pieces`` explain their chunks on two Python threads at once,
    and each image's map is the one a single sequential pass gives."""
    import threading

    from kangae.probes.registry import get_explainer
    from kangae.utils.threads import set_workers

    assert get_explainer(method).pieces
    model, x = _conv_region_model(), region_images(6)
    x[:, 0, 0:3, 0:3] = torch.rand(6, 3, 3, generator=torch.Generator().manual_seed(2))
    want = explain(model, x, method=method).attribution
    seen: set[str] = set()
    handle = model.register_forward_hook(lambda *_: seen.add(threading.current_thread().name))
    threads, workers = torch.get_num_threads(), set_workers(2)
    torch.set_num_threads(1)
    try:
        got = explain(model, x, method=method, batch_size=2).attribution
    finally:
        torch.set_num_threads(threads)
        set_workers(workers)
        handle.remove()
    assert any(name.startswith("kangae-piece") for name in seen), seen
    assert torch.allclose(got, want, atol=1e-5), float((got - want).abs().max())
    assert not get_explainer("gradcam").pieces and not get_explainer("deeplift").pieces  # they hook the model


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 30, 17)])
def test_occlusion_equals_captums_occlusion(shape):
    """kangae scores the occluded images through its scoring copy in full chunks; the map is
    Captum's (zero baseline, a window over all channels, the last window cut at the edge)."""
    import captum.attr as ca

    torch.manual_seed(0)
    c, h, w = shape
    model = nn.Sequential(nn.Conv2d(c, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(8 * (h // 2) * (w // 2), 5)).eval()
    with torch.no_grad():
        model[1].running_mean.normal_(0, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    x = torch.rand(6, c, h, w, generator=torch.Generator().manual_seed(1))
    for window, stride in ((None, None), (5, 3)):
        e = explain(model, x, method="occlusion", window=window, stride=stride)
        size, step = window or max(2, round(min(h, w) / 7)), stride or max(1, round(min(h, w) / 14))
        want = ca.Occlusion(model).attribute(x, target=e.target, sliding_window_shapes=(c, size, size),
                                             strides=(c, step, step), baselines=0.0)
        assert torch.allclose(e.attribution, want.sum(1, keepdim=True), atol=1e-5), (window, stride)
